"""Rich rendering of command results (tables and the layer tree)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from torsh_gen.tools.inspect import human, human_bytes, summary_numbers

#: The layer tree prints at most this many lines unless --per-layer asks for all.
MAX_TREE_LINES = 80


def render_inspect(console: Console, report: dict[str, Any], per_layer: bool) -> None:
    """Summary, inputs/outputs, op histogram and the layer tree of an inspect report."""
    m = report["model"]
    opsets = ", ".join(f"{d} {v}" for d, v in m["opsets"].items())
    console.print(f"[bold]{escape(m['graph'])}[/]  IR {m['ir_version']}, opsets {escape(opsets)}, producer {escape(m['producer'] or '?')}")
    t = Table(show_header=False, box=None)
    for label, value in summary_numbers(report):
        t.add_row(label, value)
    for dtype, nbytes in report["weight_bytes_by_dtype"].items():
        t.add_row(f"  weights {dtype}", human_bytes(nbytes))
    console.print(t)
    io = Table("", "name", "dtype", "shape", title="inputs and outputs", title_justify="left")
    for kind, vals in (("in", report["inputs"]), ("out", report["outputs"])):
        for v in vals:
            io.add_row(kind, escape(v["name"]), str(v["dtype"]), _shape(v["shape"]))
    console.print(io)
    ops = Table("op", "count", title="ops", title_justify="left")
    for name, count in report["ops"].items():
        ops.add_row(escape(name), str(count))
    console.print(ops)
    if per_layer:
        layers = Table("node", "op", "output", "params", "MACs", title="per layer", title_justify="left")
        for n in report["nodes"]:
            out = n["outputs"][0] if n["outputs"] else {"dtype": "", "shape": None}
            layers.add_row(escape(n["name"] or out.get("name", "")), escape(n["op"]), f"{out['dtype']}{_shape(out['shape'])}", human(n["params"]), human(n["macs"]))
        console.print(layers)
    console.print(stage_table(report["stages"]))
    console.print(layer_tree(report["layers"], limit=None if per_layer else MAX_TREE_LINES))


def stage_table(stages: list[dict[str, Any]]) -> Table:
    """The outline: one row per run of nodes with the same output shape, top to bottom."""
    t = Table("output", "nodes", "ops", "params", "MACs", title="architecture (runs of equal output shape)", title_justify="left")
    for st in stages:
        ops = ", ".join(f"{escape(k)}×{v}" if v > 1 else escape(k) for k, v in st["ops"].items())
        t.add_row(f"{st['dtype']}{_shape(st['shape'])}", str(st["nodes"]), ops, human(st["params"]), human(st["macs"]))
    return t


def layer_tree(layers: dict[str, Any], limit: int | None) -> Tree:
    """The architecture as a tree: name, op, output shape, parameters and MACs per layer."""
    root = Tree(f"[bold]{escape(layers['name'])}[/]  {human(layers['params'])} params, {human(layers['macs'])} MACs")
    count = 0

    def add(parent: Tree, node: dict[str, Any]) -> None:
        nonlocal count
        for child in node.get("children", []):
            if limit is not None and count >= limit:
                return
            count += 1
            label = escape(child["name"])
            if child.get("op"):
                label += f"  [cyan]{escape(child['op'])}[/] {escape(child['shape'])}"
            if child["params"]:
                label += f"  {human(child['params'])} params"
            if child["macs"]:
                label += f"  {human(child['macs'])} MACs"
            add(parent.add(label), child)

    add(root, layers)
    if limit is not None and count >= limit:
        root.add("[dim]... (use --per-layer for all layers)[/]")
    return root


def render_outputs(console: Console, data: dict[str, Any]) -> None:
    """A table of outputs (dtype, shape, min/max/mean) and the onnxruntime comparison."""
    t = Table("output", "dtype", "shape", "min", "max", "mean")
    for name, s in data["outputs"].items():
        t.add_row(escape(name), s.get("dtype", ""), _shape(s.get("shape")), _num(s.get("min")), _num(s.get("max")), _num(s.get("mean")))
    console.print(t)
    cmp = data.get("onnxruntime")
    if cmp:
        c = Table("output", "max abs diff", "max rel diff", "within tolerance", title=f"vs onnxruntime {cmp['version']}", title_justify="left")
        for name, r in cmp["outputs"].items():
            c.add_row(escape(name), _num(r["max_abs_diff"]), _num(r["max_rel_diff"]), "yes" if r["match"] else "[red]NO[/]")
        console.print(c)


def _shape(shape: Any) -> str:
    """A shape for a rich table cell (escaped: ``[s77,3]`` would otherwise read as markup)."""
    if shape is None:
        return escape("[*]")
    return escape("[" + ",".join("?" if d is None else str(d) for d in shape) + "]")


def _num(x: Any) -> str:
    return "" if x is None else f"{x:.6g}"
