"""Algebraic simplification: remove no-op nodes and merge chains of cheap ops.

Preconditions: none (runs type inference itself, once per round). Rules, applied to a
fixed point in the graph and its nested graphs:

- no-ops: Identity; Dropout in inference (mask unused; before opset 12 Dropout is an
  identity at inference, as the reference interpreter runs it); Cast to the input's dtype;
  Reshape/Flatten/Squeeze/Unsqueeze/Expand that keep the shape; Transpose by the identity
  permutation; Pad by zeros; Slice over everything; Concat/Sum/Mean/Max/Min of one input;
  x*1, x+0, x-0, x/1, x**1 where the constant broadcasts to nothing new;
- merges: Transpose∘Transpose (into one or none), Reshape after Reshape/Flatten/Squeeze/
  Unsqueeze, exact Cast∘Cast (float32→float64→float32), Squeeze∘Unsqueeze inverses;
- shape values: ``Shape(t)`` and ``Gather(Shape(t), i)`` of static dims become constants;
- shape chains: ``Reshape(d, Concat(Gather(Shape(d), i), ..., const))`` gets a constant
  shape where position j copying dim j of ``d`` becomes 0, so dynamic dims stay dynamic
  (pieces may also be Shape slices, dims of other tensors with the same symbol, and
  integer arithmetic on static sizes, as torch exports ``view(b, t, h, d // h)``)::

      %s = Shape(%d); %b = Gather(%s, 0); %b1 = Unsqueeze(%b, [0])
      %shape = Concat(%b1, [64]); %y = Reshape(%d, %shape)
      ==>  %y = Reshape(%d, [0, 64])

Removed nodes are bypassed through ``ir.rewrite`` so graph outputs keep their names; nodes
that only fed rewritten nodes are dropped. ``x+0`` turns -0.0 into +0.0 in IEEE terms;
the values compare equal, which is the precision this pass keeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen, is_graph_output, use_counts
from torsh_gen.ir.types import DType
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.manager import note, register_pass
from torsh_gen.passes.rewriter import (
    Rewriter,
    axis,
    overridable_inputs,
    same_static_type,
    shape_of,
    tensor_type,
)

_MAX_ROUNDS = 20


# ====================================================================== no-op rules
Rule = Callable[[Rewriter, Node], bool]


def _identity(rw: Rewriter, node: Node) -> bool:
    return (
        bool(node.inputs)
        and node.inputs[0] is not None
        and rw.remove(node, node.inputs[0], "Identity")
    )


def _dropout(rw: Rewriter, node: Node) -> bool:
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        mode = rw.const(node.inputs[2])
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            return False
    if len(node.outputs) > 1 and node.outputs[1].name:
        uses = use_counts(rw.graph)
        if uses.get(id(node.outputs[1]), 0):
            return False
    return rw.remove(node, node.inputs[0], "Dropout")


def _cast(rw: Rewriter, node: Node) -> bool:
    x = node.inputs[0]
    t = tensor_type(x)
    if t is None:
        return False
    if node.op_type == "CastLike":
        target = tensor_type(node.inputs[1]) if len(node.inputs) > 1 else None
        to = None if target is None else target.dtype
    else:
        to = _cast_to(rw, node)
    if to is not None and to == t.dtype:
        return rw.remove(node, x, "Cast")
    return _cast_chain(rw, node, t.dtype)


def _cast_to(rw: Rewriter, node: Node) -> DType | None:
    a = rw.attrs(node)
    try:
        return DType(int(a.get("to"))) if a is not None and a.get("to") is not None else None
    except (TypeError, ValueError):
        return None


def _same_shape(rw: Rewriter, node: Node) -> bool:
    x = node.inputs[0]
    if same_static_type(x, node.outputs[0]):
        return rw.remove(node, x, node.op_type)
    shape = shape_of(x)
    if shape is None:
        return False
    if node.op_type == "Flatten":
        a = rw.attrs(node)
        if len(shape) == 2 and a is not None and axis(a.get("axis", 1), 2) == 1:
            return rw.remove(node, x, "Flatten")
    if (
        node.op_type == "Expand"
        and len(node.inputs) > 1
        and _expand_noop(shape, rw.ints(node.inputs[1]))
    ):
        return rw.remove(node, x, "Expand")
    return False


def _expand_noop(shape: tuple, target: list[int] | None) -> bool:
    if target is None or len(target) > len(shape):
        return False
    aligned = shape[len(shape) - len(target) :]
    return all(s == 1 or (isinstance(d, int) and d == s) for s, d in zip(target, aligned))


def _reshape(rw: Rewriter, node: Node) -> bool:
    x = node.inputs[0]
    if len(node.inputs) < 2:
        return _same_shape(rw, node)  # opset 1-4: the shape is an attribute
    if same_static_type(x, node.outputs[0]):
        return rw.remove(node, x, "Reshape")
    a = rw.attrs(node)
    allowzero = 0 if a is None else a.get("allowzero", 0)
    target = rw.ints(node.inputs[1])
    shape = shape_of(x)
    if target is not None and shape is not None and _reshape_keeps(shape, target, allowzero):
        return rw.remove(node, x, "Reshape")
    if target is not None:
        return _reshape_chain(rw, node, target, allowzero)
    new = None if allowzero else _shape_chain(rw, node)
    if new is None:
        return False
    old = list(node.inputs)
    node.inputs = [x, rw.constant(f"{node.inputs[1].name}_const", np.array(new, dtype=np.int64))]
    return rw.rewired(node, old, "Shape→Reshape chain")


def _reshape_keeps(shape: tuple, target: list[int], allowzero: int) -> bool:
    """True when reshaping a tensor of ``shape`` to ``target`` changes nothing."""
    if len(target) != len(shape) or target.count(-1) > 1:
        return False
    for s, d in zip(target, shape):
        if not (s == -1 or (s == 0 and not allowzero) or (isinstance(d, int) and d == s)):
            return False
    return True


def _transpose(rw: Rewriter, node: Node) -> bool:
    x = node.inputs[0]
    shape = shape_of(x)
    perm = _perm(rw, node, None if shape is None else len(shape))
    if perm is not None and perm == list(range(len(perm))):
        return rw.remove(node, x, "Transpose")
    inner = rw.source(x, "Transpose")
    if inner is None or perm is None:
        return False
    first = _perm(rw, inner, len(perm))
    if first is None or len(first) != len(perm):
        return False
    composed = [first[p] for p in perm]
    src = inner.inputs[0]
    if composed == list(range(len(composed))) and rw.remove(node, src, "Transpose∘Transpose"):
        rw.orphans.append(inner)
        return True
    old = list(node.inputs)
    node.inputs = [src]
    node.attrs = {**node.attrs, "perm": Attribute(AttrKind.INTS, composed)}
    return rw.rewired(node, old, "Transpose∘Transpose")


def _perm(rw: Rewriter, node: Node, rank: int | None) -> list[int] | None:
    a = rw.attrs(node)
    perm = None if a is None else a.get("perm")
    if perm is None:
        return None if rank is None else list(range(rank))[::-1]
    perm = [int(p) for p in perm]
    return [axis(p, len(perm)) for p in perm]


def _pad(rw: Rewriter, node: Node) -> bool:
    a = rw.attrs(node)
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        pads = rw.ints(node.inputs[1])
    else:
        pads = None if a is None else a.get("pads", a.get("paddings"))
    if pads is not None and not any(int(p) for p in pads):
        return rw.remove(node, node.inputs[0], "Pad")
    return False


def _slice(rw: Rewriter, node: Node) -> bool:
    x = node.inputs[0]
    shape = shape_of(x)
    starts = rw.list_attr_or_input(node, "starts", 1)
    ends = rw.list_attr_or_input(node, "ends", 2)
    if shape is None or starts is None or ends is None or len(starts) != len(ends):
        return False
    axes = rw.list_attr_or_input(node, "axes", 3)
    axes = list(range(len(starts))) if not axes else [axis(i, len(shape)) for i in axes]
    steps = rw.list_attr_or_input(node, "steps", 4) if len(node.inputs) > 4 else None
    if len(node.inputs) > 4 and node.inputs[4] is not None and steps is None:
        return False
    steps = steps or [1] * len(starts)
    for start, end, ax, step in zip(starts, ends, axes, steps):
        if step != 1 or not 0 <= ax < len(shape):
            return False
        dim = shape[ax]
        if not (start == 0 or (isinstance(dim, int) and start <= -dim)):
            return False
        if not (end >= 2**31 - 1 or (isinstance(dim, int) and end >= dim)):
            return False
    return rw.remove(node, x, "Slice")


def _single_input(rw: Rewriter, node: Node) -> bool:
    if len(node.inputs) != 1 or node.inputs[0] is None:
        return False
    x = node.inputs[0]
    if node.op_type in ("Mean", "Sum", "Max", "Min") and not same_static_type(x, node.outputs[0]):
        tx, to = tensor_type(x), tensor_type(node.outputs[0])
        if tx is None or to is None or tx.dtype != to.dtype:
            return False
    return rw.remove(node, x, f"{node.op_type} of one input")


# ====================================================================== arithmetic
_NEUTRAL = {
    "Add": (0, (0, 1)),
    "Mul": (1, (0, 1)),
    "Sub": (0, (0,)),
    "Div": (1, (0,)),
    "Pow": (1, (0,)),
}


def _arith(rw: Rewriter, node: Node) -> bool:
    neutral, sides = _NEUTRAL[node.op_type]
    if len(node.inputs) != 2 or None in node.inputs:
        return False
    for side in sides:
        x, c = node.inputs[side], rw.const(node.inputs[1 - side])
        tx, tout = tensor_type(x), tensor_type(node.outputs[0])
        if c is None or tx is None or tx.shape is None or c.dtype.kind not in "biuf":
            continue
        if tout is not None and tout.dtype != tx.dtype:
            continue
        if node.op_type != "Pow" and DType.from_numpy(c.dtype) != tx.dtype:
            continue
        if c.ndim > len(tx.shape) or not np.all(c == neutral):
            continue
        aligned = tx.shape[len(tx.shape) - c.ndim :]
        if all(s == 1 or (isinstance(d, int) and d == s) for s, d in zip(c.shape, aligned)):
            return rw.remove(node, x, f"x {node.op_type} neutral")
    return False


# ====================================================================== merges
def _cast_chain(rw: Rewriter, node: Node, mid: DType) -> bool:
    inner = rw.source(node.inputs[0], "Cast")
    if inner is None or node.op_type != "Cast":
        return False
    src = inner.inputs[0]
    t = tensor_type(src)
    if t is None or not exact_cast(t.dtype, mid):
        return False
    if _cast_to(rw, node) == t.dtype:
        if rw.remove(node, src, "Cast∘Cast"):
            rw.orphans.append(inner)
            return True
    old = list(node.inputs)
    node.inputs = [src]
    return rw.rewired(node, old, "Cast∘Cast")


_FLOAT_MANTISSA = {DType.FLOAT16: 11, DType.BFLOAT16: 8, DType.FLOAT: 24, DType.DOUBLE: 53}
_FLOAT_WIDER = {
    DType.FLOAT16: {DType.FLOAT, DType.DOUBLE},
    DType.BFLOAT16: {DType.FLOAT, DType.DOUBLE},
    DType.FLOAT: {DType.DOUBLE},
}
_INT_BITS = {
    DType.INT8: (7, True),
    DType.INT16: (15, True),
    DType.INT32: (31, True),
    DType.INT64: (63, True),
    DType.UINT8: (8, False),
    DType.UINT16: (16, False),
    DType.UINT32: (32, False),
    DType.UINT64: (64, False),
}


def exact_cast(src: DType, mid: DType) -> bool:
    """True when every value of ``src`` survives a cast to ``mid`` unchanged."""
    if src == mid:
        return True
    if src == DType.BOOL:
        return mid in _INT_BITS or mid in _FLOAT_MANTISSA
    if src in _FLOAT_WIDER:
        return mid in _FLOAT_WIDER[src]
    if src not in _INT_BITS:
        return False
    bits, signed = _INT_BITS[src]
    if mid in _FLOAT_MANTISSA:
        return bits <= _FLOAT_MANTISSA[mid]
    if mid not in _INT_BITS:
        return False
    mbits, msigned = _INT_BITS[mid]
    return mbits >= bits and (msigned or not signed)


def _squeeze_pair(rw: Rewriter, node: Node) -> bool:
    if _same_shape(rw, node):
        return True
    other = "Unsqueeze" if node.op_type == "Squeeze" else "Squeeze"
    inner = rw.source(node.inputs[0], other)
    mid_shape = shape_of(node.inputs[0])
    if inner is None or mid_shape is None:
        return False
    outer_axes = rw.list_attr_or_input(node, "axes", 1)
    inner_axes = rw.list_attr_or_input(inner, "axes", 1)
    if not outer_axes or not inner_axes:
        return False
    # Unsqueeze axes index its output and Squeeze axes its input: the middle value for
    # Squeeze(Unsqueeze(x)), the input (= the final output) for Unsqueeze(Squeeze(x)).
    rank = len(mid_shape) + (len(outer_axes) if node.op_type == "Unsqueeze" else 0)
    if sorted(axis(a, rank) for a in outer_axes) != sorted(axis(a, rank) for a in inner_axes):
        return False
    if rw.remove(node, inner.inputs[0], f"{other}∘{node.op_type}"):
        rw.orphans.append(inner)
        return True
    return False


def _reshape_chain(rw: Rewriter, node: Node, target: list[int], allowzero: int) -> bool:
    """Reshape(Reshape/Flatten/Squeeze/Unsqueeze(x), s) → Reshape(x, s), resolving 0s."""
    inner = rw.source(node.inputs[0], "Reshape", "Flatten", "Squeeze", "Unsqueeze")
    if inner is None:
        return False
    src, mid = inner.inputs[0], shape_of(node.inputs[0])
    new = list(target)
    if not allowzero:
        inner_target = None
        if inner.op_type == "Reshape" and len(inner.inputs) > 1:
            ia = rw.attrs(inner)
            if ia is not None and not ia.get("allowzero", 0):
                inner_target = rw.ints(inner.inputs[1])
        src_shape = shape_of(src)
        for j, s in enumerate(target):
            if s != 0:
                continue
            d = mid[j] if mid is not None and j < len(mid) else None
            if isinstance(d, int):
                new[j] = d
            elif inner_target is not None and j < len(inner_target) and inner_target[j] == 0:
                continue  # the inner Reshape copied dim j of src: copying it again is the same
            elif (
                isinstance(d, str)
                and src_shape is not None
                and j < len(src_shape)
                and src_shape[j] == d
            ):
                continue
            else:
                return False
    old = list(node.inputs)
    shape_v = node.inputs[1]
    if new != target:
        shape_v = rw.constant(f"{shape_v.name}_merged", np.array(new, dtype=np.int64))
    node.inputs = [src, shape_v]
    return rw.rewired(node, old, f"Reshape∘{inner.op_type}")


# ====================================================================== shape chains
Dim = int | tuple[Value, int]  # a known size, or dim k of a tensor


def _shape_chain(rw: Rewriter, node: Node) -> list[int] | None:
    """A constant for Reshape's shape when it is a Concat of constants and dims of tensors."""
    data = node.inputs[0]
    concat = rw.source(node.inputs[1], "Concat")
    a = None if concat is None else rw.attrs(concat)
    if concat is None or a is None or a.get("axis") not in (0, -1):
        return None
    entries: list[Dim] = []
    for piece in concat.inputs:
        dims = _piece(rw, piece)
        if dims is None:
            return None
        entries.extend(dims)
    dshape = shape_of(data)
    new: list[int] = []
    for j, e in enumerate(entries):
        if isinstance(e, int):
            new.append(e)
            continue
        src, k = e
        d = shape_of(src)[k]
        if src is data and k == j:
            new.append(0)  # "copy dim j": stays dynamic
        elif isinstance(d, int):
            new.append(d)
        elif isinstance(d, str) and dshape is not None and j < len(dshape) and dshape[j] == d:
            new.append(0)  # another tensor's dim with the same symbol as data's dim j
        else:
            return None
    rw.orphans.append(concat)
    return new


def _piece(rw: Rewriter, v: Value | None) -> list[Dim] | None:
    """The entries of a 1-D int64 piece of a shape Concat, or None when not understood."""
    c = rw.const(v)
    if c is not None:
        return [int(i) for i in c.reshape(-1)] if c.ndim == 1 and c.dtype.kind in "iu" else None
    p = rw.source(v, "Unsqueeze", "Gather", "Shape", "Slice")
    if p is None:
        return None
    if p.op_type == "Shape":
        return _shape_dims(rw, p.outputs[0])
    if p.op_type == "Unsqueeze":
        axes = rw.list_attr_or_input(p, "axes", 1)
        scalar = _scalar(rw, p.inputs[0]) if axes in ([0], [-1]) else None
        return None if scalar is None else [scalar]
    if p.op_type == "Gather":
        return _gather(rw, v)
    dims = _shape_dims(rw, p.inputs[0])
    starts, ends = rw.list_attr_or_input(p, "starts", 1), rw.list_attr_or_input(p, "ends", 2)
    axes = rw.list_attr_or_input(p, "axes", 3)
    has_steps = len(p.inputs) > 4 and p.inputs[4] is not None
    steps = rw.list_attr_or_input(p, "steps", 4) if has_steps else [1]
    if dims is None or starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
        return None
    if axes not in (None, [0], [-1]) or steps != [1]:
        return None
    return dims[starts[0] : ends[0]]


_INT_OPS = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a // b,
}


def _scalar(rw: Rewriter, v: Value | None) -> Dim | None:
    """One shape entry: a constant, a dim of a tensor, or integer arithmetic on known sizes."""
    c = rw.const(v)
    if c is not None:
        return int(c.reshape(-1)[0]) if c.size == 1 and c.dtype.kind in "iu" else None
    p = rw.source(v, "Gather", "Squeeze", *_INT_OPS)
    if p is None:
        return None
    if p.op_type == "Gather":
        dims = _gather(rw, v)
        return dims[0] if dims is not None and len(dims) == 1 else None
    if p.op_type == "Squeeze":
        return _scalar(rw, p.inputs[0])
    a, b = (_scalar(rw, x) for x in p.inputs[:2])
    if not isinstance(a, int) or not isinstance(b, int) or a < 0 or b <= 0:
        return None  # only sizes: non-negative operands, where // and ONNX Div agree
    return _INT_OPS[p.op_type](a, b)


def _gather(rw: Rewriter, v: Value | None) -> list[Dim] | None:
    """Gather(Shape(t), const index) on axis 0 as dims of ``t``."""
    p = rw.source(v, "Gather")
    a = None if p is None else rw.attrs(p)
    if p is None or a is None or a.get("axis", 0) != 0 or len(p.inputs) < 2:
        return None
    dims = _shape_dims(rw, p.inputs[0])
    index = rw.const(p.inputs[1])
    if dims is None or index is None or index.ndim > 1 or index.dtype.kind not in "iu":
        return None
    picked = [int(i) for i in index.reshape(-1)]
    if not all(-len(dims) <= i < len(dims) for i in picked):
        return None
    return [dims[i] for i in picked]


def _shape_dims(rw: Rewriter, v: Value | None) -> list[Dim] | None:
    """``Shape(t)`` (with start/end) as the dims of ``t`` it holds: sizes where static."""
    p = rw.source(v, "Shape")
    shape = None if p is None else shape_of(p.inputs[0])
    if p is None or shape is None:
        return None
    a = rw.attrs(p)
    rank = len(shape)
    start = 0 if a is None else a.get("start", 0)
    end = rank if a is None or a.get("end") is None else a.get("end")
    start, end = (min(max(axis(i, rank), 0), rank) for i in (start, end))
    src = p.inputs[0]
    return [shape[k] if isinstance(shape[k], int) else (src, k) for k in range(start, end)]


def _static_shape_values(rw: Rewriter, node: Node) -> bool:
    """Shape(t) or Gather(Shape(t), i) whose dims are all static becomes a constant."""
    out = node.outputs[0]
    dims = _shape_dims(rw, out) if node.op_type == "Shape" else _gather(rw, out)
    if dims is None or not all(isinstance(d, int) for d in dims) or is_graph_output(rw.graph, out):
        return False
    array = np.array(dims, dtype=np.int64)
    if node.op_type == "Gather":
        array = array.reshape(rw.const(node.inputs[1]).shape)
    return rw.remove(node, rw.constant(out.name or "shape", array), f"static {node.op_type}")


RULES: dict[str, Rule] = {
    "Identity": _identity,
    "Dropout": _dropout,
    "Cast": _cast,
    "CastLike": _cast,
    "Reshape": _reshape,
    "Flatten": _same_shape,
    "Expand": _same_shape,
    "Squeeze": _squeeze_pair,
    "Unsqueeze": _squeeze_pair,
    "Transpose": _transpose,
    "Pad": _pad,
    "Slice": _slice,
    "Concat": _single_input,
    "Shape": _static_shape_values,
    "Gather": _static_shape_values,
    "Sum": _single_input,
    "Mean": _single_input,
    "Max": _single_input,
    "Min": _single_input,
    **{op: _arith for op in _NEUTRAL},
}


# ====================================================================== driver
@register_pass("simplify")
def simplify(graph: Graph) -> bool:
    """Remove no-op nodes and merge Transpose/Reshape/Cast/Squeeze chains to a fixed point."""
    names = NameGen(graph)
    opsets = graph.info.opset_imports if graph.info else {"": 0}
    not_const = overridable_inputs(graph)
    total: Counter[str] = Counter()
    for _ in range(_MAX_ROUNDS):
        infer_types(graph)
        counts: Counter[str] = Counter()
        _round(graph, names, opsets, not_const, counts)
        if not counts:
            break
        total.update(counts)
    for rule, n in sorted(total.items()):
        note(f"{rule}: {n}")
    return bool(total)


def _round(
    graph: Graph, names: NameGen, opsets: dict[str, int], not_const: set[int], counts: Counter[str]
) -> None:
    """One sweep over ``graph`` and its nested graphs."""
    rw = Rewriter(graph, names, opsets, not_const)
    rw.producer = {id(o): n for n in graph.nodes for o in n.outputs}
    for node in list(graph.nodes):
        if id(node) in rw.removed:
            continue
        for sg in node.subgraphs():
            _round(sg, names, opsets, not_const, counts)
        rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is not None and node.inputs and node.inputs[0] is not None:
            rule(rw, node)
    rw.drop_orphans()
    counts.update(rw.counts)
