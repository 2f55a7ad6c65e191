"""BatchNorm folding: fold inference BatchNormalization into the producer's weights.

Preconditions: none (runs type inference itself). A BatchNormalization in inference mode
(``training_mode`` 0, only its first output used) whose four parameters are constants
(1-D, one per channel) and whose input is read by nothing else is folded into:

- Conv: ``W'[m] = W[m]·s[m]``, ``B' = B·s + t`` (a bias is added when there was none);
- ConvTranspose: output channel ``g·(M/g) + j`` is column ``j`` of group ``g``'s weights;
- Gemm (transB 0 or 1): the output columns of B and the bias ``C`` (``beta`` becomes 1);
- MatMul with a constant 2-D weight and a 2-D output, optionally followed by a constant
  bias Add: the weight's columns, and the Add's bias (a new Add when there is none),

where ``s = scale / sqrt(var + eps)`` and ``t = bias - mean·s``, computed in float64 and
cast back to the weights' dtype (float16 included). The weights get new initializers, so
weights shared with other nodes stay intact; dead-code elimination drops the old ones.
Any other BatchNormalization stays as it is. The BN's output value (and so its name,
when it is a graph output) is kept.

The same folding applies to ``Mul`` and ``Add`` by a constant that varies only along the
channel axis (``(C, 1, 1)`` after a Conv, ``(N,)`` after a Gemm): Caffe2-converted models
(inception_v2, densenet121) spell the BatchNorm affine step that way.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen, add_constant, bypass, is_graph_output, use_counts
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.manager import note, register_pass
from torsh_gen.passes.rewriter import Rewriter, overridable_inputs, shape_of, tensor_type

_FOLDABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")


@register_pass("fold_batchnorm")
def fold_batchnorm(graph: Graph) -> bool:
    """Fold inference BatchNorm (and per-channel Mul/Add) into Conv/Gemm/MatMul weights."""
    infer_types(graph)
    names = NameGen(graph)
    opsets = graph.info.opset_imports if graph.info else {"": 0}
    folded: Counter[str] = Counter()
    _fold_graph(graph, names, opsets, overridable_inputs(graph), folded)
    for op_type, n in sorted(folded.items()):
        note(
            f"folded {n} {op_type} nodes"
            + ("" if op_type == "BatchNormalization" else " (per channel)")
        )
    return bool(folded)


def _fold_graph(
    graph: Graph, names: NameGen, opsets: dict[str, int], not_const: set[int], folded: Counter[str]
) -> None:
    rw = Rewriter(graph, names, opsets, not_const)
    rw.producer = {id(o): n for n in graph.nodes for o in n.outputs}
    uses = use_counts(graph)
    for node in list(graph.nodes):
        for sg in node.subgraphs():
            _fold_graph(sg, names, opsets, not_const, folded)
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "BatchNormalization":
            x, params = node.inputs[0], _bn_params(rw, node, uses)
            prod = rw.source(x, *_FOLDABLE)
        elif node.op_type in ("Mul", "Add"):
            x, params = _affine_params(rw, node)
            prod = rw.source(x, "Conv", "ConvTranspose", "Gemm")
        else:
            continue
        if params is None or prod is None or uses.get(id(x), 0) != 1 or is_graph_output(graph, x):
            continue
        if _fold_into(rw, prod, node, *params):
            folded[node.op_type] += 1
            rw.producer = {id(o): n for n in graph.nodes for o in n.outputs}
            uses = use_counts(graph)


def _affine_params(rw: Rewriter, node: Node) -> tuple[Value | None, tuple | None]:
    """(x, (s, t)) for ``x * c`` or ``x + c`` with ``c`` a constant per channel of axis 1."""
    if len(node.inputs) != 2 or None in node.inputs:
        return None, None
    for side in (0, 1):
        x, c = node.inputs[side], rw.const(node.inputs[1 - side])
        shape = shape_of(x)
        if c is None or shape is None or len(shape) < 2 or c.dtype.kind != "f":
            continue
        if c.ndim > len(shape) or not isinstance(shape[1], int):
            continue
        full = (1,) * (len(shape) - c.ndim) + c.shape
        if any(d != 1 for i, d in enumerate(full) if i != 1) or full[1] not in (1, shape[1]):
            continue  # c must vary along the channel axis only, and broadcast to nothing new
        vec = np.broadcast_to(c.reshape(-1).astype(np.float64), (shape[1],))
        if node.op_type == "Mul":
            return x, (vec, np.zeros(shape[1]))
        return x, (np.ones(shape[1]), vec)
    return None, None


def _bn_params(
    rw: Rewriter, node: Node, uses: dict[int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) in float64 such that ``BN(x) = x·s + t`` per channel, or None if not foldable."""
    a = rw.attrs(node)
    if a is None or a.get("training_mode", 0) or len(node.inputs) != 5:
        return None
    if any(o.name and uses.get(id(o), 0) for o in node.outputs[1:]):
        return None  # running statistics are read: this is a training graph
    scale, bias, mean, var = (rw.const(v) for v in node.inputs[1:])
    params = (scale, bias, mean, var)
    if any(p is None or p.ndim != 1 or p.dtype.kind != "f" for p in params):
        return None
    if len({p.shape for p in params}) != 1:
        return None
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    s = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
    return s, bias - mean * s


def _fold_into(rw: Rewriter, prod: Node, bn: Node, s: np.ndarray, t: np.ndarray) -> bool:
    """Rewrite ``prod`` to compute BN(prod(...)) and drop ``bn``."""
    if prod.op_type in ("Conv", "ConvTranspose"):
        ok = _conv(rw, prod, s, t)
    elif prod.op_type == "Gemm":
        ok = _gemm(rw, prod, s, t)
    elif prod.op_type == "MatMul":
        return _matmul(rw, prod, bn, s, t)
    else:
        return _matmul_add(rw, prod, bn, s, t)
    if not ok:
        return False
    return bypass(rw.graph, bn, prod.outputs[0])


def _new_weight(rw: Rewriter, hint: str, array: np.ndarray, dtype: np.dtype) -> Value:
    return add_constant(rw.graph, rw.names, f"{hint}_bnfold", array.astype(dtype))


def _conv(rw: Rewriter, conv: Node, s: np.ndarray, t: np.ndarray) -> bool:
    w = rw.const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if w is None or w.dtype.kind != "f" or w.ndim < 3:
        return False
    b_v = conv.inputs[2] if len(conv.inputs) > 2 else None
    b = None if b_v is None else rw.const(b_v)
    if b_v is not None and b is None:
        return False
    a = rw.attrs(conv)
    group = 1 if a is None else int(a.get("group", 1))
    w64 = w.astype(np.float64)
    if conv.op_type == "Conv":
        if w.shape[0] != s.size:
            return False
        w64 = w64 * s.reshape((-1,) + (1,) * (w.ndim - 1))
    else:  # ConvTranspose: weights (C_in, M/g, k...), output channel = g·(M/g) + j
        per_group = w.shape[1]
        if per_group * group != s.size or w.shape[0] % group:
            return False
        grouped = w64.reshape((group, w.shape[0] // group) + w.shape[1:])
        grouped = grouped * s.reshape((group, 1, per_group) + (1,) * (w.ndim - 2))
        w64 = grouped.reshape(w.shape)
    bias = t if b is None else b.astype(np.float64) * s + t
    new_w = conv.inputs[1] if np.all(s == 1) else _new_weight(rw, conv.inputs[1].name, w64, w.dtype)
    hint = f"{conv.inputs[1].name}_bias" if b_v is None else b_v.name
    new_b = _new_weight(rw, hint, bias, w.dtype if b is None else b.dtype)
    conv.inputs = [conv.inputs[0], new_w, new_b]
    return True


def _gemm(rw: Rewriter, gemm: Node, s: np.ndarray, t: np.ndarray) -> bool:
    a = rw.attrs(gemm)
    w = rw.const(gemm.inputs[1])
    if a is None or w is None or w.ndim != 2 or w.dtype.kind != "f":
        return False
    trans_b = int(a.get("transB", 0))
    if (w.shape[0] if trans_b else w.shape[1]) != s.size:
        return False
    c_v = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    c = None if c_v is None else rw.const(c_v)
    if c_v is not None and c is None:
        return False
    beta = float(a.get("beta", 1.0))
    w64 = w.astype(np.float64) * (s.reshape(-1, 1) if trans_b else s.reshape(1, -1))
    bias = t if c is None or beta == 0 else beta * c.astype(np.float64) * s + t
    new_w = gemm.inputs[1] if np.all(s == 1) else _new_weight(rw, gemm.inputs[1].name, w64, w.dtype)
    new_c = _new_weight(
        rw, c_v.name if c_v is not None else f"{gemm.inputs[1].name}_bias", bias, w.dtype
    )
    gemm.inputs = [gemm.inputs[0], new_w, new_c]
    gemm.attrs = {**gemm.attrs, "beta": Attribute(AttrKind.FLOAT, 1.0)}
    return True


def _matmul_weight(rw: Rewriter, mm: Node, s: np.ndarray) -> Value | None:
    """A new constant weight with columns scaled by ``s``, for a 2-D MatMul; else None."""
    w = rw.const(mm.inputs[1])
    out = shape_of(mm.outputs[0])
    if w is None or w.ndim != 2 or w.dtype.kind != "f" or w.shape[1] != s.size:
        return None
    if out is None or len(out) != 2:
        return None  # BN normalizes axis 1, the weight's columns only for 2-D outputs
    return _new_weight(rw, mm.inputs[1].name, w.astype(np.float64) * s.reshape(1, -1), w.dtype)


def _matmul(rw: Rewriter, mm: Node, bn: Node, s: np.ndarray, t: np.ndarray) -> bool:
    new_w = _matmul_weight(rw, mm, s)
    if new_w is None:
        return False
    bias = _new_weight(rw, f"{mm.inputs[1].name}_bias", t, new_w.const.dtype)
    mm.inputs = [mm.inputs[0], new_w]
    add = Node(
        "Add",
        [mm.outputs[0], bias],
        [bn.outputs[0]],
        name=rw.names.fresh(f"{bn.name or 'bn'}_bias"),
    )
    rw.graph.nodes = [add if n is bn else n for n in rw.graph.nodes]
    return True


def _matmul_add(rw: Rewriter, add: Node, bn: Node, s: np.ndarray, t: np.ndarray) -> bool:
    """MatMul → Add(constant bias) → BN: scale the weight, rewrite the bias."""
    if len(add.inputs) != 2:
        return False
    for side in (0, 1):
        y, c_v = add.inputs[side], add.inputs[1 - side]
        c = rw.const(c_v)
        mm = rw.source(y, "MatMul")
        if mm is None or c is None or c.dtype.kind != "f" or c.size not in (1, s.size):
            continue
        if c.ndim > 2 or (c.ndim >= 1 and c.shape[-1] != c.size):
            continue  # only biases along the columns: (N,), (1, N) or a scalar
        if use_counts(rw.graph).get(id(y), 0) != 1 or is_graph_output(rw.graph, y):
            continue
        new_w = _matmul_weight(rw, mm, s)
        if new_w is None:
            continue
        mm.inputs = [mm.inputs[0], new_w]
        bias = c.astype(np.float64).reshape(-1) * s + t
        add.inputs = [y, _new_weight(rw, c_v.name, bias, c.dtype)]
        return bypass(rw.graph, bn, add.outputs[0])
    return False


@register_pass("batchnorm_to_affine")
def batchnorm_to_affine(graph: Graph) -> bool:
    """Rewrite every inference BatchNorm left after folding as ``x·s + t`` (Mul, Add).

    What is left reads no Conv/Gemm output (DenseNet's pre-activation BatchNorms follow a
    Concat). Its emitter passes over the tensor three times and recomputes ``s`` on every
    call; as two standard ops with constant per-channel ``s`` and ``t`` (computed in
    float64, as folding does), elementwise fusion merges them with the Relu that follows
    into one pass. Needs opset 7 (multidirectional broadcasting).
    """
    infer_types(graph)
    opsets = graph.info.opset_imports if graph.info else {"": 0}
    if opsets.get("", opsets.get("ai.onnx", 0)) < 7:
        return False
    names = NameGen(graph)
    count = _to_affine(graph, names, opsets, overridable_inputs(graph))
    if count:
        note(f"rewrote {count} BatchNormalization nodes as Mul + Add")
    return bool(count)


def _to_affine(graph: Graph, names: NameGen, opsets: dict[str, int], not_const: set[int]) -> int:
    rw = Rewriter(graph, names, opsets, not_const)
    uses = use_counts(graph)
    count, nodes = 0, []
    for node in graph.nodes:
        for sg in node.subgraphs():
            count += _to_affine(sg, names, opsets, not_const)
        params = None
        if node.domain in ("", "ai.onnx") and node.op_type == "BatchNormalization":
            params = _bn_params(rw, node, uses)
        t = tensor_type(node.inputs[0]) if params is not None else None
        if t is None or len(t.shape) < 2 or t.dtype.numpy.kind != "f":
            nodes.append(node)
            continue
        s, b = params
        dt = t.dtype.numpy
        shape = (s.size,) + (1,) * (len(t.shape) - 2)
        hint = node.name or "batchnorm"
        scale = add_constant(graph, names, f"{hint}_s", s.reshape(shape).astype(dt))
        shift = add_constant(graph, names, f"{hint}_t", b.reshape(shape).astype(dt))
        mid = Value(names.fresh(f"{hint}_scaled"), t)
        nodes.append(Node("Mul", [node.inputs[0], scale], [mid], name=names.fresh(f"{hint}_mul")))
        nodes.append(Node("Add", [mid, shift], [node.outputs[0]], name=names.fresh(f"{hint}_add")))
        count += 1
    graph.nodes = nodes
    return count
