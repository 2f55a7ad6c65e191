"""Integer fusion: quantized products become ``ai.torsh::QGemm``/``QConv`` (see
``ops/fused_quant.py``), so the compiled artifact multiplies int8 by int8 into int32.

Rewrites, in the top-level graph:

- QDQ: ``DQ(xq) → MatMul | Gemm | Conv (W = DQ(constant int8/uint8)) [→ Add bias]
  [→ Relu] → Q`` ⇒ ``QGemm``/``QConv`` producing the Q's output (requantized in the
  kernel); without a following Q the fused op dequantizes (float32 output);
- ``DQ → Flatten | Reshape | Transpose | Squeeze | Unsqueeze → Q`` with equal
  scale and zero point ⇒ the same op on the integers;
- weight-only int4: ``MatMul(A, DQ(int4/uint4 constant, block_size along K))`` ⇒
  ``Q4MatMul`` (float32 activations, weights dequantized in the kernel);
- QOperator: ``QLinearMatMul``, ``QLinearConv`` and onnxruntime's ``com.microsoft::QGemm``
  (alpha 1, transA 0) with a constant weight.

Activations must be quantized per tensor (scalar scale and zero point) and uint8 or int8;
weights per tensor or per output channel (``axis`` of the N or M dimension), no blocks.
A bias is a constant: DQ(int32) whose scale is x_scale * w_scale (used as is), or float
(then rounded to int32 in units of x_scale * w_scale, which needs a constant x_scale: off
by at most half a unit of the accumulator, far below one output step). Gemm qualifies with
alpha = beta = 1 and transA = 0 (transB = 1 stores W transposed). A step is taken only when
the value before it has no other reader and is not a graph output.

It runs first in O3: ``fold_constants`` would otherwise turn DQ(constant weight) into a
float32 weight and lose the integers. Dynamic quantization (DynamicQuantizeLinear →
MatMulInteger → Cast → Mul) keeps its standard ops: the backend runs MatMulInteger on
the integer kernel and fuses the float tail as an elementwise chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen, add_constant
from torsh_gen.ops.fused import DOMAIN
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.manager import register_pass
from torsh_gen.passes.matching import View, apply_fusions, op_is, other_input, tensor_type

_QTYPES = (np.dtype(np.uint8), np.dtype(np.int8))


@dataclass
class QPlan:
    """One quantized product and what runs in its epilogue."""

    anchor: Node
    conv: bool
    inputs: list[Value | None]  # x, xs, xz, w, ws, wz (w already in (K, N) / (M, ...) form)
    bias: np.ndarray | None = None  # int32 (quantized output) or float32 (float output)
    ys: Value | None = None
    yz: Value | None = None
    relu: bool = False
    out: Value | None = None
    nodes: list[Node] = field(default_factory=list)  # replaced besides the anchor


def _scalar_q(view: View, node: Node) -> bool:
    """True for a DQ/Q node with constant per-tensor scale and zero point."""
    s = view.const(node.inputs[1]) if len(node.inputs) > 1 else None
    z = node.inputs[2] if len(node.inputs) > 2 else None
    if (
        s is None
        or s.size != 1
        or (z is not None and (view.const(z) is None or view.const(z).size != 1))
    ):
        return False
    return int(node.attr("block_size", 0) or 0) == 0


def _act_dq(view: View, v: Value | None) -> Node | None:
    """The DequantizeLinear producing ``v`` from a per-tensor uint8/int8 activation."""
    dq = view.producer(v)
    if not op_is(dq, "DequantizeLinear") or not _scalar_q(view, dq):
        return None
    t = tensor_type(dq.inputs[0])
    return dq if t is not None and t.dtype.numpy in _QTYPES else None


def _weight_dq(
    view: View, v: Value | None, axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(w, scale, zero point) of a constant int8/uint8 weight dequantized per tensor or along
    ``axis`` (the output channel axis of the weight)."""
    dq = view.producer(v)
    if not op_is(dq, "DequantizeLinear") or int(dq.attr("block_size", 0) or 0):
        return None
    w = view.const(dq.inputs[0])
    s = view.const(dq.inputs[1])
    z = view.const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    if (
        w is None
        or s is None
        or w.dtype not in _QTYPES
        or (len(dq.inputs) > 2 and dq.inputs[2] is not None and z is None)
    ):
        return None
    z = np.zeros((), w.dtype) if z is None else z
    if s.size > 1:
        a = int(dq.attr("axis", 1))
        if (
            (a + w.ndim) % w.ndim != axis
            or s.ndim != 1
            or s.size != w.shape[axis]
            or z.size not in (1, s.size)
        ):
            return None
    elif z.size != 1:
        return None
    return w, s.astype(np.float32).reshape(-1), z.reshape(-1)


def _bias(view: View, v: Value | None) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A constant bias as (float32 values, int32 values with their scale or None)."""
    c = view.const(v)
    if c is not None:
        return c.astype(np.float32).reshape(-1), None
    dq = view.producer(v)
    if not op_is(dq, "DequantizeLinear"):
        return None
    q = view.const(dq.inputs[0])
    s = view.const(dq.inputs[1])
    z = view.const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    if q is None or s is None or q.dtype != np.int32 or (z is not None and np.any(z != 0)):
        return None
    deq = (q.astype(np.float32) * s.astype(np.float32)).astype(np.float32).reshape(-1)
    return deq, np.stack(
        [q.reshape(-1).astype(np.float64), np.broadcast_to(s.reshape(-1), q.reshape(-1).shape)]
    )


def _qdq_plan(view: View, node: Node) -> QPlan | None:
    """The QDQ product anchored at MatMul/Gemm/Conv ``node``, or None."""
    conv = op_is(node, "Conv")
    if not (conv or op_is(node, "MatMul", "Gemm")):
        return None
    dq = _act_dq(view, node.inputs[0])
    if dq is None:
        return None
    trans = False
    if op_is(node, "Gemm"):
        if (
            float(node.attr("alpha", 1.0)) != 1.0
            or int(node.attr("transA", 0))
            or float(node.attr("beta", 1.0)) != 1.0
        ):
            return None
        trans = bool(int(node.attr("transB", 0)))
    axis = 0 if conv or trans else 1
    wq = _weight_dq(view, node.inputs[1], axis)
    if wq is None:
        return None
    w, ws, wz = wq
    if not conv and w.ndim != 2:
        return None
    if trans:
        w = np.ascontiguousarray(w.T)
    x_zp = dq.inputs[2] if len(dq.inputs) > 2 else None
    plan = QPlan(node, conv, [dq.inputs[0], dq.inputs[1], x_zp, None, None, None])
    plan.inputs[3:] = [w, ws, wz]  # type: ignore[list-item]  (made constants later)
    y = node.outputs[0]
    bias = None
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = _bias(view, node.inputs[2])
        if bias is None:
            return None
    nxt = view.reader(y)
    if bias is None and not conv and op_is(nxt, "Add"):
        bias = _bias(view, other_input(nxt, y))
        t = tensor_type(nxt.outputs[0])
        if (
            bias is not None
            and bias[0].size == w.shape[1]
            and t is not None
            and t.shape == tensor_type(y).shape
        ):
            plan.nodes.append(nxt)
            y = nxt.outputs[0]
            nxt = view.reader(y)
        else:
            bias = None
    if op_is(nxt, "Relu"):
        plan.relu = True
        plan.nodes.append(nxt)
        y = nxt.outputs[0]
        nxt = view.reader(y)
    n_out = w.shape[0] if conv else w.shape[1]
    if op_is(nxt, "QuantizeLinear") and _scalar_q(view, nxt) and nxt.inputs[0] is y:
        out_dt = int(nxt.attr("output_dtype", 0) or 0)
        zt = (
            tensor_type(nxt.inputs[2])
            if len(nxt.inputs) > 2 and nxt.inputs[2] is not None
            else None
        )
        ot = tensor_type(nxt.outputs[0])
        if ot is not None and ot.dtype.numpy in _QTYPES and (zt is not None or out_dt == 0):
            if bias is not None:
                ib = _int_bias(view, plan, bias, ws, n_out)
                if ib is None:
                    return None
                plan.bias = ib
            plan.ys, plan.yz = nxt.inputs[1], (nxt.inputs[2] if len(nxt.inputs) > 2 else None)
            plan.nodes.append(nxt)
            plan.out = nxt.outputs[0]
            return plan
    if bias is not None:
        plan.bias = np.broadcast_to(bias[0], (n_out,)).astype(np.float32)
    plan.out = y
    return plan


def _int_bias(view: View, plan: QPlan, bias: tuple, ws: np.ndarray, n: int) -> np.ndarray | None:
    """The bias in int32 units of x_scale * w_scale (None when x_scale is not constant)."""
    xs = view.const(plan.inputs[1])
    if xs is None:
        return None
    unit = (np.float32(xs.reshape(())) * np.broadcast_to(ws, (n,))).astype(np.float32)
    if bias[1] is not None:
        q, s = bias[1]
        if q.size == n and np.allclose(s, unit, rtol=1e-6, atol=0):
            return q.astype(np.int32)
    vals = np.broadcast_to(bias[0], (n,)).astype(np.float64)
    return np.clip(np.rint(vals / unit.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)


def _ms_qgemm(view: View, node: Node) -> tuple[list, np.ndarray | None] | None:
    """com.microsoft QGemm as (QLinearMatMul-ordered inputs, int32 bias), or None."""
    if (
        node.op_type != "QGemm"
        or node.domain != "com.microsoft"
        or float(node.attr("alpha", 1.0)) != 1.0
    ):
        return None
    if int(node.attr("transA", 0)):
        return None
    ins = (node.inputs + [None] * 9)[:9]
    bias = None
    if ins[6] is not None:
        bias = view.const(ins[6])
        if bias is None or ins[7] is None or bias.dtype != np.int32 or bias.ndim > 1:
            return None
    w = view.const(ins[3])
    if w is None or w.ndim != 2:
        return None
    if int(node.attr("transB", 0)):
        w = np.ascontiguousarray(w.T)
    return [*ins[:3], w, ins[4], ins[5], ins[7], ins[8]], bias


def _qop_plan(view: View, node: Node) -> QPlan | None:
    """A QLinearMatMul/QLinearConv (or com.microsoft QGemm) with a constant weight, or None."""
    conv = op_is(node, "QLinearConv")
    ms = _ms_qgemm(view, node)
    if not (conv or ms or op_is(node, "QLinearMatMul")):
        return None
    x, xs, xz, wv, wsv, wzv, ys, yz = ms[0] if ms else (node.inputs + [None] * 9)[:8]
    w = wv if ms else view.const(wv)
    ws, wz = view.const(wsv), view.const(wzv) if wzv is not None else np.zeros((), np.uint8)
    if w is None or ws is None or wz is None or w.dtype not in _QTYPES:
        return None
    if not conv and w.ndim != 2:
        return None
    xt = tensor_type(x)
    if (
        xt is None
        or xt.dtype.numpy not in _QTYPES
        or view.const(xs) is None
        or view.const(xs).size != 1
    ):
        return None
    n_out = w.shape[0] if conv else w.shape[1]
    if ws.size not in (1, n_out) or wz.size not in (1, n_out):
        return None
    params = [x, xs, xz, w, ws.astype(np.float32).reshape(-1), wz.reshape(-1)]
    plan = QPlan(node, conv, params)  # type: ignore[arg-type]
    if conv and len(node.inputs) > 8 and node.inputs[8] is not None:
        b = view.const(node.inputs[8])
        if b is None:
            return None
        plan.bias = b.astype(np.int32).reshape(-1)
    if ms and ms[1] is not None:
        plan.bias = np.broadcast_to(ms[1].reshape(-1), (n_out,)).astype(np.int32)
    plan.ys, plan.yz, plan.out = ys, yz, node.outputs[0]
    return plan


def _fused(graph: Graph, names: NameGen, plan: QPlan) -> Node:
    """The QGemm/QConv node of ``plan`` (new constants for weight, scales, bias)."""
    hint = plan.anchor.name or plan.anchor.op_type
    x, xs, xz, w, ws, wz = plan.inputs
    consts = [
        add_constant(graph, names, f"{hint}_{k}", np.ascontiguousarray(a))
        for k, a in (("w", w), ("w_scale", ws), ("w_zp", wz))
    ]
    bias = (
        None
        if plan.bias is None
        else add_constant(graph, names, f"{hint}_bias", np.ascontiguousarray(plan.bias))
    )
    inputs = [x, xs, xz, *consts, bias]
    if plan.ys is not None:
        inputs += [plan.ys, plan.yz]
    while inputs and inputs[-1] is None:
        inputs.pop()
    attrs: dict[str, Attribute] = {}
    if plan.conv:
        attrs = {
            k: a
            for k, a in plan.anchor.attrs.items()
            if k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
        }
    if plan.relu:
        attrs["activation"] = Attribute(AttrKind.STRING, "Relu")
    op_type = "QConv" if plan.conv else "QGemm"
    return Node(
        op_type, inputs, [plan.out], attrs, DOMAIN, names.fresh(f"{hint}_{op_type.lower()}")
    )


#: Ops that only move values: between DQ and Q with the same scale and zero point they
#: give the same integers when run on the integers. (MaxPool would too, DQ being monotonic,
#: but the backend's fast MaxPool is float32: DQ → MaxPool → Q is faster as it is.)
_MOVES = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")


def _same_q(view: View, dq: Node, q: Node) -> bool:
    """True when DQ and Q use equal constant per-tensor scale and zero point."""
    if not (_scalar_q(view, dq) and _scalar_q(view, q)):
        return False
    zd = dq.inputs[2] if len(dq.inputs) > 2 else None
    zq = q.inputs[2] if len(q.inputs) > 2 else None
    if zd is None or zq is None:
        return zd is None and zq is None
    a, b = view.const(zd), view.const(zq)
    if a.dtype != b.dtype or int(q.attr("output_dtype", 0) or 0):
        return False
    return bool(a.reshape(()) == b.reshape(())) and bool(
        view.const(dq.inputs[1]).reshape(()) == view.const(q.inputs[1]).reshape(())
    )


def _move_plan(view: View, node: Node) -> tuple[Node, list[Node]] | None:
    """``DQ → MaxPool/Flatten/Reshape/... → Q`` (same parameters) as the move on integers."""
    if not op_is(node, *_MOVES) or len(node.outputs) != 1:
        return None
    dq = _act_dq(view, node.inputs[0])
    q = view.reader(node.outputs[0])
    if (
        dq is None
        or not op_is(q, "QuantizeLinear")
        or q.inputs[0] is not node.outputs[0]
        or not _same_q(view, dq, q)
    ):
        return None
    moved = Node(
        node.op_type,
        [dq.inputs[0], *node.inputs[1:]],
        [q.outputs[0]],
        dict(node.attrs),
        node.domain,
        node.name,
    )
    return moved, [node, q]


def _const_or_cast(view: View, v: Value | None) -> np.ndarray | None:
    """A constant, or a Cast of one (float16 scales are often stored so)."""
    c = view.const(v)
    if c is not None:
        return c
    p = view.producer(v)
    if op_is(p, "Cast") and view.const(p.inputs[0]) is not None:
        t = tensor_type(p.outputs[0])
        return None if t is None else view.const(p.inputs[0]).astype(t.dtype.numpy)
    return None


def _int4_plan(view: View, node: Node, names: NameGen, graph: Graph) -> Node | None:
    """``MatMul(A float32, DQ(int4/uint4 constant W (K, N), block_size along K))`` as
    ``ai.torsh::Q4MatMul`` (the weights kept as int8 values), or None."""
    if not op_is(node, "MatMul"):
        return None
    dq = view.producer(node.inputs[1])
    if not op_is(dq, "DequantizeLinear") or tensor_type(node.inputs[0]) is None:
        return None
    bs = int(dq.attr("block_size", 0) or 0)
    w = view.const(dq.inputs[0])
    s = _const_or_cast(view, dq.inputs[1])
    zv = dq.inputs[2] if len(dq.inputs) > 2 else None
    z = view.const(zv) if zv is not None else None
    if bs <= 0 or w is None or s is None or w.ndim != 2 or w.dtype.name not in ("int4", "uint4"):
        return None
    if (int(dq.attr("axis", 1)) + 2) % 2 != 0 or (zv is not None and z is None):
        return None
    if tensor_type(node.inputs[0]).dtype.numpy != np.float32 or s.shape != (
        -(-w.shape[0] // bs),
        w.shape[1],
    ):
        return None
    hint = node.name or "matmul"
    inputs = [
        node.inputs[0],
        add_constant(graph, names, f"{hint}_w4", w.astype(np.int8)),
        add_constant(graph, names, f"{hint}_s4", s.astype(np.float32)),
    ]
    if z is not None:
        inputs.append(add_constant(graph, names, f"{hint}_z4", z.astype(np.int8)))
    attrs = {"block_size": Attribute(AttrKind.INT, bs)}
    return Node("Q4MatMul", inputs, [node.outputs[0]], attrs, DOMAIN, names.fresh(f"{hint}_q4"))


@register_pass("fuse_quant", custom_ops=True)
def fuse_quant(graph: Graph) -> bool:
    """Fuse quantized MatMul/Gemm/Conv (QDQ and QOperator) into integer ai.torsh ops."""
    infer_types(graph)
    view = View(graph)
    names = NameGen(graph)
    rewrites = []
    taken: set[int] = set()
    counts: dict[str, int] = {}
    for node in list(graph.nodes):
        if id(node) in taken:
            continue
        move = _move_plan(view, node)
        if move is not None:
            taken.update(id(n) for n in move[1])
            rewrites.append((move[1][-1], [move[0]], move[1]))
            counts[f"{node.op_type} on integers"] = counts.get(f"{node.op_type} on integers", 0) + 1
            continue
        q4 = _int4_plan(view, node, names, graph)
        if q4 is not None:
            rewrites.append((node, [q4], [node]))
            counts["Q4MatMul (int4 weights)"] = counts.get("Q4MatMul (int4 weights)", 0) + 1
            continue
        plan = _qop_plan(view, node) or _qdq_plan(view, node)
        if plan is None or any(id(n) in taken for n in plan.nodes):
            continue
        fused = _fused(graph, names, plan)
        removed = [plan.anchor, *plan.nodes]
        taken.update(id(n) for n in removed)
        rewrites.append((removed[-1], [fused], removed))
        out = "quantized" if plan.ys is not None else "float"
        key = f"{fused.op_type}({out} output{', Relu' if plan.relu else ''})"
        counts[key] = counts.get(key, 0) + 1
    return apply_fusions(graph, rewrites, counts)
