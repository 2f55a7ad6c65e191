"""Proto field names for a model's tensors, and the gRPC stubs compiled at generation time.

Field names are generated identifiers (never the model's own names): lower-case, not a
proto or Python keyword, and unique both as written and as protoc's JSON name (``a_b`` and
``ab_`` would clash there). The stubs are compiled with grpcio-tools into the project, so
the generated service runs without protoc; they are black-formatted like the rest.
"""

from __future__ import annotations

import re
from pathlib import Path

from torsh_gen.backends.python.formatting import format_code
from torsh_gen.errors import TorshGenError
from torsh_gen.scaffold.common import TensorSpec, identifier

#: grpc packages pinned by generated gRPC projects. The stubs need a runtime at least as new as
#: the grpcio-tools that compiled them; tests/scaffold checks these match what is installed.
PROTO_PINS: dict[str, str] = {
    "grpcio": "1.85.3",
    "grpcio-tools": "1.85.1",
    "grpcio-health-checking": "1.85.1",
    "grpcio-reflection": "1.85.1",
    "protobuf": "7.36.2",
}


def proto_pins() -> dict[str, str]:
    """The grpc pins for a generated project: ``PROTO_PINS``, or what is installed when the
    installed grpcio-tools differs (the stubs need the runtime that matches their compiler)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        if version("grpcio-tools") == PROTO_PINS["grpcio-tools"]:
            return dict(PROTO_PINS)
        return {name: version(name) for name in PROTO_PINS}
    except PackageNotFoundError:
        return dict(PROTO_PINS)


_PROTO_WORDS = frozenset(
    """syntax import weak public package option message enum service rpc returns stream
    repeated optional required oneof map reserved extensions extend to max group edition
    true false inf nan double float int32 int64 uint32 uint64 sint32 sint64 fixed32 fixed64
    sfixed32 sfixed64 bool string bytes tensor descriptor""".split()
)


def json_name(field: str) -> str:
    """protoc's JSON name of a field: underscores dropped, the next letter upper-cased."""
    return re.sub(r"_+([a-z0-9]?)", lambda m: m.group(1).upper(), field)


def proto_fields(specs: list[TensorSpec]) -> list[str]:
    """One proto field name per tensor, in order (see the module docstring for the rules)."""
    taken: set[str] = set()
    jsons: set[str] = set()
    names = []
    for spec in specs:
        base = identifier(spec.name.lower(), fallback="tensor", reserved=_PROTO_WORDS).lower()
        candidate, n = base, 1
        while candidate in taken or json_name(candidate).lower() in jsons:
            n += 1
            candidate = f"{base}_v{n}"
        taken.add(candidate)
        jsons.add(json_name(candidate).lower())
        names.append(candidate)
    return names


def compile_stubs(root: Path, package: str) -> list[str]:
    """Compile ``root/<package>/proto/<package>.proto`` into ``*_pb2.py``, ``*_pb2_grpc.py``.

    The include root is ``root``, so the stubs import each other as ``<package>.proto.*``
    and work when the project folder is on ``sys.path`` (``python -m <package>`` from it).
    """
    try:
        from grpc_tools import protoc
    except ImportError:
        raise TorshGenError(
            "grpcio-tools is needed to compile the service's stubs; install the serve extra: "
            "pip install 'torsh-gen[serve]'"
        ) from None
    import importlib.resources

    rel = f"{package}/proto/{package}.proto"
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["grpc_tools.protoc", f"-I{root}", f"-I{well_known}", f"--python_out={root}",
            f"--grpc_python_out={root}", str(root / rel)]  # fmt: skip
    code = protoc.main(args)
    if code != 0:
        raise TorshGenError(
            f"protoc failed on the generated {rel} (exit {code}); please report this"
        )
    written = []
    for suffix in ("_pb2.py", "_pb2_grpc.py"):
        path = root / package / "proto" / f"{package}{suffix}"
        text = format_code(path.read_text(encoding="utf-8"))
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(str(path.relative_to(root)))
    (root / package / "proto" / "__init__.py").write_text(
        '"""Protocol buffers of the service and the stubs compiled from them."""\n'
    )
    return written
