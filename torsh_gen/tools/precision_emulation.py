"""Emulating fp16/bf16 arithmetic in float32 onnxruntime, for measuring conversions.

Two graphs, both plain float32 ONNX that onnxruntime runs fast:

- ``emulate_low_precision(converted)``: a converted graph with one rounding per 16-bit
  node (the ONNX semantics), used to measure a conversion's error;
- ``Switchboard(float32_graph, candidates, low)``: the float32 graph with a rounding of
  every candidate node's float inputs and outputs that a boolean graph input turns on
  per node. Rounding is idempotent, so switching on a set of nodes computes what
  converting exactly that set computes (inputs rounded into the node, one rounding of its
  result), and ``mixed`` measures any choice of nodes with one ``run`` of one session
  instead of a conversion, an export and a session per trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen, replace_uses
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.precision import fixed_inputs

SWITCH_INPUT = "torsh_gen_precision_switch"


def emulate_low_precision(graph: Graph) -> Graph:
    """A float32 copy of ``graph`` whose fp16/bf16 values are float32 values rounded to that type.

    Every node that writes a 16-bit float value computes in float32 and its result goes
    through ``Cast(to=low) -> Cast(to=float)``: one rounding per node, which is what the
    ONNX semantics ask (each op's output is a 16-bit tensor), what the reference
    interpreter computes and what our compiled artifact's upcasting kernels do. It runs
    in onnxruntime for both types, unlike the real graph: onnxruntime's CPU provider has no
    bf16 kernels, and for fp16 it swaps in float32 kernels between inserted Casts that it
    then merges, so chains of nodes skip the intermediate roundings and under-report the
    error. Graph inputs and outputs must be float32 (the converted graphs' default).
    """
    g = load_onnx(to_onnx(graph).SerializeToString())
    names = NameGen(g)
    low = {id(v): v.type.dtype for v in g.values() if _is_low(v)}
    for v in g.initializers:
        if id(v) in low:
            v.const = v.const.astype(np.float32)
            v.type = TensorType(DType.FLOAT, v.type.shape)
    nodes = []
    for n in g.nodes:
        if n.op_type == "Cast" and id(n.outputs[0]) in low:
            n.attrs["to"] = Attribute(AttrKind.INT, int(DType.FLOAT))
            n.attrs.pop("saturate", None)
        nodes.append(n)
        for out in n.outputs:
            if id(out) not in low:
                continue
            t = out.type
            rounded = Value(out.name, TensorType(DType.FLOAT, t.shape))
            out.name = names.fresh(f"{out.name}_unrounded")
            out.type = TensorType(DType.FLOAT, t.shape)
            mid = Value(names.fresh(f"{rounded.name}_low"), TensorType(low[id(out)], t.shape))
            replace_uses(g, out, rounded)
            nodes.append(Node("Cast", [out], [mid], {"to": Attribute(AttrKind.INT, int(low[id(out)]))}, name=names.fresh("round")))
            nodes.append(Node("Cast", [mid], [rounded], {"to": Attribute(AttrKind.INT, int(DType.FLOAT))}, name=names.fresh("widen")))
    g.nodes = nodes
    return g


def _is_low(v: Value) -> bool:
    return isinstance(v.type, TensorType) and v.type.dtype in (DType.FLOAT16, DType.BFLOAT16)


def _cast(v: Value, to: DType, names: NameGen, hint: str) -> tuple[Node, Value]:
    out = Value(names.fresh(hint), TensorType(to, v.type.shape if isinstance(v.type, TensorType) else None))
    return Node("Cast", [v], [out], {"to": Attribute(AttrKind.INT, int(to))}, name=names.fresh("cast")), out


class Switchboard:
    """One onnxruntime session measuring any subset of ``candidates`` lowered to ``low``."""

    def __init__(self, graph: Graph, candidates: Sequence[str], low: DType) -> None:
        import onnxruntime as ort

        g = load_onnx(to_onnx(graph).SerializeToString())
        infer_types(g)
        self.candidates = list(candidates)
        index = {name: i for i, name in enumerate(self.candidates)}
        names = NameGen(g)
        switch = Value(SWITCH_INPUT, TensorType(DType.BOOL, (len(self.candidates),)))
        g.inputs.append(switch)
        nodes: list[Node] = []
        for n in g.nodes:
            j = index.get(n.name)
            if j is None:
                nodes.append(n)
                continue
            pos = Value(names.fresh(f"switch_{j}"), TensorType(DType.INT64, ()), const=np.array(j, np.int64))
            g.initializers.append(pos)
            on = Value(names.fresh(f"on_{j}"), TensorType(DType.BOOL, ()))
            nodes.append(Node("Gather", [switch, pos], [on], name=names.fresh("switch")))
            fixed = fixed_inputs(n.op_type)
            for i, v in enumerate(n.inputs):
                if v is not None and i not in fixed and _is_fp32(v):
                    n.inputs[i] = self._rounded(v, on, low, names, nodes)
            nodes.append(n)
            for o in n.outputs:
                if _is_fp32(o):
                    raw = Value(names.fresh(f"{o.name}_raw"), o.type)
                    n.outputs = [raw if x is o else x for x in n.outputs]
                    raw.producer = n
                    rounded = self._rounded(raw, on, low, names, nodes, out=o)
                    assert rounded is o
        g.nodes = nodes
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(to_onnx(g).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _rounded(v: Value, on: Value, low: DType, names: NameGen, nodes: list[Node], out: Value | None = None) -> Value:
        """``Where(on, float(low(v)), v)``: v rounded to ``low`` when the switch is on."""
        c1, narrow = _cast(v, low, names, f"{v.name}_low")
        c2, wide = _cast(narrow, DType.FLOAT, names, f"{v.name}_rounded")
        result = out or Value(names.fresh(f"{v.name}_switched"), v.type)
        nodes += [c1, c2, Node("Where", [on, wide, v], [result], name=names.fresh("where"))]
        return result

    def run(self, lowered: set[str], feeds: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Outputs with the nodes in ``lowered`` rounded, concatenated over ``feeds``."""
        switch = np.array([c in lowered for c in self.candidates], dtype=bool)
        runs = [self.session.run(self.outputs, {**feed, SWITCH_INPUT: switch}) for feed in feeds]
        return stack_outputs([dict(zip(self.outputs, r)) for r in runs])


def stack_outputs(per_feed: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Outputs of several feeds joined along axis 0 (0-d outputs stacked)."""
    out = {}
    for name in per_feed[0]:
        arrays = [np.asarray(r[name]) for r in per_feed]
        out[name] = np.concatenate([a.reshape(1, *a.shape) if a.ndim == 0 else a for a in arrays]) if len(arrays) > 1 else arrays[0]
    return out


def _is_fp32(v: Value) -> bool:
    return isinstance(v.type, TensorType) and v.type.dtype == DType.FLOAT
