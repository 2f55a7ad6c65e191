"""Copy reference kernels into an artifact so it runs without torsh-gen.

Ops without a fast emitter call their numpy reference kernel. The artifact gets copies
of the op-family modules those kernels live in (``DIR/_ref/ops/<family>.py``) and of
what they import from torsh-gen (the registry, IR types, errors), with every
``from torsh_gen.x import ...`` rewritten to a relative import of the local copy.
Modules that need onnx at import time are never copied; a lazy import of one (only
type inference uses them) is rewritten too and simply never runs.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from torsh_gen.errors import UnsupportedOpError

ROOT = "torsh_gen"
_HEAVY = ("onnx", "torch", "PIL")
_LOOKUP = re.compile(r"""\blookup\(\s*["']([A-Za-z0-9_]+)["']""")


def _source(module: str) -> tuple[str, Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise UnsupportedOpError(f"cannot find the source of {module} to vendor it")
    path = Path(spec.origin)
    return path.read_text(encoding="utf-8"), path


def _imports(tree: ast.Module) -> tuple[list[tuple[ast.ImportFrom, bool]], bool]:
    """torsh_gen imports (node, at module top level?) and whether heavy deps load at top."""
    found: list[tuple[ast.ImportFrom, bool]] = []
    top_ids = {id(n) for n in tree.body}
    heavy = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == ROOT:
                    raise UnsupportedOpError(f"cannot vendor 'import {a.name}'; use 'from ... import'")
                if id(node) in top_ids and a.name.split(".")[0] in _HEAVY:
                    heavy = True
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            head = node.module.split(".")[0]
            if head == ROOT:
                found.append((node, id(node) in top_ids))
            elif id(node) in top_ids and head in _HEAVY:
                heavy = True
    return found, heavy


def _targets(node: ast.ImportFrom) -> list[str]:
    """Modules an import statement needs: the module, or its named submodules."""
    mods = [node.module or ROOT]
    for a in node.names:
        sub = f"{node.module}.{a.name}"
        try:
            if importlib.util.find_spec(sub) is not None:
                mods.append(sub)
        except (ModuleNotFoundError, ValueError):
            pass
    return mods


def _lookup_modules(source: str) -> set[str]:
    """Modules defining ops that a kernel looks up by name at run time."""
    from torsh_gen.ops.registry import is_supported, lookup

    return {type(lookup(name)).__module__ for name in _LOOKUP.findall(source) if is_supported(name)}


def closure(modules: set[str]) -> dict[str, str]:
    """Every module to copy (name → source), following torsh_gen imports and op lookups."""
    todo = sorted(modules | {f"{ROOT}.ops.registry"})
    out: dict[str, str] = {}
    skipped: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in out or mod in skipped:
            continue
        src, _ = _source(mod)
        found, heavy = _imports(ast.parse(src))
        if heavy:
            skipped.add(mod)
            continue
        out[mod] = src
        for node, _top in found:
            for target in _targets(node):
                if target not in out and target != ROOT and _is_module_file(target):
                    todo.append(target)
        todo.extend(sorted(_lookup_modules(src) - set(out)))
    for mod, src in out.items():
        for node, top in _imports(ast.parse(src))[0]:
            if top and any(t in skipped for t in _targets(node)):
                raise UnsupportedOpError(f"{mod} needs {node.module} at import time, which needs onnx; its ops cannot run in an artifact")
    return out


def _is_module_file(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None and spec.origin.endswith(".py") and not spec.origin.endswith("__init__.py")


def rewrite(source: str, module: str) -> str:
    """``source`` of ``module`` with its torsh_gen imports made relative to the copy's folder."""
    depth = module.count(".") - 1  # torsh_gen.ops.nn → _ref/ops/nn.py: one folder below _ref
    dots = "." * (depth + 1)
    lines = source.splitlines(keepends=True)
    for node, _ in _imports(ast.parse(source))[0]:
        i = node.lineno - 1
        rel = (node.module or ROOT)[len(ROOT):].lstrip(".")
        new = f"from {dots}{rel} import" if rel else f"from {dots} import"
        old = re.compile(r"from\s+" + re.escape(node.module or ROOT) + r"\s+import")
        if not old.search(lines[i]):
            raise UnsupportedOpError(f"cannot rewrite an import in {module} (line {node.lineno})")
        lines[i] = old.sub(new, lines[i], count=1)
    return "".join(lines)


def vendor(dest: Path, modules: set[str]) -> list[str]:
    """Write the copies under ``dest`` (the artifact's ``_ref`` folder).

    Returns the op-family module names (``nn``, ``tensor``, ...) that register ops.
    """
    sources = closure(modules)
    folders = {dest}
    for mod in sorted(sources):
        parts = mod.split(".")[1:]
        path = dest.joinpath(*parts).with_suffix(".py")
        folders.update(p for p in path.parents if dest in p.parents or p == dest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rewrite(sources[mod], mod), encoding="utf-8")
    for folder in sorted(folders):
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text('"""Reference code vendored from torsh-gen (imports made local)."""\n', encoding="utf-8")
    return sorted(m.rsplit(".", 1)[1] for m in sources if m.startswith(f"{ROOT}.ops.") and m != f"{ROOT}.ops.registry")


