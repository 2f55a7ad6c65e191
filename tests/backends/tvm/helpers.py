"""Shared helpers of the TVM-backend tests: build a model with the TVM backend in memory,
run it in TVM's Relax VM, compare with onnxruntime (or onnx's reference evaluator where
onnxruntime departs from the spec)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from tests.backends.native.helpers import ort_run
from torsh_gen.backends.tvm.session import TvmSession
from torsh_gen.tools.compile import optimized_graph


def tvm_session(model: onnx.ModelProto, level: str = "O3") -> TvmSession:
    """``model`` through our frontend and passes (as ``compile --backend tvm`` does) and
    built by TVM for this CPU."""
    return TvmSession(optimized_graph(model.SerializeToString(), "cpu", level, backend="tvm"), "cpu")


def check_tvm(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    rtol: float = 1e-5,
    atol: float = 1e-5,
    oracle: str = "ort",
    level: str = "O3",
) -> list[np.ndarray]:
    """Run ``model`` through the TVM backend and assert every output equals the oracle's
    (``"ort"`` or ``"reference"``: onnx's ReferenceEvaluator) in shape, dtype and value."""
    got = list(tvm_session(model, level).run(feeds).values())
    if oracle == "reference":
        from onnx.reference import ReferenceEvaluator

        want = ReferenceEvaluator(model).run(None, feeds)
    else:
        want = ort_run(model, feeds)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert g.shape == w.shape, f"output {k}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"output {k}: dtype {g.dtype} != {w.dtype}"
        if w.dtype.kind in "fc":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"output {k}")
    return got


def node_model(
    op: str,
    inputs: list[tuple[str, int, list[Any]]],
    outputs: list[tuple[str, int, list[Any] | None]],
    initializers: list[onnx.TensorProto] | None = None,
    opset: int = 21,
    domain: str = "",
    **attrs: Any,
) -> onnx.ModelProto:
    """A one-node model: ``inputs``/``outputs`` as (name, TensorProto elem type, shape);
    initializers given as TensorProtos also listed among ``inputs`` are constants."""
    init_names = {t.name for t in initializers or []}
    node = helper.make_node(op, [n for n, _, _ in inputs], [n for n, _, _ in outputs], domain=domain or None, **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs if n not in init_names],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializers or [],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)
