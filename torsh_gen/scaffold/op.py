"""``scaffold op``: a plugin package that adds one custom operator to torsh-gen.

The package registers its op through the ``torsh_gen.ops`` entry point (see
``torsh_gen.ops.plugins``), so once installed, ``inspect``, ``run`` and ``compile`` accept
models that use it. It holds the op's schema and shape rule (``spec.py``, the only module
that imports torsh-gen), a numpy reference kernel (``reference.py``) and a numba kernel
(``kernels.py``) that compiled artifacts import and call. Both kernels start out computing
the same working example, ``y = x * sigmoid(alpha * x)``, and the generated tests compare
them, so a user who edits one and not the other sees a failing test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torsh_gen.errors import InputError
from torsh_gen.scaffold.common import atomic_folder, default_folder_mode, render, write_tree

GENERATOR = "scaffold_op"
_OP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_DOMAIN = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")
#: Domains of the built-in ops: a plugin must not add ops to them.
RESERVED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training", "ai.torsh"})
DEFAULT_DOMAIN = "com.example"


@dataclass(frozen=True)
class OpNames:
    """Every name the generated package uses, derived from the op name and domain."""

    op_type: str  # the ONNX op type models use, e.g. "MyGelu"
    domain: str  # e.g. "com.example"
    snake: str  # "my_gelu": entry-point name and file stem
    package: str  # "torsh_op_my_gelu": the import name
    distribution: str  # "torsh-op-my-gelu": the pip name
    spec_class: str  # "MyGeluOp"


def op_names(name: str, domain: str = DEFAULT_DOMAIN) -> OpNames:
    """Check ``name`` and ``domain`` and derive the package's names from them."""
    if not _OP_NAME.fullmatch(name or ""):
        raise InputError(
            f"op name {name!r} is not usable: use letters, digits and underscores, starting "
            "with a letter (at most 64 characters), e.g. MyGelu"
        )
    if not _DOMAIN.fullmatch(domain or "") or len(domain) > 128:
        raise InputError(
            f"domain {domain!r} is not usable: use dot-separated names of letters, digits and "
            "underscores, e.g. com.example"
        )
    if domain in RESERVED_DOMAINS:
        raise InputError(f"domain {domain!r} belongs to the built-in ops; choose your own, e.g. com.example")
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    snake = re.sub(r"_+", "_", snake).strip("_")
    return OpNames(name, domain, snake, f"torsh_op_{snake}", f"torsh-op-{snake.replace('_', '-')}", f"{name}Op")


def generate_op(name: str, out: str | Path, *, domain: str = DEFAULT_DOMAIN, force: bool = False) -> list[str]:
    """Write the plugin package for op ``name`` into ``out``; returns the files written."""
    names = op_names(name, domain)
    files = render_op(names)
    with atomic_folder(Path(out), force) as tmp:
        write_tree(tmp, files)
        default_folder_mode(tmp)
    return sorted(files)


def render_op(names: OpNames) -> dict[str, str]:
    """The plugin package's files (relative path → text)."""
    pkg = names.package
    values = {"n": names}
    return {
        "pyproject.toml": render(GENERATOR, "pyproject.toml.j2", **values),
        "README.md": render(GENERATOR, "README.md.j2", **values),
        f"{pkg}/__init__.py": render(GENERATOR, "__init__.py.j2", **values),
        f"{pkg}/reference.py": render(GENERATOR, "reference.py.j2", **values),
        f"{pkg}/kernels.py": render(GENERATOR, "kernels.py.j2", **values),
        f"{pkg}/spec.py": render(GENERATOR, "spec.py.j2", **values),
        f"tests/test_{names.snake}.py": render(GENERATOR, "test_op.py.j2", **values),
    }
