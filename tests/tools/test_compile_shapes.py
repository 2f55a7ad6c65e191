"""``--input-shape`` in ``compile_model``: symbolic dims become static for native targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import torsh_gen.passes.memplan  # noqa: F401  (registers plan_memory)
from torsh_gen.backends.llvm import lower_graph
from torsh_gen.backends.llvm.targets import load_target
from torsh_gen.errors import GraphError, InputError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ir.types import TensorType
from torsh_gen.passes import pipeline, run_passes
from torsh_gen.tools.compile import bind_input_shapes, compile_model


def model() -> onnx.ModelProto:
    """y = relu(x + b) * 2 reshaped to [batch, 2, 3]: elementwise work and an alias op."""
    b = helper.make_tensor("b", TensorProto.FLOAT, [6], np.linspace(-1, 1, 6, dtype=np.float32))
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [-1, 2, 3])
    nodes = [
        helper.make_node("Add", ["x", "b"], ["t"]),
        helper.make_node("Relu", ["t"], ["r"]),
        helper.make_node("Mul", ["r", "two"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 3])],
        [b, two, shape],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def lowered(specs: list[str] | None):
    graph = load_onnx(model().SerializeToString())
    bind_input_shapes(graph, specs)
    run_passes(graph, pipeline("O3") + ["plan_memory"])
    return graph, lower_graph(graph, load_target("x86_64-linux"))


@pytest.mark.parametrize("specs", [["batch=3"], ["x=3x6"]])
def test_bound_onnx_model_lowers_with_static_shapes(specs: list[str]) -> None:
    from torsh_gen.backends.llvm.jit import JitProgram

    graph, program = lowered(specs)
    assert all(
        isinstance(v.type, TensorType) and v.type.is_static
        for _, n in graph.walk()
        for v in n.outputs
    )
    assert [(s.name, s.shape) for s in program.inputs] == [("x", (3, 6))]
    assert [(s.name, s.shape) for s in program.outputs] == [("y", (3, 2, 3))]
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    want = ort.InferenceSession(
        model().SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    np.testing.assert_allclose(JitProgram(program).run({"x": x})["y"], want, rtol=1e-6, atol=1e-6)


def test_unbound_symbolic_dims_are_refused_with_advice() -> None:
    with pytest.raises(InputError, match=r"tensor 'x' has symbolic shape .*--input-shape"):
        lowered(None)


def test_shapes_from_run_time_values_are_refused_as_such(tmp_path: Path) -> None:
    """A node output sized by a run-time value (Tile's repeats) is not a dim --input-shape
    can bind: the error names the node and says what to change, before any file exists."""
    node = helper.make_node("Tile", ["x", "reps"], ["y"], name="tile \"n\"")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("reps", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InputError) as err:
        compile_model(m, tmp_path / "pkg", target="x86_64-linux")
    text = str(err.value)
    assert "output of Tile node 'tile \"n\"'" in text and "depends on run-time values" in text
    assert "--input-shape" not in text and "\n" not in text
    assert not (tmp_path / "pkg").exists()


def test_bad_bindings_are_one_line_errors() -> None:
    graph = load_onnx(model().SerializeToString())
    with pytest.raises(InputError, match=r"axis 1 of input 'x' is fixed at 6 by the model"):
        bind_input_shapes(graph, ["x=3x5"])
    with pytest.raises(GraphError, match="rank 2, --input-shape gave 3 dims"):
        bind_input_shapes(graph, ["x=3x6x1"])
    with pytest.raises(GraphError, match="expected NAME=1x3x224x224"):
        bind_input_shapes(graph, ["batch"])


def test_cpu_target_binds_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(model(), path)
    compile_model(path, tmp_path / "dyn", target="cpu", level="O1", precompile=False)
    compile_model(
        path,
        tmp_path / "static",
        target="cpu",
        level="O1",
        precompile=False,
        input_shapes=["batch=3"],
    )
    dyn = json.loads((tmp_path / "dyn" / "manifest.json").read_text())
    static = json.loads((tmp_path / "static" / "manifest.json").read_text())
    assert dyn["inputs"][0]["shape"] == ["batch", 6] and dyn["outputs"][0]["shape"] == [
        "batch",
        2,
        3,
    ]
    assert static["inputs"][0]["shape"] == [3, 6] and static["outputs"][0]["shape"] == [3, 2, 3]
