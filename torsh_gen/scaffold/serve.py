"""Generate a REST (FastAPI) or gRPC service project around one model.

``generate_service(model, out, kind=...)`` writes a project users check into their repo and
own: a package ``NAME`` that starts with ``python -m NAME --host H --port P``, the model
(the compiled artifact or the ONNX file), a Python client, a Dockerfile, a README, a
pyproject with pinned dependencies and the project's own pytest suite. Every model-derived
string reaches the generated files only through the escapers of ``scaffold.common``; code
uses generated identifiers. Output is deterministic and written atomically.

The scaffold layer sits below ``tools``, so callers hand in the model already loaded plus a
function that compiles it (``ServeModel``); ``torsh_gen.cli.scaffold_serve`` does that
wiring for the command line.
"""

from __future__ import annotations

import functools
import keyword
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from torsh_gen import __version__
from torsh_gen.backends.python.formatting import format_code
from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph
from torsh_gen.scaffold.common import (
    TensorSpec,
    atomic_folder,
    default_folder_mode,
    environment,
    markdown_code,
    package_name,
    py_string,
    signature,
    write_tree,
)
from torsh_gen.scaffold.serve_proto import PROTO_PINS, compile_stubs, proto_fields, proto_pins

KINDS = ("rest", "grpc")
ENGINES = ("compiled", "onnxruntime")

#: numpy dtypes a served tensor may have (what JSON, npy/npz and raw bytes carry exactly).
WIRE_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
)  # fmt: skip

#: Versions the generated projects pin (tested together by tests/scaffold/test_serve_*.py).
PINS: dict[str, str] = {
    "numpy": "2.4.6",
    "numba": "0.68.1",
    "onnxruntime": "1.32.0",
    "fastapi": "0.165.0",
    "uvicorn": "0.54.0",
    "prometheus-client": "0.26.0",
    "httpx": "0.28.1",
    "pytest": "9.2.0",
    **PROTO_PINS,
}

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
#: Names a service package must not take: it would shadow a module the service imports.
_RESERVED_NAMES = frozenset(sys.stdlib_module_names) | {
    "test", "tests", "torch", "numpy", "numba", "llvmlite", "onnx", "onnxruntime", "fastapi",
    "starlette", "uvicorn", "httpx", "anyio", "pydantic", "prometheus_client", "grpc",
    "grpc_health", "grpc_reflection", "grpc_tools", "google", "pytest", "app", "artifact",
}  # fmt: skip


@dataclass(frozen=True)
class ServeModel:
    """The model to serve, prepared by a caller from the layers above.

    ``onnx`` is the model as ONNX bytes (shipped with the onnxruntime engine);
    ``compile_artifact(folder)`` writes the compiled CPU package into ``folder`` (a new path
    whose last part is a package name) and is only called for the compiled engine.
    """

    graph: Graph
    source: str
    onnx: bytes
    compile_artifact: Callable[[Path], Any]


@dataclass
class ServeReport:
    """What ``generate_service`` wrote."""

    out_dir: Path
    name: str
    kind: str
    engine: str
    batch_dim: str | None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {
            "out_dir": str(self.out_dir),
            "name": self.name,
            "kind": self.kind,
            "engine": self.engine,
            "batch_dim": self.batch_dim,
            "files": self.files,
        }


def service_name(name: str | None, source: str) -> str:
    """The package name: ``name`` checked as given, else the model file's stem made safe."""
    if name is None:
        derived = package_name(Path(source).stem or "model")
        return f"{derived}_model" if derived in _RESERVED_NAMES else derived
    if not _NAME_RE.match(name) or not name.isidentifier():
        raise InputError(
            f"--name {name!r} is not usable as a package name; use lower-case letters, digits and "
            "underscores, starting with a letter (e.g. 'my_model')"
        )
    if name in _RESERVED_NAMES:
        raise InputError(
            f"--name {name!r} would shadow the module {name!r} the service imports (standard "
            f"library or a dependency); choose another name, e.g. '{name}_model'"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise InputError(
            f"--name {name!r} is a Python keyword; choose another name, e.g. '{name}_model'"
        )
    return name


def batch_dim(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str | None:
    """The symbolic first dim shared by every input and output, if any (micro-batching axis)."""
    firsts = {spec.shape[0] if spec.shape else None for spec in inputs + outputs}
    if len(firsts) != 1:
        return None
    (dim,) = firsts
    return dim if isinstance(dim, str) else None


def _check_signature(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    if not inputs:
        raise InputError(
            "the model has no inputs (all are initializers); there is nothing to serve"
        )
    bad = [f"{s.name!r} ({s.dtype})" for s in inputs + outputs if s.dtype not in WIRE_DTYPES]
    if bad:
        raise InputError(
            f"tensors with dtypes a service cannot carry: {', '.join(bad)}; supported: "
            f"{', '.join(WIRE_DTYPES)}. Cast them in the model (e.g. with a Cast node) first"
        )
    unranked = [repr(s.name) for s in inputs if s.shape is None]
    if unranked:
        raise InputError(
            f"inputs without a known rank: {', '.join(unranked)}; give them a shape in the model "
            "(symbolic dims are fine) so requests can be validated"
        )


def _context(model: ServeModel, name: str, kind: str, engine: str) -> dict[str, Any]:
    inputs, outputs = signature(model.graph)
    _check_signature(inputs, outputs)
    dim = batch_dim(inputs, outputs)
    return {
        "name": name,
        "kind": kind,
        "port": 8000 if kind == "rest" else 50051,
        "engine": engine,
        "source": model.source,
        "version": __version__,
        "inputs": inputs,
        "outputs": outputs,
        "batch_dim": dim,
        "pins": {**PINS, **(proto_pins() if kind == "grpc" else {})},
        "fields_in": proto_fields(inputs),
        "fields_out": proto_fields(outputs),
    }


_COMMON = {
    "pyproject.toml": "pyproject.toml.j2",
    "Dockerfile": "Dockerfile.j2",
    ".dockerignore": "dockerignore.j2",
    ".gitignore": "gitignore.j2",
    "{pkg}/__init__.py": "__init__.py.j2",
    "{pkg}/signature.py": "signature.py.j2",
    "{pkg}/engine.py": "engine.py.j2",
    "{pkg}/metrics.py": "metrics.py.j2",
    "tests/conftest.py": "conftest.py.j2",
}
_BATCHING = {"{pkg}/batching.py": "batching.py.j2"}
_KIND = {
    "rest": {
        "README.md": "README.md.j2",
        "{pkg}/__main__.py": "__main__.py.j2",
        "{pkg}/app.py": "app.py.j2",
        "{pkg}/codec.py": "codec.py.j2",
        "{pkg}/client.py": "client.py.j2",
        "tests/test_service.py": "test_service.py.j2",
    },
    "grpc": {
        "README.md": "README.md.j2",
        "{pkg}/__main__.py": "__main__.py.j2",
        "{pkg}/server.py": "server.py.j2",
        "{pkg}/tensors.py": "tensors.py.j2",
        "{pkg}/client.py": "client.py.j2",
        "{pkg}/proto/{pkg}.proto": "model.proto.j2",
        "tests/test_service.py": "test_service.py.j2",
    },
}


def docstring_text(value: str) -> str:
    """``value`` quoted for use inside a triple-quoted docstring: ASCII, one line, no quotes."""
    return ascii(str(value)).replace('"', '\\"')


def markdown_cell(value: str) -> str:
    """``value`` as inline Markdown code that is also safe inside a table cell."""
    return markdown_code(value).replace("|", "\\|")


def python_shape(shape: tuple[int | str | None, ...] | None) -> str:
    """A shape as a Python tuple literal (symbols as escaped strings), or ``None``."""
    if shape is None:
        return "None"
    dims = [py_string(d) if isinstance(d, str) else repr(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


@functools.cache
def _environment(generator: str) -> jinja2.Environment:
    """The shared environment of ``templates/<generator>/`` with block tags trimmed."""
    env = environment(generator).overlay(trim_blocks=True, lstrip_blocks=True)
    env.filters["pydoc"] = docstring_text
    env.filters["mdcell"] = markdown_cell
    env.filters["pyshape"] = python_shape
    return env


def _render(generator: str, template: str, ctx: dict[str, Any]) -> str:
    text = _environment(generator).get_template(template).render(**ctx)
    if template.removesuffix(".j2").endswith(".py"):
        text = format_code(text)
    return text


def render_project(ctx: dict[str, Any]) -> dict[str, str]:
    """Every templated file of the project: relative path → text."""
    pkg, kind = ctx["name"], ctx["kind"]
    files: dict[str, str] = {}
    common = dict(_COMMON, **(_BATCHING if ctx["batch_dim"] else {}))
    for rel, template in common.items():
        files[rel.format(pkg=pkg)] = _render("serve_common", template, ctx)
    for rel, template in _KIND[kind].items():
        files[rel.format(pkg=pkg)] = _render(f"serve_{kind}", template, ctx)
    return files


def generate_service(
    model: ServeModel,
    out_dir: str | Path,
    *,
    kind: str,
    engine: str = "compiled",
    name: str | None = None,
    force: bool = False,
) -> ServeReport:
    """Write the ``kind`` ("rest" or "grpc") service project for ``model`` into ``out_dir``."""
    if kind not in KINDS:
        raise InputError(f"unknown service kind {kind!r}; use one of {', '.join(KINDS)}")
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    out = Path(out_dir)
    pkg = service_name(name, model.source)
    ctx = _context(model, pkg, kind, engine)
    files: dict[str, str | bytes] = dict(render_project(ctx))
    with atomic_folder(out, force) as tmp:
        default_folder_mode(tmp)
        write_tree(tmp, files)
        if engine == "onnxruntime":
            write_tree(tmp, {f"{pkg}/model.onnx": model.onnx})
        else:
            model.compile_artifact(tmp / pkg / "artifact")
            default_folder_mode(tmp / pkg / "artifact")  # compile writes it via mkdtemp (0700)
        if kind == "grpc":
            compile_stubs(tmp, pkg)
        for cache in sorted(tmp.rglob("__pycache__"), reverse=True):  # machine code stays out
            shutil.rmtree(cache)
        written = sorted(
            str(p.relative_to(tmp))
            for p in tmp.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
    return ServeReport(out, pkg, kind, engine, ctx["batch_dim"], written)
