"""Compare an imported graph with its PyTorch module, in our executor and in onnxruntime."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from torsh_gen.frontends.onnx import to_onnx
from torsh_gen.frontends.torch import from_torch
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.verify import verify
from torsh_gen.ops.execute import run_graph

TOL = 1e-5


def torch_outputs(module: torch.nn.Module, args: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """The module's outputs as numpy arrays (a tuple output flattened)."""
    with torch.no_grad():
        out = module(*args)
    outs = out if isinstance(out, tuple | list) else (out,)
    return [o.detach().numpy() for o in outs]


def feeds(graph: Graph, args: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """Graph-input feeds from positional tensors."""
    return {v.name: a.numpy() for v, a in zip(graph.inputs, args)}


def assert_close(got: Sequence[np.ndarray], want: Sequence[np.ndarray], tol: float = TOL) -> None:
    """Every output equal within ``tol`` (absolute and relative), same shape and dtype kind."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape, (g.shape, w.shape)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def check_module(
    module: torch.nn.Module,
    make_args: Callable[[int], tuple[torch.Tensor, ...]],
    dynamic_shapes: object = None,
    sizes: Sequence[int] = (2, 3),
    onnxrt: bool = True,
    tol: float = TOL,
) -> Graph:
    """Import ``module`` at sizes[0]; compare with torch at every size, in ours and onnxruntime."""
    graph = from_torch(module, make_args(sizes[0]), dynamic_shapes)
    verify(graph)
    session = None
    if onnxrt:
        proto = to_onnx(graph)
        onnx.checker.check_model(proto, full_check=True)
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    for size in sizes if dynamic_shapes is not None else sizes[:1]:
        args = make_args(size)
        want = torch_outputs(module, args)
        assert_close(run_graph(graph, feeds(graph, args)), want, tol)
        if session is not None:
            assert_close(session.run(None, feeds(graph, args)), want, tol)
    return graph
