"""Optimizer ops of ai.onnx.preview.training (Adagrad, Adam, Momentum) through the JIT and
the interpreter. onnxruntime has no kernels for them, so onnx's ReferenceEvaluator is the
oracle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from tests.backends.native.helpers import interpret_program, lower_model, rand
from torsh_gen.errors import UnsupportedOpError

DOMAIN = "ai.onnx.preview.training"


def check_reference(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    *,
    tol: float = 1e-5,
    interpret: bool = False,
    level: str = "O3",
):
    """Lower, JIT-run (and interpret) and compare every output with onnx's reference
    evaluator (for ops onnxruntime lacks, or where it departs from the spec)."""
    from torsh_gen.backends.llvm.jit import JitProgram

    onnx.checker.check_model(model)
    program = lower_model(model, level=level)
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = JitProgram(program).run(feeds)
    for spec, exp in zip(program.outputs, expected):
        np.testing.assert_allclose(
            got[spec.name], exp, rtol=tol, atol=tol, err_msg=f"JIT {spec.name}"
        )
    if interpret:
        for spec, out, exp in zip(program.outputs, interpret_program(program, feeds), expected):
            np.testing.assert_allclose(
                out, exp, rtol=tol, atol=tol, err_msg=f"interpreted {spec.name}"
            )
    return program


def optimizer(
    op: str,
    groups: list[str],
    outs: list[str],
    shapes: list[tuple[int, ...]],
    dtype=np.float32,
    t: int | None = None,
    **attrs,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node optimizer model over tensors of ``shapes`` and its seeded feeds
    (``t``: a constant step count instead of a run-time input T)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    state = [f"{g}{i}" for g in groups for i in range(len(shapes))]
    new = [f"{o}{i}_new" for o in outs for i in range(len(shapes))]
    feeds: dict[str, np.ndarray] = {
        "R": np.array(0.1, dtype=np.float32),
        "T": np.array(3, np.int64),
    }
    inputs = [helper.make_tensor_value_info("R", TensorProto.FLOAT, [])]
    inits = []
    if t is None:
        inputs.append(helper.make_tensor_value_info("T", TensorProto.INT64, []))
    else:
        del feeds["T"]
        inits.append(onnx.numpy_helper.from_array(np.array(t, np.int64), "T"))
    for k, name in enumerate(state):
        shape = shapes[k % len(shapes)]
        data = rand(*shape, dtype=dtype, seed=k)
        feeds[name] = np.abs(data) if name.startswith("H") else data
        inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
    outputs = [
        helper.make_tensor_value_info(name, elem, list(shapes[k % len(shapes)]))
        for k, name in enumerate(new)
    ]
    node = helper.make_node(op, ["R", "T", *state], new, domain=DOMAIN, **attrs)
    graph = helper.make_graph([node], "g", inputs, outputs, inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )
    return model, feeds


ADAGRAD = {"decay_factor": 0.1, "epsilon": 1e-5, "norm_coefficient": 0.001}
ADAM = {"alpha": 0.95, "beta": 0.85, "epsilon": 1e-2, "norm_coefficient": 0.001}
MOMENTUM = {"alpha": 0.95, "beta": 0.85, "norm_coefficient": 0.001}


# --------------------------------------------------------------------------- Adagrad
@pytest.mark.parametrize("shapes", [[(3,)], [(1,), (2, 3), (4, 5, 6)]])
def test_adagrad(shapes) -> None:
    model, feeds = optimizer("Adagrad", ["X", "G", "H"], ["X", "H"], shapes, **ADAGRAD)
    check_reference(model, feeds, interpret=True)


def test_adagrad_large_double_and_constant_step() -> None:
    model, feeds = optimizer(
        "Adagrad", ["X", "G", "H"], ["X", "H"], [(64, 300)], np.float64, t=7, **ADAGRAD
    )
    check_reference(model, feeds, tol=1e-12)


# --------------------------------------------------------------------------- Adam
@pytest.mark.parametrize("step", [0, 1, 5, 1000])
def test_adam_bias_correction_at_runtime_step(step: int) -> None:
    model, feeds = optimizer("Adam", ["X", "G", "V", "H"], ["X", "V", "H"], [(2,), (3, 4)], **ADAM)
    feeds["T"] = np.array(step, np.int64)
    check_reference(model, feeds, interpret=step == 5)


def test_adam_post_norm_constant_step_and_large_tensor() -> None:
    model, feeds = optimizer(
        "Adam",
        ["X", "G", "V", "H"],
        ["X", "V", "H"],
        [(5000,)],
        t=12,
        norm_coefficient_post=0.02,
        alpha=0.9,
        beta=0.999,
        epsilon=1e-7,
    )
    check_reference(model, feeds, tol=1e-4)


def test_adam_double() -> None:
    model, feeds = optimizer(
        "Adam", ["X", "G", "V", "H"], ["X", "V", "H"], [(7, 3)], np.float64, **ADAM
    )
    check_reference(model, feeds, tol=1e-12)


# --------------------------------------------------------------------------- Momentum
@pytest.mark.parametrize("mode", ["standard", "nesterov"])
@pytest.mark.parametrize("step", [0, 4])
def test_momentum(mode: str, step: int) -> None:
    model, feeds = optimizer(
        "Momentum", ["X", "G", "V"], ["X", "V"], [(2,), (3, 5)], mode=mode, **MOMENTUM
    )
    feeds["T"] = np.array(step, np.int64)
    check_reference(model, feeds, interpret=step == 4)


def test_momentum_unknown_mode_is_declined() -> None:
    model, _ = optimizer(
        "Momentum", ["X", "G", "V"], ["X", "V"], [(2,)], mode="heavy-ball", **MOMENTUM
    )
    with pytest.raises(UnsupportedOpError, match="Momentum mode 'heavy-ball'"):
        lower_model(model)
