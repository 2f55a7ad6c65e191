"""The ``wasm`` packaging: a ``Program`` → ``model.wasm`` plus the JavaScript that runs it.

Files written into the artifact folder:

- ``model.wasm``: the kernels and ``model_graph_run`` for wasm32 with SIMD128, linked by
  ``wasm-ld`` with no imports (no libc: transcendentals are kernel-IR code, and bulk
  memory turns LLVM's memcpy/memset into ``memory.copy``/``memory.fill``). Its memory is
  exported and growable (no maximum); the stack (64 KiB) sits first, so an overflow traps
  instead of overwriting the weights.
- ``model.js``: an ES module for browsers and Node: ``await load(source)`` then
  ``model.run({name: {data, dims}})`` (outputs likewise, in the shape the run gave them:
  data-dependent ones read their dims from the workspace). It lays out workspace, weights, inputs, outputs
  and the two pointer arrays above ``__heap_base`` (64-byte aligned), grows the memory
  once, and validates names, dims and TypedArray types before every call.
- ``run.mjs``: a Node driver (``node run.mjs INPUT_DIR OUTPUT_DIR``, ``.npy`` files named
  by the manifest's ``file`` entries); ``index.html``: a static demo page.
- ``manifest.json``; ``weights.bin`` unless the weights are embedded.

As on the other native targets, the weights go to ``weights.bin`` by default: model.wasm
stays small (code only), compiles while the weights download, and caches apart from them;
``load`` fetches (browser) or reads (Node) ``weights.bin`` beside model.wasm and copies it
into memory. ``--embed-weights`` (``ArtifactInfo.embed_weights``) puts them in model.wasm as
a data segment instead: one file to serve, copied into memory at instantiation.

Tensor names are model-derived: they reach JavaScript only as JSON from ``json.dumps``
with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, and HTML only through autoescaping.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jinja2
from llvmlite import ir

from torsh_gen.backends.kernel.program import Program
from torsh_gen.backends.llvm.artifact import (
    WEIGHTS_FILE,
    ArtifactInfo,
    PackageResult,
    io_entries,
    manifest,
    write_json,
)
from torsh_gen.backends.llvm.machine import object_code
from torsh_gen.backends.llvm.program import emit_program, graph_run_name
from torsh_gen.backends.llvm.runtime_ir import define_serial_parallel_for
from torsh_gen.backends.llvm.targets import TargetSpec
from torsh_gen.backends.llvm.types import I8
from torsh_gen.errors import InputError, TorshGenError

PREFIX = "model"
WEIGHTS_SYMBOL = "tg_weights"
HEAP_BASE = "__heap_base"
STACK_BYTES = 64 * 1024
ALIGN = 64
TEMPLATES = ("model.js", "run.mjs", "index.html")
_JS_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def write(program: Program, spec: TargetSpec, folder: Path, info: ArtifactInfo) -> PackageResult:
    """Write the wasm artifact of ``program`` into ``folder`` (weights in weights.bin, or
    embedded in model.wasm when ``info.embed_weights``)."""
    folder = Path(folder)
    embedded = bool(getattr(info, "embed_weights", False))
    wasm = link_wasm(object_code(build_module(program, embedded, spec.inline_kernels), spec), embedded)
    (folder / "model.wasm").write_bytes(wasm)
    files = {"module": "model.wasm", "js": "model.js", "driver": "run.mjs", "demo": "index.html"}
    if not embedded:
        (folder / WEIGHTS_FILE).write_bytes(bytes(program.weights))
        files["weights"] = WEIGHTS_FILE
    code_bytes = len(wasm) - (len(program.weights) if embedded else 0)
    values = template_values(program, info, embedded)
    for name in TEMPLATES:
        (folder / name).write_text(render(f"{name}.j2", **values))
    data = manifest(info, spec, program, files)
    data["weights"] = {
        "file": None if embedded else WEIGHTS_FILE,
        "embedded": embedded,
        "bytes": len(program.weights),
    }
    data["wasm"] = {
        "exports": export_names(embedded),
        "code_bytes": code_bytes,
        "stack_bytes": STACK_BYTES,
    }
    write_json(folder / "manifest.json", data)
    written = sorted([*files.values(), "manifest.json"])
    memory = {
        "workspace_bytes": program.workspace_bytes,
        "weight_bytes": len(program.weights),
        "code_bytes": code_bytes,
    }
    nodes = sum(1 for c in program.calls if c.op_type != "copy")
    return PackageResult(written, nodes, 0, len(program.kernels), len(program.weights), memory)


def build_module(program: Program, embedded: bool, inline_kernels: bool = False) -> ir.Module:
    """The LLVM module: kernels, ``model_graph_run``, a serial ``tg_parallel_for`` and,
    when ``embedded``, the weights as an exported, 64-byte aligned constant."""
    module = ir.Module(name=PREFIX)
    define_serial_parallel_for(module)
    emit_program(program, PREFIX, module, inline_kernels=inline_kernels)
    if embedded:
        blob = bytes(program.weights) or b"\0"
        array = ir.ArrayType(I8, len(blob))
        var = ir.GlobalVariable(module, array, WEIGHTS_SYMBOL)
        var.global_constant = True
        var.align = ALIGN
        var.initializer = ir.Constant(array, bytearray(blob))
    return module


def export_names(embedded: bool) -> dict[str, str]:
    """The wasm export of each role the JavaScript needs."""
    names = {"memory": "memory", "run": graph_run_name(PREFIX), "heap_base": HEAP_BASE}
    if embedded:
        names["weights"] = WEIGHTS_SYMBOL
    return names


def link_wasm(obj: bytes, embedded: bool) -> bytes:
    """Link the object with ``wasm-ld`` into a module without imports or entry point."""
    linker = shutil.which("wasm-ld")
    if linker is None:
        raise InputError(
            "target wasm32 needs wasm-ld (Debian package: lld); run `make toolchains` to install it"
        )
    exports = [n for role, n in export_names(embedded).items() if role != "memory"]
    with tempfile.TemporaryDirectory(prefix="torsh-wasm-") as tmp:
        src, out = Path(tmp) / "model.o", Path(tmp) / "model.wasm"
        src.write_bytes(obj)
        cmd = [
            linker,
            "--no-entry",
            "--strip-all",
            "--gc-sections",
            "--stack-first",
            "-z",
            f"stack-size={STACK_BYTES}",
            *[f"--export={n}" for n in exports],
            "-o",
            str(out),
            str(src),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[:400]
            if "undefined symbol" in detail:
                detail += " (wasm32 artifacts link no libc: the kernels must not call it)"
            raise TorshGenError(f"wasm-ld failed to link model.wasm: {detail}")
        return out.read_bytes()


def template_values(program: Program, info: ArtifactInfo, embedded: bool) -> dict[str, Any]:
    """What the templates need: the signature and layout as escaped JSON, plain numbers."""
    signature = {
        "inputs": io_entries(program.inputs, "input"),
        "outputs": io_entries(program.outputs, "output"),
    }
    layout = {
        "workspace_bytes": program.workspace_bytes,
        "weights_bytes": len(program.weights),
        "weights": "embedded" if embedded else "separate",
        "weights_file": None if embedded else WEIGHTS_FILE,
        "align": ALIGN,
        "exports": export_names(embedded),
        # per output: workspace offset of its actual dims (null: a static shape)
        "extents": [o.extent for o in program.outputs],
    }
    return {
        "version": info.version,
        "package": info.package,
        "source_name": info.source_name,
        "signature_json": signature_js(signature),
        "layout_json": js_json(layout),
        "embedded": embedded,
    }


def js_json(value: Any) -> str:
    """JSON on one line that is safe inside JavaScript and inline HTML script: no raw ``<``,
    ``>``, ``&``, line separators or non-ASCII characters can end a script element or a string."""
    text = json.dumps(value, ensure_ascii=True, separators=(", ", ": "))
    return "".join(_JS_ESCAPES.get(ch, ch) for ch in text)


def signature_js(signature: dict[str, list[dict[str, Any]]]) -> str:
    """The signature as escaped JSON with one line per tensor (readable in model.js)."""
    parts = []
    for key, entries in signature.items():
        rows = ",\n".join(f"    {js_json(e)}" for e in entries)
        parts.append(f"  {js_json(key)}: [\n{rows}\n  ]" if entries else f"  {js_json(key)}: []")
    return "{\n" + ",\n".join(parts) + "\n}"


@functools.cache
def environment() -> jinja2.Environment:
    """Templates of ``templates/wasm``; HTML ones autoescape, JavaScript ones get escaped JSON."""
    try:
        loader: jinja2.BaseLoader = jinja2.PackageLoader("torsh_gen.templates", "wasm")
    except (ModuleNotFoundError, ValueError):
        loader = jinja2.FileSystemLoader(Path(__file__).resolve().parents[3] / "templates" / "wasm")
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
    )


def render(name: str, **values: Any) -> str:
    """Render template ``name`` of ``templates/wasm``."""
    return environment().get_template(name).render(**values)
