"""Pattern recognition: decomposed GELU, LayerNorm, Softmax and attention as their ONNX ops.

Exporters (torch.onnx below opset 17/20, hand-written models) spell common functions as
chains of primitive ops. Recognizing them lets every later stage use one fast kernel instead
of five to ten passes over memory. The output is still plain ONNX:

- ``0.5*x*(1+Erf(x/sqrt2))`` in any operand order, and the tanh approximation
  ``0.5*x*(1+Tanh(sqrt(2/pi)*(x+0.044715*x^3)))`` → ``Gelu`` (opset 20 and later);
- ``ReduceMean → Sub → Pow 2 (or Mul self) → ReduceMean → Add eps → Sqrt → Div [→ Mul gamma]
  [→ Add beta]`` over the last axis → ``LayerNormalization`` (opset 17 and later);
- ``[ReduceMax → Sub →] Exp → ReduceSum → Div`` → ``Softmax`` (any axis from opset 13 on,
  the last axis before);
- ``MatMul(Q, K^T) → Div/Mul scale → [Add mask] → Softmax → MatMul(V)`` → ``Attention``
  (opset 23 and later); below, the blocks are recorded in ``graph.meta["attention"]`` as
  ``AttentionMatch`` objects (valid until the graph next changes).

Preconditions: a verified, topologically sorted graph (types are inferred here). Only the
top-level graph is rewritten, and only where every intermediate value of a match is read by
nothing outside the match and is not a graph output. The matched chain's last value keeps
its identity (and name), so readers and graph outputs need no update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen
from torsh_gen.ir.types import TensorType
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.manager import note, register_pass
from torsh_gen.passes.matching import (
    View,
    is_float,
    is_last_axis,
    new_node,
    op_is,
    other_input,
    poly_close,
    poly_leaves,
    poly_mul,
    poly_of,
    reduce_axes,
    splice,
    tensor_type,
)

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# --------------------------------------------------------------------------- GELU
@dataclass
class GeluMatch:
    """A decomposed GELU: ``root``'s output equals Gelu(x, approximate)."""

    x: Value
    approximate: str
    nodes: list[Node]
    root: Node


def match_gelu(view: View, act: Node) -> GeluMatch | None:
    """The decomposed GELU around an Erf (exact) or Tanh (approximation) node, if any."""
    if not op_is(act, "Erf", "Tanh"):
        return None
    leaves: list[Value] = []
    poly_leaves(view, act.inputs[0], leaves)
    if len(leaves) != 1 or not is_float(leaves[0]):
        return None
    x = leaves[0]
    nodes: list[Node] = []
    inner = poly_of(view, act.inputs[0], x, nodes)
    if act.op_type == "Erf":
        target, approximate = {1: 1.0 / math.sqrt(2.0)}, "none"
    else:
        target, approximate = {1: _SQRT_2_OVER_PI, 3: _SQRT_2_OVER_PI * 0.044715}, "tanh"
    if inner is None or not poly_close(inner, target):
        return None
    plus = view.reader(act.outputs[0])
    if not op_is(plus, "Add") or view.scalar(other_input(plus, act.outputs[0])) != 1.0:
        return None
    nodes += [act, plus]
    cur, total = plus.outputs[0], {0: 1.0}
    for _ in range(4):
        mul = view.reader(cur)
        other = None if mul is None else other_input(mul, cur)
        if not op_is(mul, "Mul") or other is None:
            return None
        q = poly_of(view, other, x, nodes)
        if q is None:
            return None
        nodes.append(mul)
        total, cur = poly_mul(total, q), mul.outputs[0]
        if poly_close(total, {1: 0.5}):
            if not view.private(nodes, mul) or not _keeps_shape(x, cur):
                return None
            return GeluMatch(x, approximate, nodes, mul)
    return None


def _keeps_shape(x: Value, y: Value) -> bool:
    """False when known ranks show that a (1,)-shaped constant broadcast 0-d ``x`` up."""
    tx, ty = tensor_type(x), tensor_type(y)
    return tx is None or ty is None or tx.rank is None or ty.rank is None or tx.rank == ty.rank


def find_gelus(view: View) -> list[GeluMatch]:
    """Every decomposed GELU of the view's graph (non-overlapping, in node order)."""
    found: list[GeluMatch] = []
    taken: set[int] = set()
    for n in view.graph.nodes:
        m = match_gelu(view, n) if op_is(n, "Erf", "Tanh") else None
        if m is not None and not any(id(k) in taken for k in m.nodes):
            taken.update(id(k) for k in m.nodes)
            found.append(m)
    return found


def _rewrite_gelus(graph: Graph, names: NameGen) -> int:
    view = View(graph)
    rewrites = []
    for m in find_gelus(view):
        attrs = (
            {"approximate": Attribute(AttrKind.STRING, m.approximate)}
            if m.approximate != "none"
            else {}
        )
        node = new_node(names, "Gelu", [m.x], m.root.outputs[0], attrs, hint=m.root.name or "gelu")
        rewrites.append((m.root, [node], m.nodes))
    splice(graph, rewrites)
    return len(rewrites)


# --------------------------------------------------------------------------- LayerNorm
@dataclass
class LayerNormMatch:
    """A decomposed LayerNormalization over the last axis."""

    x: Value
    epsilon: float
    gamma: Value | np.ndarray | None
    beta: Value | np.ndarray | None
    nodes: list[Node] = field(default_factory=list)
    root: Node | None = None


def _mean_last(view: View, node: Node | None, x: Value) -> bool:
    if not op_is(node, "ReduceMean") or node.inputs[0] is not x or node.attr("keepdims", 1) != 1:
        return False
    axes = reduce_axes(view, node)
    return axes is not None and len(axes) == 1 and is_last_axis(axes[0], x)


def match_layernorm(view: View, mean: Node) -> LayerNormMatch | None:
    """The decomposed LayerNorm whose first ReduceMean is ``mean``, if any."""
    x = mean.inputs[0]
    if not _mean_last(view, mean, x) or not is_float(x):
        return None
    sub = view.reader(mean.outputs[0])
    if not op_is(sub, "Sub") or sub.inputs[0] is not x or sub.inputs[1] is not mean.outputs[0]:
        return None
    d = sub.outputs[0]
    readers = view.readers_of(d)
    sq = next((r for r in readers if _is_square(view, r, d)), None)
    div = next((r for r in readers if op_is(r, "Div") and r.inputs[0] is d), None)
    if sq is None or div is None or len(readers) != 2:
        return None
    mean2 = view.reader(sq.outputs[0])
    if not _mean_last(view, mean2, sq.outputs[0]):
        return None
    add = view.reader(mean2.outputs[0])
    eps = view.scalar(other_input(add, mean2.outputs[0])) if op_is(add, "Add") else None
    sqrt = view.reader(add.outputs[0]) if eps is not None else None
    if not op_is(sqrt, "Sqrt") or div.inputs[1] is not sqrt.outputs[0]:
        return None
    m = LayerNormMatch(x, eps, None, None, [mean, sub, sq, mean2, add, sqrt, div], div)
    _extend_affine(view, m)
    return m if view.private(m.nodes, m.root) else None


def _is_square(view: View, node: Node, d: Value) -> bool:
    if op_is(node, "Pow"):
        return node.inputs[0] is d and view.scalar(node.inputs[1]) == 2.0
    return op_is(node, "Mul") and node.inputs[0] is d and node.inputs[1] is d


def _extend_affine(view: View, m: LayerNormMatch) -> None:
    """Take a following ``Mul gamma`` and ``Add beta`` into ``m`` when they fit LN's inputs."""
    for op_type in ("Mul", "Add"):
        out = m.root.outputs[0]
        nxt = view.reader(out)
        if not op_is(nxt, op_type):
            continue  # a bias may follow without a scale
        operand = _affine_param(view, other_input(nxt, out), m.x)
        if operand is None:
            return
        if op_type == "Mul":
            m.gamma = operand
        else:
            m.beta = operand
        m.nodes.append(nxt)
        m.root = nxt


def _affine_param(view: View, v: Value | None, x: Value) -> Value | np.ndarray | None:
    """``v`` as LayerNorm's 1-D scale/bias: a constant reshaped to (C,), or a rank-1 value."""
    tx = tensor_type(x)
    last = tx.shape[-1] if tx is not None and tx.shape else None
    c = view.const(v)
    if c is not None:
        if not isinstance(last, int) or c.ndim < 1 or c.ndim > tx.rank or c.dtype != tx.dtype.numpy:
            return None
        return c.reshape(last) if c.shape[-1] == last and c.size == last else None
    t = tensor_type(v)
    if t is None or t.shape is None or len(t.shape) != 1 or tx is None or t.dtype != tx.dtype:
        return None
    return v if t.shape[0] == last and last is not None else None


def _rewrite_layernorms(graph: Graph, names: NameGen) -> int:
    view = View(graph)
    rewrites, taken = [], set()
    for n in list(graph.nodes):
        m = match_layernorm(view, n) if op_is(n, "ReduceMean") else None
        if m is None or any(id(k) in taken for k in m.nodes):
            continue
        tx = tensor_type(m.x)
        if m.gamma is None:
            last = tx.shape[-1] if tx.shape else None
            if not isinstance(last, int):
                continue
            m.gamma = np.ones(last, dtype=tx.dtype.numpy)
        inputs = [m.x] + [_as_value(graph, names, p, m.root.name) for p in (m.gamma, m.beta)]
        attrs = {
            "axis": Attribute(AttrKind.INT, -1),
            "epsilon": Attribute(AttrKind.FLOAT, m.epsilon),
        }
        out = m.root.outputs[0]
        node = new_node(
            names,
            "LayerNormalization",
            inputs if inputs[2] is not None else inputs[:2],
            out,
            attrs,
            hint=m.root.name or "layernorm",
        )
        taken.update(id(k) for k in m.nodes)
        rewrites.append((m.root, [node], m.nodes))
    splice(graph, rewrites)
    return len(rewrites)


def _as_value(
    graph: Graph, names: NameGen, p: Value | np.ndarray | None, hint: str
) -> Value | None:
    if p is None or isinstance(p, Value):
        return p
    return graph.add_initializer(names.fresh(f"{hint or 'ln'}_param"), np.ascontiguousarray(p))


# --------------------------------------------------------------------------- Softmax
@dataclass
class SoftmaxMatch:
    """A decomposed Softmax of ``x`` over ``axis``."""

    x: Value
    axis: int
    nodes: list[Node]
    root: Node


def match_softmax(view: View, exp: Node) -> SoftmaxMatch | None:
    """The ``[ReduceMax→Sub→]Exp→ReduceSum→Div`` chain around ``exp``, if any."""
    if not op_is(exp, "Exp"):
        return None
    e = exp.outputs[0]
    readers = view.readers_of(e)
    rsum = next((r for r in readers if op_is(r, "ReduceSum") and r.inputs[0] is e), None)
    div = view.reader(rsum.outputs[0]) if rsum is not None else None
    if len(readers) != 2 or id(e) in view.outputs or not op_is(div, "Div"):
        return None
    if (
        div.inputs[0] is not e
        or div.inputs[1] is not rsum.outputs[0]
        or rsum.attr("keepdims", 1) != 1
    ):
        return None
    axes = reduce_axes(view, rsum)
    if axes is None or len(axes) != 1:
        return None
    nodes, x = [exp, rsum, div], exp.inputs[0]
    sub = view.producer(x)
    if op_is(sub, "Sub") and view.reader(x) is exp:
        peak = view.producer(sub.inputs[1])
        if (
            op_is(peak, "ReduceMax")
            and peak.inputs[0] is sub.inputs[0]
            and peak.attr("keepdims", 1) == 1
        ):
            if _same_axes(reduce_axes(view, peak), axes, sub.inputs[0]):
                nodes = [peak, sub, *nodes]
                x = sub.inputs[0]
    if not is_float(x) or not view.private(nodes, div):
        return None
    return SoftmaxMatch(x, axes[0], nodes, div)


def _same_axes(a: list[int] | None, b: list[int], v: Value) -> bool:
    if a is None or len(a) != 1:
        return False
    if a == b:
        return True
    t = tensor_type(v)
    return t is not None and t.rank is not None and a[0] % t.rank == b[0] % t.rank


def _rewrite_softmaxes(graph: Graph, names: NameGen) -> int:
    view = View(graph)
    rewrites = []
    for n in list(graph.nodes):
        m = match_softmax(view, n) if op_is(n, "Exp") else None
        if m is None or (graph.opset and graph.opset < 13 and not is_last_axis(m.axis, m.x)):
            continue
        attrs = {"axis": Attribute(AttrKind.INT, m.axis)}
        rewrites.append(
            (
                m.root,
                [
                    new_node(
                        names,
                        "Softmax",
                        [m.x],
                        m.root.outputs[0],
                        attrs,
                        hint=m.root.name or "softmax",
                    )
                ],
                m.nodes,
            )
        )
    splice(graph, rewrites)
    return len(rewrites)


# --------------------------------------------------------------------------- attention
@dataclass
class AttentionMatch:
    """``softmax(Q @ K^T * scale [+ mask]) @ V`` spelled with MatMul, Softmax and arithmetic."""

    q: Value
    k_t: Value
    v: Value
    scale: float
    mask: Value | None
    nodes: list[Node]
    root: Node


def match_attention(view: View, softmax: Node) -> AttentionMatch | None:
    """The attention block around a last-axis Softmax of rank-4 scores, if any."""
    if not op_is(softmax, "Softmax"):
        return None
    s, p = softmax.inputs[0], softmax.outputs[0]
    t = tensor_type(s)
    axis = softmax.attr("axis", -1 if (view.graph.opset or 13) >= 13 else 1)
    out = view.reader(p)
    if (
        t is None
        or t.rank != 4
        or axis not in (-1, 3)
        or not op_is(out, "MatMul")
        or other_input(out, p) is None
    ):
        return None
    if out.inputs[0] is not p:
        return None
    nodes, mask = [softmax, out], None
    pre = view.producer(s)
    if op_is(pre, "Add"):
        side = next((i for i in (0, 1) if _scores(view, pre.inputs[i]) is not None), None)
        if side is None:
            return None
        s, mask = pre.inputs[side], pre.inputs[1 - side]
        nodes.append(pre)
    found = _scores(view, s)
    if found is None:
        return None
    q, k_t, scale, more = found
    nodes += more
    if not view.private(nodes, out):
        return None
    return AttentionMatch(q, k_t, out.inputs[1], scale, mask, nodes, out)


def _scalar_factor(view: View, v: Value) -> tuple[Value, float, Node] | None:
    """(operand, factor, node) when ``v`` is ``operand * c`` or ``operand / c`` for a scalar c."""
    p = view.producer(v)
    if op_is(p, "Div") and view.scalar(p.inputs[1]):
        return p.inputs[0], 1.0 / view.scalar(p.inputs[1]), p
    if op_is(p, "Mul"):
        for i in (0, 1):
            c = view.scalar(p.inputs[i])
            if c is not None and view.scalar(p.inputs[1 - i]) is None:
                return p.inputs[1 - i], c, p
    return None


def _scores(view: View, s: Value) -> tuple[Value, Value, float, list[Node]] | None:
    """(Q, K^T, scale, nodes) when ``s`` is ``MatMul(Q, K^T)`` scaled by scalars."""
    nodes: list[Node] = []
    scale = 1.0
    scaled = _scalar_factor(view, s)
    if scaled is not None:
        s, scale = scaled[0], scaled[1]
        nodes.append(scaled[2])
    mm = view.producer(s)
    if not op_is(mm, "MatMul"):
        return None
    nodes.append(mm)
    operands = list(mm.inputs[:2])
    for i, v in enumerate(operands):  # torch's SDPA export scales Q and K^T before the product
        f = _scalar_factor(view, v) if view.reader(v) is mm else None
        if f is not None:
            operands[i], scale = f[0], scale * f[1]
            nodes.append(f[2])
    return operands[0], operands[1], scale, nodes


def _attention_fits(m: AttentionMatch) -> bool:
    """True when the ONNX Attention op computes exactly what the MatMul broadcasting did."""
    tq, tk, tv = tensor_type(m.q), tensor_type(m.k_t), tensor_type(m.v)
    if any(t is None or t.rank != 4 for t in (tq, tk, tv)) or not tq.dtype.is_float:
        return False
    if tq.dtype != tk.dtype or tq.dtype != tv.dtype or tk.shape[:2] != tv.shape[:2]:
        return False
    if tq.shape[0] is None or tk.shape[0] != tq.shape[0]:
        return False
    if tk.shape[1] != 1 and (tq.shape[1] is None or tk.shape[1] != tq.shape[1]):
        return False
    return m.mask is None or _mask_target(m) is not None


def _mask_target(m: AttentionMatch) -> tuple[int, ...] | None:
    """() when the mask already is (..., Sq, Skv) of rank 2-4 as onnxruntime requires, the
    static shape to Expand it to when not, None when neither is possible."""
    tm, sq, skv = tensor_type(m.mask), tensor_type(m.q).shape[2], tensor_type(m.v).shape[2]
    if tm is None or tm.shape is None or len(tm.shape) > 4:
        return None
    if len(tm.shape) >= 2 and tm.shape[-2:] == (sq, skv) and sq is not None and skv is not None:
        return ()
    if not isinstance(sq, int) or not isinstance(skv, int):
        return None
    return (1,) * (max(len(tm.shape), 2) - 2) + (sq, skv)


def _key_input(
    view: View, names: NameGen, m: AttentionMatch
) -> tuple[Value, list[Node], list[Node]]:
    """K in (batch, heads, seq, head_size) from K^T: (value, nodes to add, nodes to drop)."""
    tr = view.producer(m.k_t)
    if op_is(tr, "Transpose") and view.reader(m.k_t) is not None and tr.attr("perm") is not None:
        perm = list(tr.attr("perm"))
        perm[2], perm[3] = perm[3], perm[2]
        if perm == [0, 1, 2, 3]:
            return tr.inputs[0], [], [tr]
        src, drop = tr.inputs[0], [tr]
    else:
        perm, src, drop = [0, 1, 3, 2], m.k_t, []
    tk = tensor_type(m.k_t)
    key = Value(
        names.fresh(f"{m.k_t.name}_keys"),
        TensorType(tk.dtype, (*tk.shape[:2], tk.shape[3], tk.shape[2])),
    )
    node = Node(
        "Transpose", [src], [key], {"perm": Attribute(AttrKind.INTS, perm)}, "", names.fresh("keys")
    )
    return key, [node], drop


def _expanded_mask(graph: Graph, names: NameGen, m: AttentionMatch, added: list[Node]) -> Value:
    """The mask, through an Expand to (..., Sq, Skv) when it broadcasts over those axes."""
    target = _mask_target(m)
    if not target:
        return m.mask
    shape = graph.add_initializer(names.fresh("mask_shape"), np.array(target, dtype=np.int64))
    tm = tensor_type(m.mask)
    full = (
        np.broadcast_shapes(tuple(1 if d is None else d for d in tm.shape), target)
        if tm.is_static
        else None
    )
    out = Value(names.fresh(f"{m.mask.name}_full"), TensorType(tm.dtype, full))
    added.append(Node("Expand", [m.mask, shape], [out], {}, "", names.fresh("expand_mask")))
    return out


def rewrite_attention(graph: Graph, names: NameGen, replace: bool) -> tuple[int, int]:
    """Find attention blocks; replace them by Attention when ``replace``. (found, replaced)."""
    view = View(graph)
    found: list[AttentionMatch] = []
    taken: set[int] = set()
    for n in graph.nodes:
        m = match_attention(view, n) if op_is(n, "Softmax") else None
        if m is not None and not any(id(k) in taken for k in m.nodes):
            taken.update(id(k) for k in m.nodes)
            found.append(m)
    rewrites, kept = [], []
    for m in found:
        if not replace or not _attention_fits(m):
            kept.append(m)
            continue
        key, added, dropped = _key_input(view, names, m)
        inputs = [m.q, key, m.v]
        if m.mask is not None:
            inputs.append(_expanded_mask(graph, names, m, added))
        attrs = {"scale": Attribute(AttrKind.FLOAT, float(m.scale))}
        node = new_node(
            names, "Attention", inputs, m.root.outputs[0], attrs, hint=m.root.name or "attention"
        )
        rewrites.append((m.root, [*added, node], m.nodes + dropped))
    splice(graph, rewrites)
    graph.meta["attention"] = kept
    return len(found), len(rewrites)


@register_pass("recognize_patterns", ensures=("standard_ops_only",))
def recognize_patterns(graph: Graph) -> bool:
    """Replace decomposed GELU/LayerNorm/Softmax/attention by ONNX ops the opset has."""
    infer_types(graph)
    names = NameGen(graph)
    opset = graph.opset or 10_000  # 0: unknown, the newest semantics apply
    counts = {
        "Gelu": _rewrite_gelus(graph, names) if opset >= 20 else 0,
        "LayerNormalization": _rewrite_layernorms(graph, names) if opset >= 17 else 0,
        "Softmax": _rewrite_softmaxes(graph, names),
    }
    found, counts["Attention"] = rewrite_attention(graph, names, replace=opset >= 23)
    for op_type, count in counts.items():
        if count:
            note(f"{count} decomposed {op_type} → {op_type}")
    if found > counts["Attention"]:
        note(
            f"{found - counts['Attention']} attention blocks kept as MatMul/Softmax "
            "(recorded in graph.meta['attention'])"
        )
    return any(counts.values())
