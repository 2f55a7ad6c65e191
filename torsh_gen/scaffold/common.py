"""What every scaffold generator shares: templates, safe names, the model signature, atomic output.

Generators render a folder of jinja templates (``templates/<generator>/``) into a project.
Model-derived strings are untrusted: they reach generated files only through the escapers
here (a Python string literal, a Markdown code span, a proto/Python identifier), never raw.
Output is written to a temporary folder beside the destination and renamed at the end, so
an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import functools
import json
import keyword
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from torsh_gen.backends.python.formatting import format_code
from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import TensorType


@functools.cache
def environment(generator: str) -> jinja2.Environment:
    """The jinja environment of ``templates/<generator>/`` (StrictUndefined, no autoescape)."""
    try:
        loader: jinja2.BaseLoader = jinja2.PackageLoader("torsh_gen.templates", generator)
    except (ModuleNotFoundError, ValueError):
        loader = jinja2.FileSystemLoader(Path(__file__).resolve().parents[2] / "templates" / generator)
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["pystr"] = py_string
    env.filters["mdcode"] = markdown_code
    env.filters["json"] = lambda v: json.dumps(v, sort_keys=True)
    return env


def render(generator: str, template: str, **values: Any) -> str:
    """Render one template; ``.py`` results are black-formatted."""
    text = environment(generator).get_template(template).render(**values)
    if template.removesuffix(".j2").endswith(".py"):
        text = format_code(text)
    return text


def py_string(value: str) -> str:
    """``value`` as a Python string literal that is pure ASCII (safe anywhere in code)."""
    return ascii(str(value))


def markdown_code(value: str) -> str:
    """``value`` as inline Markdown code: one line, no backticks that could close the span."""
    text = ascii(str(value))[1:-1].replace("`", "\\x60")
    return f"`{text}`"


_IDENT_CHARS = re.compile(r"[^0-9A-Za-z_]+")


def identifier(name: str, taken: set[str] | None = None, fallback: str = "x", reserved: frozenset[str] = frozenset()) -> str:
    """A valid, non-keyword ASCII identifier derived from ``name``, unique in ``taken`` (updated).

    Works for Python, proto and most languages: letters, digits and ``_``, not starting with a
    digit, no Python keyword, lower-cased collisions avoided.
    """
    base = _IDENT_CHARS.sub("_", name.encode("ascii", "ignore").decode()).strip("_")[:40] or fallback
    if base[0].isdigit():
        base = f"{fallback}_{base}"
    if keyword.iskeyword(base) or keyword.issoftkeyword(base) or base in reserved:
        base = f"{base}_"
    used = taken if taken is not None else set()
    candidate, n = base, 1
    while candidate.lower() in {u.lower() for u in used}:
        n += 1
        candidate = f"{base}_{n}"
    used.add(candidate)
    return candidate


def package_name(stem: str) -> str:
    """A Python package name (lower-case identifier) from a file stem or user-given name."""
    return identifier(stem.lower(), fallback="model", reserved=frozenset({"test", "tests", "torch", "numpy", "onnx"}))


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model as generated code needs it.

    ``name`` is the model's own (untrusted) name, for wire formats and messages (always
    passed through an escaper); ``ident`` is a safe identifier for code.
    """

    name: str
    ident: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: tuple[int | str | None, ...] | None  # ints, symbolic names, None for unknown dims

    @property
    def batched(self) -> bool:
        """True when the first dim is symbolic (a batch dimension micro-batching can use)."""
        return bool(self.shape) and not isinstance(self.shape[0], int)


def signature(graph: Graph) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's inputs (initializers excluded) and outputs, with unique safe identifiers."""
    taken: set[str] = set()

    def spec(value: Any) -> TensorSpec:
        t = value.type
        if not isinstance(t, TensorType):
            raise InputError(f"{value.name!r} is not a tensor ({t}); scaffolds support tensor inputs and outputs only")
        shape = None if t.shape is None else tuple(d if isinstance(d, (int, str)) else None for d in t.shape)
        return TensorSpec(value.name, identifier(value.name, taken), t.dtype.numpy.name, shape)

    inputs = [spec(v) for v in graph.inputs if not v.is_const]
    outputs = [spec(v) for v in graph.outputs]
    return inputs, outputs


def check_destination(out: Path, force: bool) -> None:
    """Refuse an existing destination unless ``force``."""
    if out.exists() and not force:
        raise InputError(f"{out} already exists; choose another folder or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another output folder")


@contextmanager
def atomic_folder(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, else it is removed."""
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "x")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_tree(root: Path, files: dict[str, str | bytes], mode: Callable[[str], int] | None = None) -> None:
    """Write ``files`` (relative path → text or bytes) under ``root`` in sorted order."""
    for rel in sorted(files):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = files[rel]
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8", newline="\n")
        else:
            path.write_bytes(data)
        if mode is not None:
            path.chmod(mode(rel))


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """An .npz archive of ``arrays`` that is byte-identical for equal data.

    ``np.savez`` stamps each member with the current time; here members are stored
    uncompressed (zlib output can change between versions), in sorted order, with a fixed
    1980-01-01 timestamp and mode 0644. Object arrays are refused (they would need pickle).
    """
    import io
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def default_folder_mode(root: Path) -> None:
    """Give ``root`` (an ``atomic_folder`` made by mkdtemp, mode 0700) the mode a plain
    ``mkdir`` would have under the current umask, so generated projects are not private."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
