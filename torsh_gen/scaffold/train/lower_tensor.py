"""Lowerings of shape and data-movement ops and reductions to tensor methods.

Shapes, axes and indices must be constants (after constant folding) so the generated code
spells them out: ``x.reshape(x.shape[0], -1)`` reads better than a shape computation and
keeps a symbolic batch dimension symbolic.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.ir.graph import Node
from torsh_gen.scaffold.train.lower import Ctx, NotLowerable, literal, lowers
from torsh_gen.scaffold.train.lower_nn import torch_pad, tup

INT64_MAX = 2**63 - 1


def _axes(ctx: Ctx, node: Node, input_index: int, rank: int | None) -> list[int] | None:
    """Axes from the attribute (older opsets) or a constant input, normalized when rank is known."""
    axes = node.attr("axes")
    if axes is None and len(node.inputs) > input_index and node.inputs[input_index] is not None:
        axes = ctx.ints(node.inputs[input_index], "axes")
    if axes is None:
        return None
    axes = [int(a) for a in axes]
    if rank is not None:
        axes = [a + rank if a < 0 else a for a in axes]
    elif any(a < 0 for a in axes):
        raise NotLowerable("negative axes need an input of known rank")
    return axes


@lowers("Reshape")
def reshape(ctx: Ctx, node: Node) -> None:
    """Reshape by a constant shape; ``0`` entries copy the input's dim."""
    x = ctx.var(node.inputs[0])
    dims = ctx.shape_arg(node.inputs[1], "the shape")
    allowzero = int(node.attr("allowzero", 0))
    parts = [f"{x}.shape[{i}]" if d == "0" and not allowzero else d for i, d in enumerate(dims)]
    ctx.emit(f"{x}.reshape({', '.join(parts)}{',' if len(parts) == 1 else ''})")


@lowers("Flatten")
def flatten(ctx: Ctx, node: Node) -> None:
    """Flatten(axis) → a 2-d view [prod(dims[:axis]), prod(dims[axis:])]."""
    rank = ctx.rank(node.inputs[0])
    axis = int(node.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    x = ctx.var(node.inputs[0])
    if axis == 0:
        ctx.emit(f"{x}.reshape(1, -1)")
    elif axis == 1:
        ctx.emit(f"torch.flatten({x}, 1)")
    elif axis == rank:
        ctx.emit(f"{x}.reshape(-1, 1)")
    else:
        ctx.emit(f"torch.flatten(torch.flatten({x}, 0, {axis - 1}), 1)")


@lowers("Transpose")
def transpose(ctx: Ctx, node: Node) -> None:
    """Transpose(perm) → Tensor.permute (default: reverse the dims)."""
    perm = node.attr("perm")
    if perm is None:
        perm = list(reversed(range(ctx.rank(node.inputs[0]))))
    ctx.emit(f"{ctx.var(node.inputs[0])}.permute({', '.join(str(int(p)) for p in perm)})")


@lowers("Concat")
def concat(ctx: Ctx, node: Node) -> None:
    """Concat → torch.cat."""
    xs = ", ".join(ctx.var(v) for v in node.inputs)
    ctx.emit(f"torch.cat([{xs}], dim={int(node.attr('axis'))})")


@lowers("Split")
def split(ctx: Ctx, node: Node) -> None:
    """Split into given sizes (attribute or constant input) or equal parts of a static dim."""
    x_val = node.inputs[0]
    axis = int(node.attr("axis", 0))
    shape = ctx.shape(x_val)
    if axis < 0:
        axis += ctx.rank(x_val)
    sizes = node.attr("split")
    if sizes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        sizes = ctx.ints(node.inputs[1], "split sizes")
    if sizes is None:
        dim = None if shape is None else shape[axis]
        if not isinstance(dim, int):
            raise NotLowerable("equal splits need a static dim")
        n = len(node.outputs)
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    sizes = [int(s) for s in sizes]
    trail = "," if len(node.outputs) == 1 else ""
    ctx.emit(f"torch.split({ctx.var(x_val)}, {sizes}, dim={axis}){'[0]' if trail else ''}")


@lowers("Slice")
def slice_(ctx: Ctx, node: Node) -> None:
    """Slice with constant starts/ends/axes/steps → Python slicing (positive steps)."""
    x_val = node.inputs[0]
    if ctx.graph.opset and ctx.graph.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = node.attr("axes")
        steps = [1] * len(starts)
    else:
        starts = ctx.ints(node.inputs[1], "starts")
        ends = ctx.ints(node.inputs[2], "ends")
        axes = ctx.ints(node.inputs[3], "axes") if len(node.inputs) > 3 and node.inputs[3] is not None else None
        steps = (
            ctx.ints(node.inputs[4], "steps")
            if len(node.inputs) > 4 and node.inputs[4] is not None
            else [1] * len(starts)
        )
    rank = ctx.rank(x_val)
    axes = [int(a) + rank if int(a) < 0 else int(a) for a in (axes if axes is not None else range(len(starts)))]
    if any(s <= 0 for s in steps):
        raise NotLowerable("negative steps are not supported")
    index = [":"] * (max(axes) + 1)
    for a, s, e, st in zip(axes, starts, ends, steps):
        s_txt = "" if s == 0 else str(s)
        e_txt = "" if e >= INT64_MAX // 2 else str(max(e, -INT64_MAX))
        index[a] = f"{s_txt}:{e_txt}" + (f":{st}" if st != 1 else "")
    ctx.emit(f"{ctx.var(x_val)}[{', '.join(index)}]")


@lowers("Squeeze")
def squeeze(ctx: Ctx, node: Node) -> None:
    """Squeeze given axes (or the statically known size-1 dims)."""
    x_val = node.inputs[0]
    shape = ctx.shape(x_val)
    axes = _axes(ctx, node, 1, None if shape is None else len(shape))
    if axes is None:
        if shape is None or not all(isinstance(d, int) for d in shape):
            raise NotLowerable("squeezing all size-1 dims needs a static shape")
        axes = [i for i, d in enumerate(shape) if d == 1]
    ctx.emit(f"{ctx.var(x_val)}.squeeze({tup(axes) if len(axes) != 1 else axes[0]})")


@lowers("Unsqueeze")
def unsqueeze(ctx: Ctx, node: Node) -> None:
    """Unsqueeze: insert size-1 dims at the (output-rank) axes, lowest first."""
    x_val = node.inputs[0]
    rank = ctx.rank(x_val)
    axes = node.attr("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = ctx.ints(node.inputs[1], "axes")
    if axes is None:
        raise NotLowerable("needs axes")
    axes = [int(a) for a in axes]
    out_rank = rank + len(axes)  # negative axes count from the end of the output
    expr = ctx.var(x_val)
    for a in sorted(a + out_rank if a < 0 else a for a in axes):
        expr = f"{expr}.unsqueeze({a})"
    ctx.emit(expr)


@lowers("Expand")
def expand(ctx: Ctx, node: Node) -> None:
    """Expand (two-way broadcast to a constant shape) → torch.broadcast_to."""
    dims = ctx.shape_arg(node.inputs[1], "the shape")
    x = ctx.var(node.inputs[0])
    target = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    ctx.emit(f"torch.broadcast_to({x}, torch.broadcast_shapes({x}.shape, {target}))")


@lowers("Tile")
def tile(ctx: Ctx, node: Node) -> None:
    """Tile by constant repeats → Tensor.repeat."""
    reps = ctx.shape_arg(node.inputs[1], "repeats")
    ctx.emit(f"{ctx.var(node.inputs[0])}.repeat({', '.join(reps)})")


@lowers("Pad")
def pad(ctx: Ctx, node: Node) -> None:
    """Pad with constant pads (constant, reflect or edge mode) → F.pad."""
    mode = node.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if torch_mode is None:
        raise NotLowerable(f"mode {mode!r} is not supported")
    rank = ctx.rank(node.inputs[0])
    if ctx.graph.opset and ctx.graph.opset < 11:
        pads = [int(p) for p in node.attr("pads")]
        value = float(node.attr("value", 0.0))
    else:
        pads = ctx.ints(node.inputs[1], "pads")
        cv = node.inputs[2] if len(node.inputs) > 2 else None
        value_arr = ctx.const(cv) if cv is not None else np.array(0.0)
        if value_arr is None:
            raise NotLowerable("the pad value must be a constant")
        value = np.asarray(value_arr).reshape(-1)[0].item() if np.asarray(value_arr).size else 0.0
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            axes = _axes(ctx, node, 3, rank) or []
            full = [0] * (2 * rank)
            for i, a in enumerate(axes):
                full[a], full[a + rank] = pads[i], pads[i + len(axes)]
            pads = full
    tp = torch_pad(pads)
    while len(tp) > 2 and tp[-2:] == [0, 0]:
        tp = tp[:-2]
    x = ctx.var(node.inputs[0])
    if torch_mode == "constant":
        ctx.emit(f"F.pad({x}, {tp}, value={literal(value)})")
    else:
        ctx.emit(f"F.pad({x}, {tp}, mode={torch_mode!r})")


REDUCE = {
    "ReduceMean": "{x}.mean(dim={d}, keepdim={k})",
    "ReduceSum": "{x}.sum(dim={d}, keepdim={k})",
    "ReduceMax": "{x}.amax(dim={d}, keepdim={k})",
    "ReduceMin": "{x}.amin(dim={d}, keepdim={k})",
    "ReduceL2": "torch.linalg.vector_norm({x}, 2, dim={d}, keepdim={k})",
    "ReduceL1": "torch.linalg.vector_norm({x}, 1, dim={d}, keepdim={k})",
    "ReduceSumSquare": "({x} * {x}).sum(dim={d}, keepdim={k})",
    "ReduceLogSumExp": "torch.logsumexp({x}, dim={d}, keepdim={k})",
}


@lowers(*REDUCE)
def reduce(ctx: Ctx, node: Node) -> None:
    """Reductions over constant axes (all axes when none are given)."""
    rank = ctx.rank(node.inputs[0])
    axes = _axes(ctx, node, 1, rank)
    if axes is None or not axes:
        if axes is not None and int(node.attr("noop_with_empty_axes", 0)):
            ctx.names[id(node.outputs[0])] = ctx.var(node.inputs[0])
            return
        axes = list(range(rank))
    keep = bool(node.attr("keepdims", 1))
    dims = tup(axes) if len(axes) > 1 else str(axes[0])
    ctx.emit(REDUCE[node.op_type].format(x=ctx.var(node.inputs[0]), d=dims, k=keep))


@lowers("ArgMax", "ArgMin")
def argmax(ctx: Ctx, node: Node) -> None:
    """ArgMax/ArgMin (first index) → torch.argmax/argmin."""
    if int(node.attr("select_last_index", 0)):
        raise NotLowerable("select_last_index=1 is not supported")
    fn = "torch.argmax" if node.op_type == "ArgMax" else "torch.argmin"
    axis, keep = int(node.attr("axis", 0)), bool(node.attr("keepdims", 1))
    ctx.emit(f"{fn}({ctx.var(node.inputs[0])}, dim={axis}, keepdim={keep})")


@lowers("Einsum")
def einsum(ctx: Ctx, node: Node) -> None:
    """Einsum → torch.einsum (the equation checked to be plain einsum syntax)."""
    eq = node.attr("equation", b"")
    eq = eq.decode() if isinstance(eq, bytes) else str(eq)
    if not eq or any(not (c.isascii() and (c.isalpha() or c in ",->. ")) for c in eq):
        raise NotLowerable("the equation is not plain einsum syntax")
    ctx.emit(f"torch.einsum({eq!r}, {', '.join(ctx.var(v) for v in node.inputs)})")
