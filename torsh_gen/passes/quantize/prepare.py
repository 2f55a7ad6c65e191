"""Float-to-float rewrites that give quantization a form it can use.

``split_gemm``: the QOperator form has no standard integer Gemm, so a Gemm with a constant
weight becomes MatMul (weight pre-transposed, alpha folded in) + Add (beta * C). It runs
before calibration, so the MatMul's own output gets a calibrated range. Exact in float
up to the rounding of alpha * B and beta * C.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen, add_constant
from torsh_gen.ir.types import DType, TensorType, tensor_type_of

#: graph.meta key: names of the MatMuls that ``split_gemm`` made from Gemms.
SPLIT_GEMMS = "quantize.split_gemm"


def split_gemm(graph: Graph) -> list[str]:
    """Rewrite every Gemm with transA=0 and constant B (and C) as MatMul + Add; names changed."""
    names = NameGen(graph)
    changed: list[str] = []
    out: list[Node] = []
    for node in graph.nodes:
        if not _splittable(node):
            out.append(node)
            continue
        w = node.inputs[1].const.astype(np.float32) * np.float32(node.attr("alpha", 1.0))
        if node.attr("transB", 0):
            w = np.ascontiguousarray(w.T)
        wv = _replacement(graph, names, node.inputs[1], "_t" if node.attr("transB", 0) else "_a", w)
        y = node.outputs[0]
        c = node.inputs[2] if len(node.inputs) > 2 else None
        # the MatMul takes over the Gemm's name, so reports and --include/--exclude still
        # find it; graph.meta remembers it was a Gemm (for op-type selection)
        base = node.name or names.fresh(f"{y.name}_gemm")
        if c is None:
            out.append(Node("MatMul", [node.inputs[0], wv], [y], name=base))
        else:
            t = y.type if isinstance(y.type, TensorType) else TensorType(DType.FLOAT)
            mid = Value(names.fresh(f"{y.name}_mm"), t)
            out.append(Node("MatMul", [node.inputs[0], wv], [mid], name=base))
            beta = np.float32(node.attr("beta", 1.0))
            cv = _replacement(graph, names, c, "_b", c.const.astype(np.float32) * beta)
            out.append(Node("Add", [mid, cv], [y], name=names.fresh(f"{base}_add")))
        graph.meta.setdefault(SPLIT_GEMMS, set()).add(base)
        changed.append(base)
    graph.nodes = out
    used = {id(v) for n in graph.nodes for v in n.inputs if v is not None} | {
        id(v) for v in graph.outputs
    }
    graph.initializers = [v for v in graph.initializers if id(v) in used]
    return changed


def _replacement(graph: Graph, names: NameGen, old: Value, suffix: str, array: np.ndarray) -> Value:
    """A constant standing for ``old``: under ``old``'s own name when nothing else reads it."""
    uses = sum(1 for _, n in graph.walk() for i in n.inputs if i is old)
    sole = uses == 1 and not any(old is o for o in graph.outputs)
    if sole and any(old is i for i in graph.initializers):
        graph.initializers = [i for i in graph.initializers if i is not old]
        v = Value(old.name, tensor_type_of(array), const=array)
        graph.initializers.append(v)
        return v
    return add_constant(graph, names, old.name + suffix, array)


def _splittable(node: Node) -> bool:
    if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or node.attr("transA", 0):
        return False
    b = node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    return (
        b is not None
        and b.const is not None
        and b.const.dtype == np.float32
        and (c is None or c.const is not None)
    )
