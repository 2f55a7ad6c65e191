"""RNN, GRU and LSTM through the recurrent lowering, against onnxruntime (JIT and the
kernel-IR interpreter), over directions, layouts, optional inputs and outputs and
attributes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.backends.native.helpers import (
    interpret_program,
    lower_model,
    make_model,
    ort_run,
    rand,
)
from torsh_gen.backends.kernel.printer import format_kernel
from torsh_gen.backends.kernel.program import Program
from torsh_gen.backends.llvm.jit import JitProgram
from torsh_gen.errors import UnsupportedOpError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ops.execute import run_graph

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


@dataclass
class Case:
    """One recurrent node and its feeds; weights are initializers unless ``runtime``."""

    op: str
    direction: str = "forward"
    layout: int = 0
    seq: int = 3
    batch: int = 3
    inp: int = 3
    hidden: int = 5
    bias: bool = True
    lens: list[int] | None = None
    init: bool = False
    peep: bool = False
    runtime: bool = False
    outputs: tuple[str, ...] = ("Y", "Y_h", "Y_c")
    attrs: dict = field(default_factory=dict)
    dtype: int = TP.FLOAT
    x_scale: float = 1.0

    @property
    def dirs(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    def build(self):
        """The model and its feeds. The data is drawn in layout 0 and transposed for layout
        1, so both layouts of one case compute the same values."""
        npdt = np.float64 if self.dtype == TP.DOUBLE else np.float32
        g, n, d = GATES[self.op], self.hidden, self.dirs
        tensors = {
            "W": rand(d, g * n, self.inp, seed=2, dtype=npdt) * 0.7,
            "R": rand(d, g * n, n, seed=3, dtype=npdt) * 0.7,
        }
        names = ["X", "W", "R"]
        if self.bias:
            tensors["B"] = rand(d, 2 * g * n, seed=4, dtype=npdt) * 0.5
        names.append("B" if self.bias else "")
        names.append("L" if self.lens is not None else "")
        if self.init:
            tensors["H0"] = self._swap(rand(d, self.batch, n, seed=5, dtype=npdt))
            if self.op == "LSTM":
                tensors["C0"] = self._swap(rand(d, self.batch, n, seed=6, dtype=npdt))
        names.append("H0" if self.init else "")
        if self.op == "LSTM":
            names.append("C0" if self.init else "")
            if self.peep:
                tensors["P"] = rand(d, 3 * n, seed=7, dtype=npdt)
            names.append("P" if self.peep else "")
        while names and not names[-1]:
            names.pop()
        x = self._swap(rand(self.seq, self.batch, self.inp, seed=1, dtype=npdt) * self.x_scale)
        feeds = {"X": x}
        inputs = [helper.make_tensor_value_info("X", self.dtype, x.shape)]
        if self.lens is not None:
            feeds["L"] = np.array(self.lens, np.int32)
            inputs.append(helper.make_tensor_value_info("L", TP.INT32, (self.batch,)))
        inits = []
        for k, v in tensors.items():
            if self.runtime:
                inputs.append(helper.make_tensor_value_info(k, self.dtype, v.shape))
                feeds[k] = v
            else:
                inits.append(numpy_helper.from_array(v, k))
        state = (self.batch, d, n) if self.layout else (d, self.batch, n)
        yshape = (self.batch, self.seq, d, n) if self.layout else (self.seq, d, self.batch, n)
        shapes = {"Y": yshape, "Y_h": state, "Y_c": state}
        outs = [
            o if o in self.outputs else ""
            for o in ("Y", "Y_h", "Y_c")[: 3 if self.op == "LSTM" else 2]
        ]
        while outs and not outs[-1]:
            outs.pop()
        node = helper.make_node(
            self.op, names, outs, hidden_size=n, direction=self.direction, **self.attrs,
            **({"layout": self.layout} if self.layout else {}),
        )  # fmt: skip
        graph_outs = [helper.make_tensor_value_info(o, self.dtype, shapes[o]) for o in outs if o]
        return make_model([node], inputs, graph_outs, inits), feeds

    def _swap(self, a: np.ndarray) -> np.ndarray:
        """A layout-0 tensor (X, or a state) in this case's layout."""
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)) if self.layout else a

    def expected(self) -> list[np.ndarray]:
        """onnxruntime's outputs; it lacks layout 1, so for that layout the same case in
        layout 0, its outputs transposed."""
        if not self.layout:
            return ort_run(*self.build())
        outs = ort_run(*replace(self, layout=0).build())
        return [
            np.transpose(o, (2, 0, 1, 3)) if o.ndim == 4 else np.swapaxes(o, 0, 1) for o in outs
        ]


def check(case: Case, lanes: int = 4, interpret: bool = True) -> Program:
    """Lower, JIT-run (and interpret) ``case`` and compare every output with
    ``case.expected()``."""
    model, feeds = case.build()
    program = lower_model(model, lanes=lanes)
    expected = case.expected()
    runs = {"JIT": JitProgram(program).run(feeds)}
    if interpret:
        got = interpret_program(program, feeds)
        runs["interpreted"] = {s.name: o for s, o in zip(program.outputs, got)}
    for how, got in runs.items():
        for spec, exp in zip(program.outputs, expected):
            np.testing.assert_allclose(
                got[spec.name], exp, rtol=1e-4, atol=1e-4, err_msg=f"{how} {spec.name}"
            )
    return program


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_directions_and_layouts(op: str, direction: str, layout: int) -> None:
    """Bias, initial states and varying sequence lengths (one full)."""
    check(Case(op, direction, layout, seq=4, lens=[4, 1, 2], init=True))


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_zero_length_sequences(op: str, direction: str, layout: int) -> None:
    """Entries of length 0 among others: their Y rows zero, Y_h (and Y_c) the zero
    initial state."""
    check(Case(op, direction, layout, seq=3, lens=[0, 3, 0, 2], batch=4, peep=op == "LSTM"))


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_zero_length_keeps_initial_state(op: str) -> None:
    """With an initial state, a length-0 entry's Y_h / Y_c is that state, as in the
    reference kernels (``ops/rnn.py``); onnxruntime writes zeros there instead, so the
    oracle here is the reference executor."""
    case = Case(op, "bidirectional", seq=3, lens=[2, 0, 3], init=True)
    model, feeds = case.build()
    expected = run_graph(load_onnx(model.SerializeToString()), feeds)
    got = JitProgram(lower_model(model, lanes=4)).run(feeds)
    names = ("Y", "Y_h", "Y_c")[: len(expected)]
    for name, exp in zip(names, expected):
        np.testing.assert_allclose(got[name], exp, rtol=1e-4, atol=1e-4, err_msg=name)
    h0 = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "H0")
    np.testing.assert_array_equal(got["Y_h"][:, 1], h0[:, 1])


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_defaults_without_optional_inputs(op: str, direction: str) -> None:
    """No B, no sequence_lens, zero initial state; the JIT with 8 lanes and a wide layer
    (the vector runs of 4, 2 and 1 registers plus a scalar rest)."""
    check(
        Case(op, direction, seq=5, batch=2, inp=7, hidden=13, bias=False), lanes=8, interpret=False
    )


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("layout", [0, 1])
def test_runtime_weights(op: str, layout: int) -> None:
    """W, R, B, P and the initial states given at run time: R is transposed and W packed
    into scratch inside the kernel."""
    check(Case(op, "bidirectional", layout, seq=3, batch=7, lens=[3, 1, 2, 3, 1, 3, 2], init=True,
               runtime=True, peep=op == "LSTM"))  # fmt: skip


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_gru_linear_before_reset(lbr: int, direction: str) -> None:
    check(Case("GRU", direction, lens=[3, 2, 1], init=True, attrs={"linear_before_reset": lbr}))


@pytest.mark.parametrize("input_forget", [0, 1])
@pytest.mark.parametrize("layout", [0, 1])
def test_lstm_peepholes(input_forget: int, layout: int) -> None:
    check(Case("LSTM", "bidirectional", layout, lens=[1, 3, 2], init=True, peep=True,
               attrs={"input_forget": input_forget}))  # fmt: skip


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_clip(op: str) -> None:
    """Clipping bounds every activation's input (inputs large enough to reach it)."""
    check(Case(op, "bidirectional", init=True, peep=op == "LSTM", x_scale=4.0, attrs={"clip": 0.4}))


ACTIVATIONS = [
    ("Relu", None, None), ("Tanh", None, None), ("Sigmoid", None, None), ("Affine", 0.6, -0.2),
    ("LeakyRelu", 0.3, None), ("ThresholdedRelu", 0.2, None), ("ScaledTanh", 1.5, 0.7),
    ("HardSigmoid", 0.3, 0.4), ("Elu", 0.8, None), ("Softsign", None, None),
    ("Softplus", None, None),
]  # fmt: skip


@pytest.mark.parametrize("name,alpha,beta", ACTIVATIONS)
def test_rnn_activations(name: str, alpha: float | None, beta: float | None) -> None:
    """Every activation of the spec, as the RNN's f on both directions."""
    attrs: dict = {"activations": [name, name]}
    if alpha is not None:
        attrs["activation_alpha"] = [alpha, alpha]
    if beta is not None:
        attrs["activation_beta"] = [beta, beta]
    check(Case("RNN", "bidirectional", init=True, attrs=attrs))


def test_gru_lstm_mixed_activations() -> None:
    """Alpha and beta values consumed in order by the functions that take them, different
    functions per direction."""
    gru = {"activations": ["HardSigmoid", "Softsign", "Sigmoid", "ScaledTanh"],
           "activation_alpha": [0.25, 1.2], "activation_beta": [0.45, 0.8]}  # fmt: skip
    check(Case("GRU", "bidirectional", init=True, attrs=gru))
    lstm = {"activations": ["Sigmoid", "Elu", "LeakyRelu", "HardSigmoid", "Tanh", "Affine"],
            "activation_alpha": [0.9, 0.1, 0.3, 0.5], "activation_beta": [0.5, 0.1]}  # fmt: skip
    check(Case("LSTM", "bidirectional", lens=[2, 3, 1], attrs=lstm))


@pytest.mark.parametrize(
    "op,outputs",
    [("RNN", ("Y_h",)), ("RNN", ("Y",)), ("GRU", ("Y_h",)), ("LSTM", ("Y_c",)),
     ("LSTM", ("Y", "Y_c")), ("LSTM", ("Y_h",))],
)  # fmt: skip
def test_optional_outputs(op: str, outputs: tuple[str, ...]) -> None:
    """Absent outputs (an empty name before a present one, or left off the end)."""
    program = check(Case(op, "reverse", 1, lens=[2, 3, 1], init=True, outputs=outputs))
    assert [s.name for s in program.outputs] == list(outputs)


def test_single_step_and_batch_of_one() -> None:
    check(Case("LSTM", "bidirectional", seq=1, batch=1, inp=2, hidden=2))


@pytest.mark.parametrize(
    "case",
    [
        Case("LSTM", "bidirectional", seq=6, batch=8, inp=16, hidden=24,
             lens=[6, 5, 4, 3, 2, 1, 1, 6], init=True, peep=True),
        Case("GRU", "reverse", 1, seq=8, batch=3, inp=16, hidden=24, lens=[8, 3, 5], init=True),
    ],
    ids=["blocks-of-4", "split-for-threads"],
)  # fmt: skip
def test_parallel_chains(case: Case) -> None:
    """Enough work that the loop over (direction, block of batch entries) chains is a
    parallel one; a batch of 3 in one direction is split into two blocks for it."""
    program = check(case, lanes=8, interpret=False)
    text = "".join(format_kernel(k, "_") for k in program.kernels.values())
    assert " parallel {" in text


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_float64(op: str) -> None:
    """float64 through the same code (onnxruntime lacks it: onnx's reference evaluator)."""
    case = Case(op, "bidirectional", init=True, dtype=TP.DOUBLE, outputs=("Y", "Y_h"))
    model, feeds = case.build()
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = JitProgram(lower_model(model, lanes=4)).run(feeds)
    for name, exp in zip(("Y", "Y_h"), expected):
        assert got[name].dtype == np.float64
        np.testing.assert_allclose(got[name], exp, rtol=1e-4, atol=1e-5)


def test_unknown_activation_is_declined() -> None:
    model, _ = Case("RNN", attrs={"activations": ["Gelu"]}).build()
    with pytest.raises(UnsupportedOpError, match="unsupported recurrent activation 'Gelu'"):
        lower_model(model)
