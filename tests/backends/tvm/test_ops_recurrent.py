"""RNN, GRU and LSTM in the TVM backend against onnxruntime: directions, sequence_lens,
initial states, clip, activations with alpha/beta, GRU's linear_before_reset, LSTM's
peepholes and input_forget, layout 1 and omitted optional outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.backends.tvm.helpers import check_tvm

#: Slow (about 75 s; the default suite's TVM conformance cross-section runs an LSTM): `make test-slow`.
pytestmark = pytest.mark.slow

pytest.importorskip("tvm")

F = TensorProto.FLOAT
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _model(
    op: str,
    *,
    seq: int = 3,
    batch: int = 3,
    inp: int = 5,
    hidden: int = 4,
    direction: str = "forward",
    layout: int = 0,
    lens: bool = False,
    init_h: bool = False,
    init_c: bool = False,
    peep: bool = False,
    outputs: tuple[str, ...] = ("Y", "Y_h"),
    **attrs: Any,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node recurrent model with random weights as initializers and the sequence
    (and sequence_lens, initial states) as graph inputs; returns it with its feeds."""
    rng = np.random.default_rng(hash((op, direction, layout, lens)) % 2**32)
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    x_shape = [batch, seq, inp] if layout else [seq, batch, inp]
    h_shape = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    feeds = {"X": rng.standard_normal(x_shape).astype(np.float32)}
    inits = [
        helper.make_tensor(
            "W", F, [dirs, g * hidden, inp], rng.standard_normal(dirs * g * hidden * inp) * 0.5
        ),
        helper.make_tensor(
            "R",
            F,
            [dirs, g * hidden, hidden],
            rng.standard_normal(dirs * g * hidden * hidden) * 0.5,
        ),
        helper.make_tensor(
            "B", F, [dirs, 2 * g * hidden], rng.standard_normal(dirs * 2 * g * hidden) * 0.5
        ),
    ]
    names = ["X", "W", "R", "B", "", "", ""]
    graph_inputs = [helper.make_tensor_value_info("X", F, x_shape)]
    if lens:
        names[4] = "L"
        feeds["L"] = rng.integers(0, seq + 1, size=batch).astype(np.int32)
        feeds["L"][0] = seq
        feeds["L"][-1] = max(1, int(feeds["L"][-1]))
        graph_inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, [batch]))
    for k, (flag, name) in enumerate(((init_h, "H0"), (init_c, "C0")), start=5):
        if flag:
            names[k] = name
            feeds[name] = rng.standard_normal(h_shape).astype(np.float32)
            graph_inputs.append(helper.make_tensor_value_info(name, F, h_shape))
    if peep:
        names.append("P")
        inits.append(
            helper.make_tensor("P", F, [dirs, 3 * hidden], rng.standard_normal(dirs * 3 * hidden))
        )
    while names and not names[-1]:
        names.pop()
    y_shape = [batch, seq, dirs, hidden] if layout else [seq, dirs, batch, hidden]
    shapes = {"Y": y_shape, "Y_h": h_shape, "Y_c": h_shape}
    out_names = [n if n in outputs else "" for n in ("Y", "Y_h", "Y_c")[: 3 if op == "LSTM" else 2]]
    while not out_names[-1]:
        out_names.pop()
    node = helper.make_node(
        op, names, out_names, hidden_size=hidden, direction=direction, layout=layout, **attrs
    )
    graph = helper.make_graph(
        [node],
        op,
        graph_inputs,
        [helper.make_tensor_value_info(n, F, shapes[n]) for n in out_names if n],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), feeds


@pytest.mark.parametrize(
    ("op", "direction"),
    [("RNN", "bidirectional"), ("GRU", "bidirectional"), ("LSTM", "bidirectional")],
)
def test_directions_with_lengths_and_initial_state(op: str, direction: str) -> None:
    """Every direction with run-time sequence lengths (some shorter than the sequence) and
    initial states: masking and the reverse walk must match onnxruntime."""
    outs = ("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h")
    model, feeds = _model(
        op, direction=direction, lens=True, init_h=True, init_c=op == "LSTM", outputs=outs
    )
    check_tvm(model, feeds)


def test_layout_1() -> None:
    """Batch-major layout (onnxruntime lacks it: onnx's reference evaluator judges)."""
    model, feeds = _model(
        "LSTM",
        direction="bidirectional",
        layout=1,
        init_h=True,
        init_c=True,
        outputs=("Y", "Y_h", "Y_c"),
    )
    check_tvm(model, feeds, oracle="reference")


def test_gru_linear_before_reset_and_clip() -> None:
    model, feeds = _model("GRU", direction="bidirectional", linear_before_reset=1, clip=0.5)
    check_tvm(model, feeds)


def test_lstm_peepholes_input_forget_and_only_y_c() -> None:
    """Peepholes, coupled input/forget gates, and only the cell state asked for."""
    model, feeds = _model("LSTM", peep=True, input_forget=1, init_c=True, outputs=("Y_c",))
    check_tvm(model, feeds)


def test_activations_with_alpha_beta() -> None:
    """Alphas and betas are consumed in activation order (HardSigmoid takes both, LeakyRelu
    one, Tanh none); gate inputs are clipped before their activations."""
    model, feeds = _model(
        "LSTM",
        activations=["HardSigmoid", "LeakyRelu", "Tanh"],
        activation_alpha=[0.3, 0.2],
        activation_beta=[0.4],
        clip=0.7,
    )
    check_tvm(model, feeds)


def test_rnn_reverse_other_activations_clip() -> None:
    model, feeds = _model(
        "RNN",
        direction="reverse",
        activations=["Softsign"],
        init_h=True,
        clip=0.7,
        outputs=("Y_h",),
    )
    check_tvm(model, feeds)
