"""Write the generated package: model code, kernels, runtime, weights and manifest.

``write_package(graph, folder, info)`` fills an empty folder:

    __init__.py     run(**inputs), Model, INPUTS, OUTPUTS
    model.py        the Model class and the generated forward function
    kernels.py      numba kernels (fused elementwise chains), when the model has any
    _runtime.py     weights mapping, buffers, input checks, error messages
    _conv.py        numba convolution kernels, when some convolution uses them
    _linemap.py     generated line → graph node, for error messages
    _ref/           vendored reference kernels, when some op has no fast emitter
    weights.bin     every constant, 64-byte aligned, memory-mapped at load
    manifest.json   source hash, versions, target, passes, signature, weights table

Everything is deterministic (no timestamps, sorted where order is free) and black-formatted.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torsh_gen.backends.python.context import Lines, Module
from torsh_gen.backends.python.conv_cache import start as start_conv_build
from torsh_gen.backends.python.emitters.conv_numba import CONV_PARTS
from torsh_gen.backends.python.formatting import format_code
from torsh_gen.backends.python.function import MARKER, emit_function
from torsh_gen.backends.python.kernel_cache import cached as kernels_cached
from torsh_gen.backends.python.kernel_cache import precompile
from torsh_gen.backends.python.kernel_cache import remember as remember_kernels
from torsh_gen.backends.python.literals import literal
from torsh_gen.backends.python.names import doc_text
from torsh_gen.backends.python.templating import render
from torsh_gen.backends.python.vendor import vendor
from torsh_gen.backends.python.weights import FILE_NAME
from torsh_gen.ir.graph import Graph, Value
from torsh_gen.ir.types import DType, OptionalType, SequenceType, TensorType
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.memplan import MemoryPlan, build_plan, static_nbytes

FORMAT = "torsh-gen-python/1"
#: numba threading layer of the convolution kernels (benchmarks/NOTES.md, "Conv path").
CONV_THREADING = "omp"


@dataclass
class ArtifactInfo:
    """What the manifest records about where the artifact came from."""

    package: str
    source_name: str
    source_sha256: str
    version: str
    target: str = "cpu"
    level: str = ""
    passes: list[str] = field(default_factory=list)
    #: compile the numba kernels now (``kernels.py``, while ``_conv.py``'s build runs)
    precompile: bool = True


@dataclass
class PackageResult:
    """What was written and how the graph was covered."""

    files: list[str]
    fast_nodes: int
    reference_nodes: int
    kernels: int
    weight_bytes: int
    memory: dict[str, int]
    vendored: list[str]
    #: seconds spent compiling ``kernels.py`` (None: left to ``precompile`` or first import)
    kernel_seconds: float | None = None


def write_package(graph: Graph, folder: Path, info: ArtifactInfo) -> PackageResult:
    """Generate the package for ``graph`` into the (empty) ``folder``."""
    ti = infer_types(graph)
    module = Module(opsets=dict(graph.info.opset_imports if graph.info else {"": 0}), plan=_plan(graph), known=_constants(graph, ti.known))
    inputs_sig = [_signature(module, v, default=True) for v in graph.inputs]
    params = [module.names.name(v.name, fallback="input") for v in graph.inputs]
    forward = Lines(1)
    emit_function(module, graph, "_forward", params, forward, method=True, top=True)
    outputs_sig = [_signature(module, v, default=False) for v in graph.outputs]
    written: list[str] = []

    def put(name: str, text: str, fmt: bool = True) -> str:
        # templates are written black-clean (a test checks), so only generated code is formatted
        if fmt:
            text = format_code(text)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(name)
        return text

    # _conv.py's kernels compile in background processes (a cold cache: seconds) while
    # the rest is written; kernels.py, written first, compiles in one of them too (else
    # here, after the rest)
    if module.kernel_sources:
        digest = hashlib.sha256("\n".join(module.kernel_sources).encode()).hexdigest()[:16]
        put("kernels.py", render("kernels.py.j2", version=info.version, kernels=module.kernel_sources, digest=digest))
    conv = getattr(module, CONV_PARTS, None)
    conv_build = None
    if conv:
        put("_conv.py", _conv_runtime(info.version, conv), fmt=False)
        delegate = info.precompile and module.kernel_sources and not kernels_cached(folder)
        conv_build = start_conv_build(folder, len(module.kernel_sources) if delegate else 0)
    try:
        vendored: list[str] = []
        if module.ref_kernels:
            vendored = vendor(folder / "_ref", module.ref_modules)
            put("_ref/_call.py", render("_call.py.j2", modules=[m for m in vendored if m.isidentifier()]), fmt=False)
            written.extend(sorted(str(p.relative_to(folder)) for p in (folder / "_ref").rglob("*.py") if p.name != "_call.py"))
        model_src = put("model.py", render(
            "model.py.j2",
            version=info.version,
            source_literal=doc_text(info.source_name),
            kernels=bool(module.kernel_sources),
            conv=bool(conv),
            ref=bool(module.ref_kernels),
            inputs=literal(tuple(inputs_sig)),
            outputs=literal(tuple(outputs_sig)),
            slots=literal(list(module.plan.slots) if module.plan else []),
            buffers=literal([(b.attr, b.slot, b.offset, b.dtype, b.shape) for b in module.buffers]),
            ref_kernels=[_ref_view(k) for k in module.ref_kernels],
            plugin_imports=[(*path.split(":"), alias) for path, alias in sorted(module.plugin_kernels.items())],
            forward="\n".join(forward.lines),
            quiet=module.may_warn,
        ))
        put("_linemap.py", _linemap(model_src, module.labels))
        needs = ", numba" if module.kernel_sources or conv else ""
        needs += " and ml_dtypes" if (module.uses_ml_dtypes or module.ref_kernels) else ""
        needs += "".join(sorted({f", {p.split('.')[0]}" for p in module.plugin_kernels}))
        example = ", ".join(f"{s['name']}=..." for s in inputs_sig[:3] if s["name"].isidentifier())
        put("__init__.py", render("__init__.py.j2", package=info.package, version=info.version, target=info.target, example=example, needs=needs), fmt=False)
        put("_runtime.py", render("_runtime.py.j2", version=info.version), fmt=False)
        table = module.weights.write(folder)
        written.append(FILE_NAME)
        memory = module.plan.to_dict() if module.plan else {}
        manifest = _manifest(info, inputs_sig, outputs_sig, table, module, memory, vendored)
        put("manifest.json", json.dumps(manifest, indent=2) + "\n", fmt=False)
        seconds = None
        if conv_build is not None:
            conv_build.finish()
            seconds = conv_build.kernel_seconds  # None unless it compiled kernels.py too
        if seconds is not None:
            remember_kernels(folder)
        elif info.precompile:  # fetched from the cache, or compiled here
            seconds = precompile(folder)
    except BaseException:
        if conv_build is not None:
            conv_build.cancel()
        raise
    return PackageResult(sorted(written), module.fast_nodes, module.ref_nodes, len(module.kernel_sources), module.weights.nbytes, memory, vendored, seconds)


def _conv_runtime(version: str, parts: set[str]) -> str:
    """``_conv.py`` with the kernel families the model uses (``# [part: NAME]`` sections of
    the template; each compiled kernel costs seconds on a cold cache), under a module name
    fixed by its source (numba's cache imports it by name).

    The template is black-clean and so is any selection of its parts once the blank lines
    a dropped part leaves are collapsed (a test checks), so black (1.4 s on this file with
    a cold cache, before the kernels' build can start) is not run on it."""
    body = render("_conv.py.j2", version=version, digest="{digest}", threading_layer=CONV_THREADING)
    kept, keep = [], True
    for line in body.splitlines(keepends=True):
        if line.startswith("# [part: "):
            part = line.strip()[len("# [part: "):-1]
            keep = part == "all" or part in parts
            continue
        if keep:
            kept.append(line)
    body = re.sub(r"\n{4,}", "\n\n\n", "".join(kept)).rstrip("\n") + "\n"
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    return body.replace("{digest}", digest)


def _plan(graph: Graph) -> MemoryPlan | None:
    """The recorded memory plan when it still matches the graph, else a fresh one."""
    plan = graph.meta.get("memory_plan")
    if isinstance(plan, MemoryPlan):
        values = {v.name: v for n in graph.nodes for v in n.outputs if v.name}
        if all(name in values and static_nbytes(values[name]) == nb for name, nb in plan.nbytes.items()):
            return plan
    return build_plan(graph, concat_blocks=True)


def _constants(graph: Graph, known: dict[int, Any]) -> dict[int, Any]:
    """Values fixed at compile time: initializers (not overridable inputs) and what follows from them."""
    const: dict[int, Any] = {}
    overridable = graph.info is None or graph.info.ir_version >= 4

    def walk(g: Graph, top: bool) -> None:
        inputs = {id(v) for v in g.inputs}
        for v in g.initializers:
            if not (top and overridable and id(v) in inputs):
                const[id(v)] = v.const
        for n in g.nodes:
            subs = list(n.subgraphs())
            for sg in subs:
                walk(sg, False)
            if subs or not all(id(o) in known for o in n.outputs if o.name):
                continue
            static_shape = n.op_type in ("Shape", "Size") and n.domain == ""
            if static_shape or all(v is None or id(v) in const for v in n.inputs):
                for o in n.outputs:
                    if o.name:
                        const[id(o)] = known[id(o)]

    walk(graph, True)
    return const


def _signature(module: Module, v: Value, default: bool) -> dict[str, Any]:
    t = v.type
    entry: dict[str, Any] = {"name": v.name, "kind": "tensor", "dtype": None, "shape": None}
    if isinstance(t, TensorType):
        if t.dtype != DType.UNDEFINED:
            entry["dtype"] = "object" if t.dtype == DType.STRING else t.dtype.numpy.name
        entry["shape"] = None if t.shape is None else tuple(t.shape)
    elif isinstance(t, SequenceType):
        entry["kind"] = "sequence"
    elif isinstance(t, OptionalType):
        entry["kind"] = "optional"
    elif t is not None:
        entry["kind"] = "other"
    if default:
        entry["default"] = module.weights.add(v.const, v.name) if v.const is not None else None
    return entry


def _ref_view(k: Any) -> dict[str, Any]:
    return {
        "attr": k.attr, "op_src": literal(k.op_type), "domain_src": literal(k.domain), "opset": k.opset,
        "ctx_opset": k.ctx_opset, "attrs_src": k.attrs_src, "n_outputs": k.n_outputs,
    }


def _linemap(model_src: str, labels: list[str]) -> str:
    rx = re.compile(r"^\s*" + re.escape(MARKER) + r"(\d+):")
    lines = []
    for lineno, text in enumerate(model_src.splitlines(), start=1):
        m = rx.match(text)
        if m:
            lines.append((lineno, int(m.group(1))))
    return (
        '"""Generated line → graph node map of model.py (for error messages); do not edit."""\n\n'
        f"LINES = {_rows(lines)}\nLABELS = {_rows(labels)}\n"
    )


def _rows(items: list) -> str:
    """A tuple display with one item per line, as black writes long ones."""
    if not items:
        return "()"
    return "(\n" + "".join(f"    {literal(item)},\n" for item in items) + ")"


def _manifest(info: ArtifactInfo, ins: list, outs: list, table: list, module: Module, memory: dict, vendored: list[str]) -> dict[str, Any]:
    def sig(entries: list) -> list:
        return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in e.items() if k != "default"} for e in entries]

    return {
        "format": FORMAT,
        "package": info.package,
        "torsh_gen_version": info.version,
        "target": info.target,
        "source": {"name": info.source_name, "sha256": info.source_sha256},
        "level": info.level,
        "passes": list(info.passes),
        "inputs": sig(ins),
        "outputs": sig(outs),
        "nodes": {"fast": module.fast_nodes, "reference": module.ref_nodes, "kernels": len(module.kernel_sources)},
        "reference_modules": vendored,
        "memory_plan": memory,
        "weights": {"file": FILE_NAME, "bytes": module.weights.nbytes, "tensors": table},
    }
