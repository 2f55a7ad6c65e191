"""What the native packagings share: templates, safe literals, sources, and the C build.

``package_sharedlib`` and ``package_android`` both wrap the compiled graph in the same C
runtime (``templates/native/runtime.c.j2``: weights, workspace, thread pool, checked
calls) and differ in how they link it. Here live the pieces both use:

- the jinja environment of ``templates/native`` (StrictUndefined, keep_trailing_newline);
- the only ways a model-derived string reaches generated code: ``c_string`` (a C string
  literal, every byte outside a plain set as a 3-digit octal escape), ``comment_label``
  (a safe subset for comments), ``ascii(name)`` for Python;
- ``write_sources``: model.o, the runtime C, the header and weights.S;
- ``Build``: the compile and link commands, run with the source folder as the working
  directory and relative paths (nothing absolute reaches the outputs, so two builds
  give byte-identical files), and written to ``src/build.sh`` for users to rebuild.
"""

from __future__ import annotations

import functools
import keyword
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from torsh_gen.backends.kernel.interp import numpy_dtype
from torsh_gen.backends.kernel.ir import itemsize
from torsh_gen.backends.kernel.lower import prod
from torsh_gen.backends.kernel.program import IOSpec, Program
from torsh_gen.backends.llvm.artifact import ArtifactInfo, npy_file_names
from torsh_gen.backends.llvm.targets import TargetSpec
from torsh_gen.errors import TorshGenError

#: kernel dtype → (enum suffix, code) of ``<name>_tensor.dtype``.
DTYPE_CODES: dict[str, tuple[str, int]] = {
    "f32": ("F32", 1),
    "f64": ("F64", 2),
    "i32": ("I32", 3),
    "i64": ("I64", 4),
    "i8": ("I8", 5),
    "u8": ("U8", 6),
    "i16": ("I16", 7),
    "u16": ("U16", 8),
    "u32": ("U32", 9),
    "u64": ("U64", 10),
    "bool": ("BOOL", 11),
    "f16": ("F16", 12),  # IEEE half, as uint16_t bits
    "bf16": ("BF16", 13),  # bfloat16, as uint16_t bits
    "f8e4m3fn": ("F8E4M3FN", 14),  # the float8 types, as uint8_t bits
    "f8e4m3fnuz": ("F8E4M3FNUZ", 15),
    "f8e5m2": ("F8E5M2", 16),
    "f8e5m2fnuz": ("F8E5M2FNUZ", 17),
    "f4e2m1": ("F4E2M1", 18),  # float4 and the sub-byte integers: one per byte, low bits
    "i4": ("I4", 19),
    "u4": ("U4", 20),
    "i2": ("I2", 21),
    "u2": ("U2", 22),
    "f8e8m0": ("F8E8M0", 23),  # float8e8m0 (ml_dtypes' float8_e8m0fnu): the exponent bits
}
#: C flags of every translation unit: no -g (debug info would carry the build folder).
CFLAGS = ("-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wno-unused-function")
#: Linker flags of the library and the drivers (no executable stack: model.o has no note).
LDFLAGS = ("-Wl,-z,noexecstack", "-Wl,-z,relro", "-Wl,-z,now", "-Wl,--build-id=sha1", "-s")
_PLAIN = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,:;+-=()[]<>#@!%^&|~"
)
_COMMENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,:+-=()[]")


class NativeBuildError(TorshGenError):
    """A native compile or link step failed (the message has the command and its output)."""


@functools.cache
def environment() -> jinja2.Environment:
    """The jinja environment of ``templates/native``."""
    try:
        loader: jinja2.BaseLoader = jinja2.PackageLoader("torsh_gen.templates", "native")
    except (ModuleNotFoundError, ValueError):
        loader = jinja2.FileSystemLoader(
            Path(__file__).resolve().parents[3] / "templates" / "native"
        )
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(name: str, **values: Any) -> str:
    """Render template ``name`` of ``templates/native``."""
    return environment().get_template(name).render(**values)


def c_string(text: str) -> str:
    """``text`` (UTF-8) as a C string literal that cannot end early or splice lines.

    Bytes outside a plain set (quotes, backslash, ``?`` of trigraphs, ``*``/``/`` of
    comments, controls, non-ASCII) become 3-digit octal escapes, which unlike hex escapes
    never swallow the next character.
    """
    out = []
    for byte in text.encode("utf-8", "surrogatepass"):
        ch = chr(byte)
        out.append(ch if byte < 128 and ch in _PLAIN else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def comment_label(text: str, limit: int = 48) -> str:
    """``text`` reduced to characters safe in any comment (others become ``_``)."""
    safe = "".join(ch if ch in _COMMENT else "_" for ch in text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def display_label(text: str) -> str:
    """``text`` as printable ASCII on one line (Python's escapes), for error messages."""
    return ascii(text)[1:-1]


def kotlin_string(text: str) -> str:
    """``text`` as a Kotlin string literal: anything but letters, digits and ``_ .-`` as
    ``\\uXXXX`` (UTF-16 units), so neither ``"`` nor ``$`` templates nor ``\\`` survive."""
    plain = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ .-")
    units = text.encode("utf-16-be", "surrogatepass")
    out = []
    for k in range(0, len(units), 2):
        code = int.from_bytes(units[k : k + 2], "big")
        out.append(chr(code) if chr(code) in plain else f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def dtype_rows() -> list[dict[str, Any]]:
    """The element types the header declares (all of them, in code order)."""
    rows = []
    for kdt, (name, code) in sorted(DTYPE_CODES.items(), key=lambda kv: kv[1][1]):
        numpy = numpy_dtype(kdt)
        rows.append(
            {
                "code_name": name,
                "code": code,
                "numpy": numpy.name,
                "descr": numpy.str,
                "size": numpy.itemsize,
            }
        )
    return rows


def tensor_rows(specs: list[IOSpec], prefix: str) -> list[dict[str, Any]]:
    """Template rows of the model's inputs or outputs: every name in each escaped form."""
    files = npy_file_names([s.name for s in specs], prefix)
    rows = []
    for k, (s, file) in enumerate(zip(specs, files)):
        if s.dtype not in DTYPE_CODES:
            raise NativeBuildError(
                f"tensor {display_label(s.name)!r} has element type {s.dtype}, "
                "which the C API lacks"
            )
        shape = tuple(int(d) for d in s.shape)
        dims = tuple(s.dims) if s.dims is not None else shape
        rows.append(
            {
                "index": k,
                "c_name": c_string(s.name),
                "py_name": ascii(s.name),
                "kt_name": kotlin_string(s.name),
                "label": comment_label(s.name),
                "c_label": c_string(display_label(s.name)),
                "numpy": s.numpy_dtype,
                "kdtype": s.dtype,
                "code_name": DTYPE_CODES[s.dtype][0],
                "shape": list(shape),
                "py_shape": repr(shape),
                "py_dims": "("
                + "".join(f"{d!r}, " if isinstance(d, int) else f"{ascii(d)}, " for d in dims)
                + ")",
                # data-dependent outputs: ``shape`` is the upper bound, ``dims`` names the
                # varying dims (comment-safe: generated names or escaped model symbols)
                "data_dependent": s.dims is not None,
                "empty_shape": [d if isinstance(d, int) else 0 for d in dims],
                "dims_text": ", ".join(
                    str(d) if isinstance(d, int) else f"{comment_label(d)} <= {m}"
                    for d, m in zip(dims, shape)
                ),
                "numel": prod(shape),
                "nbytes": prod(shape) * itemsize(s.dtype),
                "file": file,
                "c_file": c_string(file),
            }
        )
    return rows


def python_example(names: list[str]) -> str:
    """The arguments of ``run(...)`` in the package docstring (names only if identifiers)."""
    if all(n.isidentifier() and n.isascii() and not keyword.iskeyword(n) for n in names):
        return ", ".join(f"{n}=..." for n in names)
    return "**inputs"


@dataclass
class Build:
    """The compile and link commands of one package, run in ``src`` (relative paths)."""

    src: Path
    steps: list[list[str]] = field(default_factory=list)

    def add(self, *argv: str) -> None:
        """Queue one command."""
        self.steps.append([str(a) for a in argv])

    def run(self) -> None:
        """Run the queued commands in order; NativeBuildError with the output on failure."""
        for argv in self.steps:
            try:
                proc = subprocess.run(
                    argv, cwd=self.src, capture_output=True, text=True, timeout=600
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise NativeBuildError(f"`{shlex.join(argv)}` could not run: {exc}") from None
            if proc.returncode != 0:
                out = " | ".join((proc.stderr + proc.stdout).strip().splitlines()[-12:])
                raise NativeBuildError(
                    f"`{shlex.join(argv)}` failed (exit {proc.returncode}): {out}"
                )

    def write_script(self, name: str = "build.sh") -> None:
        """The same commands as a shell script, to rebuild after editing the sources."""
        lines = [
            "#!/bin/sh",
            "# Rebuild this package's binaries (run from this folder).",
            "set -eu",
            'cd "$(dirname "$0")"',
        ]
        lines += [shlex.join(argv) for argv in self.steps]
        path = self.src / name
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o755)


@dataclass
class Sources:
    """The generated sources of one package and the values their templates saw."""

    prefix: str
    values: dict[str, Any]
    objects: list[str]


def template_values(
    program: Program,
    spec: TargetSpec,
    info: ArtifactInfo,
    embedded: bool,
    variants: Sequence[Any] = (),
) -> dict[str, Any]:
    """What every native template sees (``variants``: the further CPU builds, each with
    ``spec`` and ``program``; they share ``program``'s weights blob)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", info.package):
        raise NativeBuildError(
            f"package name {info.package!r} must be an ASCII identifier (it prefixes C symbols)"
        )
    if re.fullmatch(r"pthread\w*|sem|timer|mq", info.package):
        raise NativeBuildError(
            f"package name {info.package!r} would define C functions libc already has "
            f"({info.package}_create, ...); choose another output folder name"
        )
    from torsh_gen.backends.llvm.program import graph_run_name

    inputs = tensor_rows(program.inputs, "input")
    p = info.package
    rows = []
    for k, (vspec, vprogram) in enumerate(_builds(program, spec, variants)):
        name = vspec.variant_name
        prefix = f"{p}_tg" if k == 0 else f"{p}_tg_{_symbol(name)}"
        rows.append(
            {
                "name": name,
                "c_name": c_string(name),
                "G": graph_run_name(prefix),
                "prefix": prefix,
                "object": "model.o" if k == 0 else f"model_{_symbol(name)}.o",
                "requires": list(vspec.requires),
                "vector_bits": vspec.vector_bits,
                "workspace_bytes": vprogram.workspace_bytes,
                # per output: workspace offset of its actual dims (-1: a static shape)
                "extents": [o.extent if o.extent is not None else -1 for o in vprogram.outputs],
            }
        )
    return {
        "P": p,
        "U": p.upper(),
        "G": rows[0]["G"],
        "variants": rows,
        "version": info.version,
        "target": spec.name,
        "triple": spec.triple,
        "embedded": embedded,
        "weights_bytes": len(program.weights),
        "workspace_bytes": max(r["workspace_bytes"] for r in rows),
        "inputs": inputs,
        "outputs": tensor_rows(program.outputs, "output"),
        "dtypes": dtype_rows(),
        "data_dependent": any(o.dims is not None for o in program.outputs),
        "max_output_rank": max([len(o.shape) for o in program.outputs] + [1]),
        "example": python_example([s.name for s in program.inputs]),
    }


def _builds(
    program: Program, spec: TargetSpec, variants: Sequence[Any]
) -> list[tuple[TargetSpec, Program]]:
    """The baseline build and the variants' builds, in the library's order."""
    return [(spec, program)] + [(v.spec, v.program) for v in variants]


def _symbol(name: str) -> str:
    """A variant name as a C identifier part (``x86-64-v4`` → ``x86_64_v4``)."""
    return re.sub(r"[^A-Za-z0-9]", "_", name)


def write_sources(
    program: Program,
    spec: TargetSpec,
    info: ArtifactInfo,
    header_dir: Path,
    src: Path,
    embedded: bool,
    variants: Sequence[Any] = (),
) -> Sources:
    """model.o (one object per CPU variant), the runtime C, weights.S (when embedded) in
    ``src``; the header in ``header_dir``."""
    from torsh_gen.backends.llvm.machine import object_codes
    from torsh_gen.backends.llvm.program import emit_program

    values = template_values(program, spec, info, embedded, variants)
    prefix = values["P"]
    src.mkdir(parents=True, exist_ok=True)
    texts = [
        (str(emit_program(vprogram, row["prefix"], inline_kernels=vspec.inline_kernels)), vspec)
        for row, (vspec, vprogram) in zip(values["variants"], _builds(program, spec, variants))
    ]
    for row, code in zip(values["variants"], object_codes(texts)):
        (src / row["object"]).write_bytes(code)
    (header_dir / f"{prefix}.h").write_text(render("model.h.j2", **values))
    (src / f"{prefix}_runtime.c").write_text(render("runtime.c.j2", **values))
    objects = [row["object"] for row in values["variants"]] + [f"{prefix}_runtime.o"]
    if embedded and program.weights:
        (src / "weights.bin").write_bytes(bytes(program.weights))
        (src / "weights.S").write_text(render("weights.S.j2", **values))
        objects.append("weights.o")
    return Sources(prefix, values, objects)


def compile_objects(
    build: Build, cc: str, sources: Sources, include: str, extra: tuple[str, ...] = ()
) -> None:
    """Queue the compiles of the runtime (and weights.S) into objects (header in ``include``)."""
    p = sources.prefix
    build.add(cc, *CFLAGS, *extra, f"-I{include}", "-c", f"{p}_runtime.c", "-o", f"{p}_runtime.o")
    if "weights.o" in sources.objects:
        build.add(cc, "-c", "weights.S", "-o", "weights.o")


def export_map(src: Path, symbols: list[str]) -> str:
    """A linker version script exporting only ``symbols`` (no symbol versions)."""
    body = "".join(f"    {s};\n" for s in symbols)
    (src / "exports.map").write_text("{\n  global:\n" + body + "  local:\n    *;\n};\n")
    return "exports.map"


def api_symbols(prefix: str) -> list[str]:
    """The functions of the C API (what the library exports)."""
    names = [
        "create",
        "create_with_workspace",
        "workspace_size",
        "run",
        "run_checked",
        "last_error",
        "cpu_variant",
        "num_threads",
        "input_info",
        "output_info",
        "output_shape",
        "destroy",
    ]
    return [f"{prefix}_{n}" for n in names]
