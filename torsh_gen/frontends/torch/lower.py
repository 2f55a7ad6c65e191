"""ExportedProgram → Graph: walk the FX graph once and lower each ATen op with the table.

Parameters, buffers and lifted constants become initializers named by their state-dict
keys; user inputs become graph inputs whose symbolic dims carry the user's ``Dim`` names.
Every op without a lowering is collected first, so one error lists them all, each with
the line of Python that produced it.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
from torch import fx

from torsh_gen.errors import UnsupportedOpError
from torsh_gen.frontends.torch import (  # noqa: F401  (each module registers its lowerings)
    ops_elementwise,
    ops_index,
    ops_nn,
    ops_reduce,
    ops_shape,
)
from torsh_gen.frontends.torch.context import Lowering, Unsupported, op_name, source_location
from torsh_gen.frontends.torch.table import IGNORED, find
from torsh_gen.ir.graph import Graph, ModelInfo, Value

#: The ONNX opset of imported graphs (GroupNormalization's per-channel form needs 21).
OPSET = 21


def _tensor_array(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.contiguous().numpy().copy()


def lower_program(ep: Any, symbols: dict[str, str] | None = None, source: str = "") -> Graph:
    """The IR Graph of a (decomposed) ``torch.export.ExportedProgram``."""
    graph = Graph(name="main")
    ctx = Lowering(graph, symbols or {})
    sig = ep.graph_signature
    specs = {s.arg.name: s for s in sig.input_specs if hasattr(s.arg, "name")}
    problems: list[str] = []
    failed: set[fx.Node] = set()
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            _placeholder(ctx, ep, node, specs.get(node.name))
        elif node.op == "call_function":
            if any(a in failed for a in node.all_input_nodes):
                failed.add(node)
                continue
            problem = _call(ctx, node)
            if problem:
                problems.append(problem)
                failed.add(node)
        elif node.op == "output":
            if not problems:
                _outputs(ctx, ep, node)
        else:
            problems.append(f"{node.op} node '{node.name}'{_where(node)}")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise UnsupportedOpError(
            f"{source + ': ' if source else ''}cannot import {len(unique)} PyTorch op"
            f"{'s' if len(unique) > 1 else ''}: " + "; ".join(unique)
        )
    graph.info = ModelInfo(
        ir_version=10,
        opset_imports={"": OPSET},
        producer_name="torsh-gen",
        producer_version=f"torch {torch.__version__}",
    )
    graph.meta["conversion"] = {
        "source": source or "torch.export",
        "mapped": dict(sorted(ctx.mapped.items())),
        "compositions": dict(sorted(ctx.compositions.items())),
        "precision": [],
    }
    return graph


def _where(node: fx.Node) -> str:
    loc = source_location(node)
    return f" at {loc}" if loc else ""


def _placeholder(ctx: Lowering, ep: Any, node: fx.Node, spec: Any) -> None:
    kind = spec.kind.name if spec is not None else "USER_INPUT"
    val = node.meta.get("val")
    if kind == "USER_INPUT":
        if not isinstance(val, torch.Tensor):
            if val is None or isinstance(val, int | float | bool | str):
                ctx.env[node] = val  # a constant input baked in at export
                return
            raise UnsupportedOpError(
                f"input '{node.name}' is not a tensor ({type(val).__name__}); pass tensors only"
            )
        v = Value(ctx.fresh(node.name), ctx.tensor_type(val))
        ctx.graph.inputs.append(v)
        ctx.env[node] = v
        return
    if kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
        target = spec.target
        tensor = ep.state_dict.get(target) if target in ep.state_dict else ep.constants.get(target)
        if tensor is None:
            raise UnsupportedOpError(f"the exported program has no data for '{target}'")
        if not isinstance(tensor, torch.Tensor):
            raise UnsupportedOpError(
                f"'{target}' is a {type(tensor).__name__}, not a tensor "
                "(script objects are not supported)"
            )
        v = ctx.graph.add_initializer(ctx.fresh(target), _tensor_array(tensor))
        ctx.env[node] = v
        if "." in target:
            ctx.param_module[node] = target.rsplit(".", 1)[0]
        return
    raise UnsupportedOpError(f"input '{node.name}' of kind {kind} is not supported")


def _call(ctx: Lowering, node: fx.Node) -> str:
    """Lower one call; an error description when it cannot be lowered, else ''."""
    name = op_name(node)
    if node.target is operator.getitem:
        src = ctx.env.get(node.args[0])
        item = src[node.args[1]] if isinstance(src, list | tuple) else None
        if item is None:
            return f"output {node.args[1]} of {node.args[0]}{_where(node)}"
        ctx.env[node] = item
        _set_type(ctx, item, node.meta.get("val"))
        return ""
    if name in IGNORED:
        return ""
    fn = find(name)
    if fn is None:
        return f"{name}{_where(node)}{_module(ctx, node)}"
    ctx.begin(node)
    try:
        result = fn(ctx, node)
    except Unsupported as e:
        ctx.node = None
        return f"{name} ({e}){_where(node)}{_module(ctx, node)}"
    ctx.finish(node, name.rsplit(".", 1)[0] if name.startswith("aten.") else name)
    ctx.env[node] = result
    val = node.meta.get("val")
    if isinstance(result, list):
        for i, r in enumerate(result):
            if r is not None and isinstance(val, list | tuple) and i < len(val):
                _set_type(ctx, r, val[i])
    else:
        _set_type(ctx, result, val)
    return ""


def _module(ctx: Lowering, node: fx.Node) -> str:
    layer = ctx.layer(node)
    return f" (in {layer})" if layer else ""


def _set_type(ctx: Lowering, v: Any, val: Any) -> None:
    if isinstance(v, Value) and v.type is None and v.const is None:
        v.type = ctx.tensor_type(val)


def _outputs(ctx: Lowering, ep: Any, node: fx.Node) -> None:
    specs = ep.graph_signature.output_specs
    args = node.args[0] if isinstance(node.args[0], list | tuple) else [node.args[0]]
    user = [a for a, s in zip(args, specs) if s.kind.name == "USER_OUTPUT"]
    seen: set[int] = set()
    taken = {id(v) for v in ctx.graph.inputs} | {id(v) for v in ctx.graph.initializers}
    for i, arg in enumerate(user):
        if not isinstance(arg, fx.Node):
            raise UnsupportedOpError(
                f"output {i} is a constant ({arg!r}), not a tensor; return tensors only"
            )
        ctx.node = None
        v = ctx.env[arg] if arg in ctx.env else None
        if not isinstance(v, Value):
            raise UnsupportedOpError(f"output {i} ('{arg.name}') is not a tensor")
        if id(v) in seen or id(v) in taken:
            ctx.node = arg
            v = ctx.emit("Identity", [v])
            ctx.node = None
            _set_type(ctx, v, arg.meta.get("val"))
        seen.add(id(v))
        name = "output" if len(user) == 1 else f"output_{i}"
        if ctx.claim(name):
            v.name = name
        ctx.graph.outputs.append(v)
