"""Decomposed multi-head attention → one ``nn.MultiheadAttention`` submodule.

Exporters spell batch-first attention as about twenty nodes: Q/K/V projections
(``MatMul`` by a constant weight, optional bias ``Add``), ``Reshape`` to heads and
``Transpose``, ``MatMul`` Q·Kᵀ, a scale (``Div`` by √d or ``Mul`` by 1/√d), an optional
additive mask ``Add``, ``Softmax``, ``MatMul`` with V, ``Transpose`` and ``Reshape`` back,
and the output projection. Lowered node by node that is readable but is not the layer a
user would write, so this matcher finds the whole block and replaces it with the standard
module, whose state dict holds the same weights in torch's layout.

The match is exact or absent: a different scale, projections of other sizes, an output
projection that changes the width, intermediate values used outside the block, shapes that
cannot be resolved, or a mask of another dtype or shape leave every node to the ordinary
lowerings, so the generated module never computes something other than the model does.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from torsh_gen.ir.graph import Node, Value
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.scaffold.common import identifier, py_string
from torsh_gen.scaffold.train.lower import BLOCK_MATCHERS, CODE_NAMES, Ctx, Layer, Stmt, layer_name

#: How far a scale constant may be from 1/√d (relative) and still count as the default scale.
SCALE_RTOL = 1e-6


@dataclass
class Projection:
    """``x @ weight (+ bias)``: the input, the weight in torch layout [out, in], the nodes."""

    x: Value
    weight: np.ndarray
    bias: np.ndarray | None
    nodes: list[Node]
    out: Value


@dataclass
class Block:
    """One matched attention block and everything needed to emit it."""

    q: Projection
    k: Projection
    v: Projection
    o: Projection
    heads: int
    mask: Value | None
    nodes: list[Node]
    #: Shape nodes outside the block reading its values, with their dims from block inputs
    shape_reads: list[tuple[Node, list]]


def _shape(value: Value | None) -> tuple | None:
    t = None if value is None else value.type
    return t.shape if isinstance(t, TensorType) else None


def _dims(value: Value) -> tuple | None:
    """The shape of a block input with each unknown dim named by a token ``(id, axis)``.

    Shape inference loses symbols after a first exported attention block (its reshapes are
    computed), so later blocks see ``[?, ?, E]``; a token stands for "this dim of this value"
    and is equal only to itself, which is all the matcher needs.
    """
    shape = _shape(value)
    if shape is None:
        return None
    return tuple((id(value), i) if d is None else d for i, d in enumerate(shape))


def _known(dims: tuple | None) -> bool:
    return dims is not None and all(d is not None for d in dims)


def _data_users(ctx: Ctx, value: Value) -> list[Node]:
    """Consumers of ``value`` other than ``Shape`` (which reads only its shape)."""
    return [n for n in ctx.users(value) if n.op_type != "Shape"]


def _only_user(ctx: Ctx, value: Value, op_type: str) -> Node | None:
    """The single consumer of ``value`` when it has op ``op_type`` and ``value`` is internal."""
    users = _data_users(ctx, value)
    if len(users) != 1 or users[0].op_type != op_type or value in ctx.graph.outputs:
        return None
    return users[0]


def _producer(value: Value | None, op_type: str) -> Node | None:
    node = None if value is None else value.producer
    if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
        return None
    return node


def _internal(ctx: Ctx, value: Value) -> bool:
    """True when ``value`` feeds exactly one node (besides ``Shape``) and is not a graph output."""
    return len(_data_users(ctx, value)) == 1 and value not in ctx.graph.outputs


def _shape_data(value: Value | None, known: dict[int, tuple] | None = None) -> list | None:
    """The elements of a 1-d shape tensor as dims (ints and symbols), when computed statically.

    Follows what exporters write for ``t.view(b, s, h, d)``: constants and
    ``Shape → Gather/Slice → Unsqueeze → Concat`` over tensors whose symbolic shapes are
    known (from the IR or, for values inside the block, from ``known``).
    """
    known = known or {}
    if value is None:
        return None
    if value.const is not None:
        arr = np.asarray(value.const)
        return (
            [int(v) for v in arr.reshape(-1)] if arr.dtype.kind in "iu" and arr.ndim <= 1 else None
        )
    node = value.producer
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Shape":
        dims = known.get(id(node.inputs[0])) or _shape(node.inputs[0])
        if dims is None or any(d is None for d in dims):
            return None
        rank = len(dims)
        start, end = int(node.attr("start", 0)), node.attr("end")
        end = rank if end is None else int(end)
        return list(dims)[
            slice(start + rank if start < 0 else start, end + rank if end < 0 else end)
        ]
    if op in ("Unsqueeze", "Squeeze", "Cast"):
        return _shape_data(node.inputs[0], known)
    if op == "Concat":
        parts = [_shape_data(v, known) for v in node.inputs]
        return None if any(p is None for p in parts) else [d for p in parts for d in p]
    if op == "Slice":
        data = _shape_data(node.inputs[0], known)
        bounds = [None if v is None else v.const for v in node.inputs[1:]] + [None] * 4
        if data is None or any(b is None for b in bounds[:2]):
            return None
        if any(
            b is not None and [int(x) for x in np.asarray(b).reshape(-1)] != [c]
            for b, c in ((bounds[2], 0), (bounds[3], 1))
        ):
            return None
        start, end = (int(np.asarray(b).reshape(-1)[0]) for b in bounds[:2])
        return data[slice(start, max(min(end, len(data)), -len(data) - 1))]
    if op == "Gather" and int(node.attr("axis", 0)) == 0:
        data, idx = _shape_data(node.inputs[0], known), node.inputs[1]
        if data is None or idx is None or idx.const is None:
            return None
        picks = [int(i) for i in np.asarray(idx.const).reshape(-1)]
        if not all(-len(data) <= i < len(data) for i in picks):
            return None
        return [data[i] for i in picks]
    return None


def _reshaped(
    node: Node, src: tuple | None = None, known: dict[int, tuple] | None = None
) -> tuple | None:
    """The output dims of a ``Reshape`` from its input dims and a statically computed target."""
    out = _shape(node.outputs[0])
    if _known(out):
        return out
    src = src or _shape(node.inputs[0])
    target = _shape_data(node.inputs[1], known)
    if not _known(src) or target is None:
        return None
    dims: list = []
    for i, t in enumerate(target):
        if t == 0 and not int(node.attr("allowzero", 0)):
            if i >= len(src):
                return None
            t = src[i]
        elif isinstance(t, int) and t < -1:
            return None
        dims.append(t)
    if dims.count(-1) > 1:
        return None
    if -1 in dims:
        left = Counter(d for d in src if not isinstance(d, int))
        right = Counter(d for d in dims if not isinstance(d, int))
        n_src = math.prod(d for d in src if isinstance(d, int))
        n_dst = math.prod(d for d in dims if isinstance(d, int) and d != -1)
        if right - left or n_dst == 0 or n_src % n_dst:
            return None
        rest = left - right
        if not rest:
            fill: int | str = n_src // n_dst
        elif sum(rest.values()) == 1 and n_src == n_dst:
            fill = next(iter(rest))
        else:
            return None
        dims[dims.index(-1)] = fill
    return tuple(dims)


def _projection(
    ctx: Ctx, value: Value | None, embed: int | None = None, x_dims: tuple | None = None
) -> Projection | None:
    """``value`` as ``MatMul(x, W)`` or ``Add(MatMul(x, W), b)`` with constant float32 W [E, E]."""
    if value is None:
        return None
    nodes: list[Node] = []
    bias = None
    add = _producer(value, "Add")
    mm_out = value
    if add is not None:
        a, b = add.inputs
        for cand, other in ((a, b), (b, a)):
            if (
                other is not None
                and other.const is not None
                and _producer(cand, "MatMul") is not None
            ):
                bias, mm_out = np.asarray(other.const), cand
                break
        else:
            return None
        if not _internal(ctx, mm_out):
            return None
        nodes.append(add)
    mm = _producer(mm_out, "MatMul")
    if mm is None:
        return None
    x, w_val = mm.inputs
    w = None if w_val is None else w_val.const
    if w is None or x is None or np.asarray(w).dtype != np.float32 or np.asarray(w).ndim != 2:
        return None
    w = np.asarray(w)
    xs = x_dims or _shape(x)
    if xs is None or len(xs) != 3 or xs[2] != w.shape[0] or w.shape[0] != w.shape[1]:
        return None
    if embed is not None and w.shape[0] != embed:
        return None
    if bias is not None:
        if bias.dtype != np.float32 or bias.size != w.shape[1] or bias.ndim > 3:
            return None
        if bias.shape[-1:] != (w.shape[1],):
            return None
        bias = bias.reshape(-1)
    return Projection(x, np.ascontiguousarray(w.T), bias, [mm, *nodes], value)


def _heads(
    ctx: Ctx, value: Value | None, perm: list[int]
) -> tuple[Projection, Node, Node, int] | None:
    """``Transpose(Reshape(proj [B, L, E]) → [B, L, H, D], perm)``: projection and head count."""
    tr = _producer(value, "Transpose")
    if tr is None or not _internal(ctx, value) or not _internal(ctx, tr.inputs[0]):
        return None
    if [int(p) for p in tr.attr("perm", [])] != perm:
        return None
    rs = _producer(tr.inputs[0], "Reshape")
    if rs is None or not _internal(ctx, rs.inputs[0]):
        return None
    proj = _projection(ctx, rs.inputs[0])
    x_dims = None if proj is None else _dims(proj.x)
    if proj is None or x_dims is None:
        return None
    src = (*x_dims[:2], proj.weight.shape[0])
    dst = _reshaped(rs, src, {id(proj.x): x_dims, id(proj.out): src})
    if not _known(dst) or len(dst) != 4:
        return None
    if (
        dst[:2] != src[:2]
        or not all(isinstance(d, int) for d in dst[2:])
        or dst[2] * dst[3] != src[2]
    ):
        return None
    return proj, rs, tr, int(dst[2])


def _key_heads(ctx: Ctx, value: Value | None) -> tuple[Projection, list[Node], int] | None:
    """Kᵀ per head: ``Transpose(0, 2, 3, 1)``, or ``(0, 2, 1, 3)`` then ``(0, 1, 3, 2)``."""
    direct = _heads(ctx, value, [0, 2, 3, 1])
    if direct is not None:
        proj, rs, tr, heads = direct
        return proj, [rs, tr], heads
    tr2 = _producer(value, "Transpose")
    if (
        tr2 is None
        or not _internal(ctx, value)
        or [int(p) for p in tr2.attr("perm", [])] != [0, 1, 3, 2]
        or not _internal(ctx, tr2.inputs[0])
    ):
        return None
    found = _heads(ctx, tr2.inputs[0], [0, 2, 1, 3])
    if found is None:
        return None
    proj, rs, tr, heads = found
    return proj, [rs, tr, tr2], heads


def _scale_ok(node: Node, scores: Value, head_dim: int) -> bool:
    """``Div(scores, √d)`` or ``Mul(scores, 1/√d)`` with a one-element float constant."""
    a, b = node.inputs
    if node.op_type == "Div":
        if a is not scores or b is None or b.const is None:
            return False
        c, want = b.const, math.sqrt(head_dim)
    else:
        other = b if a is scores else a
        if other is None or other.const is None:
            return False
        c, want = other.const, 1.0 / math.sqrt(head_dim)
    c = np.asarray(c)
    if c.size != 1 or c.ndim > 4 or c.dtype.kind != "f":
        return False
    return abs(float(c.reshape(-1)[0]) - want) <= SCALE_RTOL * want


def _softmax_last(node: Node, rank: int, opset: int) -> bool:
    axis = int(node.attr("axis", -1 if opset >= 13 else 1))
    return (axis + rank if axis < 0 else axis) == rank - 1


def match_block(ctx: Ctx, softmax: Node) -> Block | None:
    """The attention block around ``softmax``, or None when any part differs from the pattern."""
    scores = softmax.inputs[0]
    s_shape = _shape(scores)
    if s_shape is None or len(s_shape) != 4 or not _softmax_last(softmax, 4, ctx.graph.opset):
        return None
    if not _internal(ctx, scores):
        return None
    mask = None
    nodes: list[Node] = []
    cur = scores
    add = _producer(cur, "Add")
    if add is not None:
        a, b = add.inputs
        scaled, mask = (a, b) if _producer(a, "Div") or _producer(a, "Mul") else (b, a)
        if scaled is None or mask is None or not _internal(ctx, scaled):
            return None
        mtype = mask.type
        if not isinstance(mtype, TensorType) or mtype.dtype != DType.FLOAT or mtype.shape is None:
            return None
        if len(mtype.shape) > 4:
            return None
        nodes.append(add)
        cur = scaled
    scale = _producer(cur, "Div") or _producer(cur, "Mul")
    if scale is None:
        return None
    raw = next((v for v in scale.inputs if v is not None and v.const is None), None)
    if raw is None or not _internal(ctx, raw):
        return None
    qk = _producer(raw, "MatMul")
    if qk is None:
        return None
    q_found = _heads(ctx, qk.inputs[0], [0, 2, 1, 3])
    k_found = _key_heads(ctx, qk.inputs[1])
    if q_found is None or k_found is None:
        return None
    q, q_rs, q_tr, heads = q_found
    k, k_nodes, k_heads = k_found
    embed = q.weight.shape[0]
    if k_heads != heads or k.weight.shape[0] != embed or not _scale_ok(scale, raw, embed // heads):
        return None
    # forward: probabilities @ V → Transpose → Reshape → output projection
    p = softmax.outputs[0]
    pv = _only_user(ctx, p, "MatMul")
    if pv is None or pv.inputs[0] is not p:
        return None
    v_found = _heads(ctx, pv.inputs[1], [0, 2, 1, 3])
    if v_found is None:
        return None
    v, v_rs, v_tr, v_heads = v_found
    if v_heads != heads or v.weight.shape[0] != embed:
        return None
    back = _only_user(ctx, pv.outputs[0], "Transpose")
    if back is None or [int(x) for x in back.attr("perm", [])] != [0, 2, 1, 3]:
        return None
    merge = _only_user(ctx, back.outputs[0], "Reshape")
    if merge is None or merge.inputs[0] is not back.outputs[0]:
        return None
    q_in = _dims(q.x)
    if not _known(q_in):
        return None
    head_dims = (q_in[0], q_in[1], heads, embed // heads)
    merged = _reshaped(merge, head_dims, {id(back.outputs[0]): head_dims, id(q.x): q_in})
    if not _known(merged) or merged != (q_in[0], q_in[1], embed):
        return None
    o_mm = _only_user(ctx, merge.outputs[0], "MatMul")
    if o_mm is None or o_mm.inputs[0] is not merge.outputs[0]:
        return None
    o_end = o_mm.outputs[0]
    o_add = _only_user(ctx, o_end, "Add")
    if o_add is not None and _projection(ctx, o_add.outputs[0], embed, merged) is not None:
        o_end = o_add.outputs[0]
    o = _projection(ctx, o_end, embed, merged)
    if o is None:
        return None
    # self-attention shares K/V inputs; cross-attention needs matching key and value lengths
    k_in, v_in = _dims(k.x), _dims(v.x)
    if not (_known(q_in) and _known(k_in) and _known(v_in)):
        return None
    if k_in[:2] != v_in[:2] or k_in[0] != q_in[0]:
        return None
    if mask is not None:
        # must broadcast into the scores [B, H, L, S]: provably different sizes fall back; an
        # unprovable one is left to ``expand`` in the generated code, which raises rather
        # than grow the scores as ONNX broadcasting would
        scores_dims = (q_in[0], heads, q_in[1], k_in[1])
        m_dims = _shape(mask)
        if any(
            isinstance(m, int) and isinstance(d, int) and m not in (1, d)
            for m, d in zip(reversed(m_dims), reversed(scores_dims))
        ):
            return None
    nodes += [scale, qk, q_rs, q_tr, *k_nodes, v_rs, v_tr, softmax, pv, back, merge]
    nodes += q.nodes + k.nodes + v.nodes + o.nodes
    d = embed // heads
    logical = {id(back.outputs[0]): head_dims, id(q_rs.outputs[0]): head_dims}
    for proj, dims in ((q, q_in), (k, k_in), (v, v_in)):
        logical[id(proj.out)] = (*dims[:2], embed)
    logical[id(k_nodes[0].outputs[0])] = logical[id(v_rs.outputs[0])] = (k_in[0], k_in[1], heads, d)
    reads = _shape_reads(ctx, nodes, o.out, logical, [q.x, k.x, v.x])
    if reads is None:
        return None
    return Block(q, k, v, o, heads, mask, nodes, reads)


def _shape_reads(
    ctx: Ctx, nodes: list[Node], final: Value, logical: dict[int, tuple], inputs: list[Value]
) -> list[tuple[Node, list[tuple[Value, int] | int]]] | None:
    """``Shape`` nodes that read values inside the block, each dim as (block input, axis) or int.

    Those values are never computed once the block is one module call, so their dims are
    taken from the block's inputs instead; None when a dim cannot be (the block then stays
    functional).
    """
    members = {id(n) for n in nodes}
    order = {id(n): i for i, n in enumerate(ctx.graph.nodes)}
    reads = []
    for node in nodes:
        for out in node.outputs:
            if out is final:
                continue
            for user in ctx.users(out):
                if id(user) in members:
                    continue
                if user.op_type != "Shape":
                    return None
                dims = logical.get(id(out)) or _shape(out)
                if not _known(dims):
                    return None
                spec: list[tuple[Value, int] | int] = []
                for d in dims:
                    if isinstance(d, int):
                        spec.append(d)
                        continue
                    if isinstance(d, tuple):  # a token: that dim of a block input
                        spec.append(next((x, d[1]) for x in inputs if id(x) == d[0]))
                        continue
                    # block inputs computed before this Shape node that carry the same dim
                    src = next(
                        (
                            (x, i)
                            for x in inputs
                            if x.producer is None
                            or order.get(id(x.producer), len(order)) < order[id(user)]
                            for i, e in enumerate(_dims(x))
                            if e == d
                        ),
                        None,
                    )
                    if src is None:
                        return None
                    spec.append(src)
                reads.append((user, spec))
    return reads


def _emit_shape(ctx: Ctx, node: Node, spec: list) -> None:
    """A ``Shape`` of a value inside the block, as dims of the block's inputs."""
    rank = len(spec)
    start, end = int(node.attr("start", 0)), node.attr("end")
    end = rank if end is None else int(end)
    elems = [str(d) if isinstance(d, int) else f"{ctx.var(d[0])}.shape[{d[1]}]" for d in spec]
    picked = elems[slice(start + rank if start < 0 else start, end + rank if end < 0 else end)]
    ctx.dims[id(node.outputs[0])] = (picked, False)


def _block_path(block: Block) -> str:
    """The longest common path prefix of the block's node names (``/layers.0/self_attn``)."""
    paths = [[s for s in (n.name or "").split("/") if s] for n in block.nodes]
    common: list[str] = []
    for segs in zip(*paths):
        if any(s != segs[0] for s in segs):
            break
        common.append(segs[0])
    return "/" + "/".join(common) if common else ""


def _bias(p: Projection) -> np.ndarray:
    return p.bias if p.bias is not None else np.zeros(p.weight.shape[0], np.float32)


def _emit(ctx: Ctx, block: Block, node: Node) -> None:
    """Lower the block's last node: the module call (everything else was absorbed)."""
    ctx.node = node
    embed, heads = block.q.weight.shape[0], block.heads
    with_bias = any(p.bias is not None for p in (block.q, block.k, block.v, block.o))
    tensors = {
        "in_proj_weight": np.concatenate([block.q.weight, block.k.weight, block.v.weight]),
        "out_proj.weight": block.o.weight,
    }
    if with_bias:
        tensors["in_proj_bias"] = np.concatenate([_bias(block.q), _bias(block.k), _bias(block.v)])
        tensors["out_proj.bias"] = _bias(block.o)
    extra = "" if with_bias else ", bias=False"
    ctor = f"nn.MultiheadAttention({embed}, {heads}{extra}, batch_first=True)"
    path = _block_path(block)
    name = layer_name(Node("MultiheadAttention", [], [], name=path)) if path else "attention"
    ident = ctx.attr_name(name, "attention")
    origin = py_string(path or node.name or node.op_type)
    ctx.layers.append(Layer(ident, ctor, tensors, origin))
    q, k, v = ctx.var(block.q.x), ctx.var(block.k.x), ctx.var(block.v.x)
    args = f"{q}, {k}, {v}, need_weights=False"
    if block.mask is not None:
        m = ctx.var(block.mask)
        m_shape, q_in, k_in = _shape(block.mask), _dims(block.q.x), _dims(block.k.x)
        if m_shape != (q_in[1], k_in[1]):
            # broadcast to [B, H, L, S] as the Add did, then fold the heads into the batch
            name = identifier("attn_mask", ctx.taken, fallback="v", reserved=CODE_NAMES)
            expand = f"{m}.expand({q}.shape[0], {heads}, {q}.shape[1], {k}.shape[1])"
            ctx.body.append(
                Stmt(f"{name} = {expand}.reshape(-1, {q}.shape[1], {k}.shape[1])", origin)
            )
            m = name
        args += f", attn_mask={m}"
    ctx.body.append(Stmt(f"{ctx.local(block.o.out)}, _ = self.{ident}({args})", origin))


def match_attention(ctx: Ctx) -> None:
    """Find every decomposed attention block; absorb its nodes and lower it at its last node."""
    claimed: set[int] = set()
    order = {id(n): i for i, n in enumerate(ctx.graph.nodes)}
    for node in ctx.graph.nodes:
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            continue
        block = match_block(ctx, node)
        if block is None or any(id(n) in claimed for n in block.nodes):
            continue
        if any(id(n) not in order for n in block.nodes):
            continue
        last = max(block.nodes, key=lambda n: order[id(n)])
        if last is not block.o.out.producer:
            continue
        claimed.update(id(n) for n in block.nodes)
        ctx.absorbed.update(id(n) for n in block.nodes if n is not last)
        ctx.replaced[id(last)] = lambda c, n, b=block: _emit(c, b, n)
        for reader, spec in block.shape_reads:
            ctx.replaced[id(reader)] = lambda c, n, sp=spec: _emit_shape(c, n, sp)


BLOCK_MATCHERS.append(match_attention)
