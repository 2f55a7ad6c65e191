"""DESIGN rule 3: imports go one way, down the data flow.

cli → tools → scaffold → backends → passes → ops → ir (frontends beside backends, over ops
and ir). A module may import its own layer and the layers below it, never above.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "torsh_gen"

# layer → layers it may import (besides itself); errors and __init__ are shared roots.
ALLOWED = {
    "ir": set(),
    "ops": {"ir"},
    "passes": {"ops", "ir"},
    "frontends": {"ops", "ir"},
    "backends": {"passes", "ops", "ir"},
    "scaffold": {"backends", "passes", "ops", "ir"},
    "tools": {"scaffold", "backends", "frontends", "passes", "ops", "ir", "backend"},
    "cli": {"tools", "scaffold", "backends", "frontends", "passes", "ops", "ir", "backend"},
}
ROOTS = {"errors", "__init__", "backend"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "torsh_gen" or len(parts) < 2:
        return None
    return parts[1]


def test_imports_go_down_the_data_flow():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        own = _layer(".".join(rel.parts))
        if own not in ALLOWED:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                target = _layer(name)
                if target is None or target == own or target in ROOTS and own in ("tools", "cli"):
                    continue
                if target in ROOTS - {"backend"}:
                    continue
                if target not in ALLOWED[own]:
                    bad.append(f"{rel}: imports {name} ({own} → {target})")
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)
