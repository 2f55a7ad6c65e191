"""A readable text form of the IR (``torsh-gen inspect --ir``).

    graph main  (opset ai.onnx 13)
      input  %x: float[1,3,224,224]
      weight %w: float[64,3,7,7]  37.6 KB
      %y: float[1,64,112,112] = Conv(%x, %w) {kernel_shape=[7,7], strides=[2,2]}  # conv1
      return %y

Model-derived names are shown quoted when they contain anything but plain identifier
characters, so a crafted name cannot forge lines of the listing.
"""

from __future__ import annotations

import re

import numpy as np

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value

_PLAIN = re.compile(r"^[A-Za-z0-9_.:/\-]+$")


def format_name(name: str) -> str:
    """``%name`` for plain names, ``%"..."`` with escapes for anything else."""
    if name and _PLAIN.match(name):
        return f"%{name}"
    return "%" + _quote(name)


def _quote(s: str) -> str:
    return '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def format_graph(graph: Graph, indent: int = 0, max_elements: int = 8) -> str:
    """The whole graph, nested graphs included, as text."""
    return "\n".join(_lines(graph, indent, max_elements)) + "\n"


def _lines(graph: Graph, indent: int, max_elements: int) -> list[str]:
    pad = "  " * indent
    head = f"{pad}graph {_quote(graph.name) if not _PLAIN.match(graph.name or '_') else graph.name}"
    if graph.info:
        ops = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(graph.info.opset_imports.items()))
        head += f"  (opset {ops})"
    out = [head]
    for v in graph.inputs:
        out.append(f"{pad}  input  {_typed(v)}")
    for v in graph.initializers:
        out.append(f"{pad}  weight {_typed(v)}  {_bytes(v.const.nbytes)}")
    for n in graph.nodes:
        out.extend(_node_lines(n, indent + 1, max_elements))
    out.append(f"{pad}  return " + ", ".join(format_name(v.name) for v in graph.outputs))
    return out


def _typed(v: Value) -> str:
    return f"{format_name(v.name)}: {v.type if v.type is not None else '?'}"


def _node_lines(n: Node, indent: int, max_elements: int) -> list[str]:
    pad = "  " * indent
    outs = ", ".join(_typed(v) if v.name else "_" for v in n.outputs)
    args = ", ".join("_" if v is None else format_name(v.name) for v in n.inputs)
    simple = {k: a for k, a in n.attrs.items() if a.kind not in (AttrKind.GRAPH, AttrKind.GRAPHS)}
    attrs = ", ".join(f"{k}={_attr(a, max_elements)}" for k, a in sorted(simple.items()))
    line = f"{pad}{outs} = {n.qualified_op}({args})"
    if attrs:
        line += " {" + attrs + "}"
    if n.name:
        line += f"  # {n.name if _PLAIN.match(n.name) else _quote(n.name)}"
    lines = [line]
    for k, a in sorted(n.attrs.items()):
        if a.kind == AttrKind.GRAPH:
            lines.append(f"{pad}  {k}:")
            lines.extend(_lines(a.value, indent + 2, max_elements))
        elif a.kind == AttrKind.GRAPHS:
            for i, g in enumerate(a.value):
                lines.append(f"{pad}  {k}[{i}]:")
                lines.extend(_lines(g, indent + 2, max_elements))
    return lines


def _attr(a: Attribute, max_elements: int) -> str:
    v = a.value
    if a.ref:
        return f"@{a.ref}"
    if a.kind == AttrKind.STRING:
        return _quote(v)
    if a.kind == AttrKind.STRINGS:
        return "[" + ", ".join(_quote(s) for s in v) + "]"
    if a.kind == AttrKind.TENSOR:
        arr = np.asarray(v)
        if arr.size <= max_elements and arr.dtype != object:
            return f"tensor({arr.dtype.name}{list(arr.shape)}: {arr.ravel().tolist()})"
        return f"tensor({arr.dtype.name}{list(arr.shape)})"
    if isinstance(v, list) and len(v) > max_elements:
        return "[" + ", ".join(map(str, v[:max_elements])) + f", ... ({len(v)} items)]"
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
