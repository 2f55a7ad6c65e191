"""The TVM artifact: the exported library, the weights, the manifest and a Python package.

    DIR/model.so        the library TVM built and exported (host code + device kernels)
    DIR/weights.bin     the weights, in parameter order, each at a 64-byte offset
    DIR/manifest.json   source, target, passes, inputs/outputs, the weights' layout (a
                        narrow input or output, float8 or int4..., has the model's dtype
                        and ``"storage": "uint8"``: the package views it as bytes)
    DIR/__init__.py     ``run(**inputs)`` and ``Model``, importing numpy and TVM's runtime
    DIR/kernels/        device kernel source of GPU targets (CUDA C, Metal, OpenCL C)
    DIR/tuning/         MetaSchedule's database when built with ``--tune``

Model-derived strings (tensor names, doc strings) appear only in manifest.json; the Python
package is the same template for every model, black-clean and deterministic.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.backends.llvm.artifact import ArtifactInfo, PackageResult, npy_file_names, write_json
from torsh_gen.backends.tvm.narrow import STORAGE, is_narrow, to_storage
from torsh_gen.ir.graph import Graph, Value
from torsh_gen.ir.types import TensorType

FORMAT = "torsh-gen-tvm/1"
LIBRARY = "model.so"
WEIGHTS = "weights.bin"
TUNING = "tuning"
ALIGN = 64
TVM_REQUIREMENT = "apache-tvm==0.27.0.post1"

#: Source files of device kernels, by the TVM module kind that holds them.
_KERNEL_SUFFIX = {"cuda": ".cu", "metal": ".metal", "opencl": ".cl", "vulkan": ".spv", "rocm": ".ll"}


def write_package(graph: Graph, folder: Path, info: ArtifactInfo) -> PackageResult:
    """Convert, build and export ``graph`` for ``info.target`` into the empty ``folder``."""
    from torsh_gen.backends.tvm.build import TARGETS, build, require_tvm
    from torsh_gen.backends.tvm.convert import to_relax

    tvm = require_tvm()
    folder = Path(folder)
    module = to_relax(graph)
    tune_dir = _tuning(module, info, folder)
    executable = build(module.mod, info.target, tune_dir=str(tune_dir) if tune_dir else None)
    executable.export_library(str(folder / LIBRARY))
    kernels = _write_kernel_sources(executable, folder)
    weights, entries = _weights_blob(module.params)
    (folder / WEIGHTS).write_bytes(weights)
    spec = TARGETS[info.target]
    data = {
        "format": FORMAT,
        "package": info.package,
        "torsh_gen_version": info.version,
        "backend": "tvm",
        "target": info.target,
        "device": "cpu" if spec.kind == "llvm" else spec.kind,
        "tvm": {"version": tvm.__version__, "requirement": TVM_REQUIREMENT, "target": _target_json(info.target)},
        "source": {"name": info.source_name, "sha256": info.source_sha256},
        "level": info.level,
        "passes": list(info.passes),
        "inputs": _io_entries(module.inputs, "input"),
        "outputs": _io_entries(module.outputs, "output"),
        "transform_params": _has_function(executable, "main_transform_params"),
        "weights": {"file": WEIGHTS, "bytes": len(weights), "tensors": entries},
        "files": {"library": LIBRARY, "weights": WEIGHTS, "kernels": kernels},
    }
    write_json(folder / "manifest.json", data)
    _render_package(folder, info, spec.name)
    listed = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    memory = {"weights_bytes": len(weights)}
    return PackageResult(listed, len(graph.nodes), 0, len(kernels), len(weights), memory)


def _tuning(module: Any, info: ArtifactInfo, folder: Path) -> Path | None:
    """The tuning records the build applies: those of the artifact being replaced (copied
    into ``folder/tuning``), extended by ``--tune N`` trials of MetaSchedule; None when
    there are none. Only CPU builds are tuned: tuning measures on the device."""
    import shutil

    trials = int(getattr(info, "tune", 0) or 0)
    previous = getattr(info, "previous_dir", None)
    tune_dir = folder / TUNING
    if previous is not None and (Path(previous) / TUNING).is_dir():
        shutil.copytree(Path(previous) / TUNING, tune_dir)
    if trials:
        from torsh_gen.backends.tvm.tune import tune
        from torsh_gen.errors import InputError

        dynamic = [v.name for v in module.inputs if not (isinstance(v.type, TensorType) and v.type.is_static)]
        if dynamic:
            raise InputError(
                f"--tune needs static shapes (MetaSchedule tunes one shape); input(s) {dynamic} have symbolic "
                "dims: bind them with --input-shape, e.g. --input-shape batch=1"
            )
        tune(module.mod, info.target, trials, str(tune_dir), progress=getattr(info, "progress", None))
    return tune_dir if tune_dir.is_dir() else None


def _target_json(name: str) -> Any:
    import json

    from torsh_gen.backends.tvm.build import tvm_target

    return json.loads(json.dumps(dict(tvm_target(name).export()), default=str))


def _has_function(executable: Any, name: str) -> bool:
    """Whether the VM executable defines function ``name`` (its statistics list the
    globals; the executable has no other query that works without a device)."""
    for line in executable.stats().splitlines():
        if line.strip().startswith("Globals"):
            names = line.split(":", 1)[1].strip().strip("[]")
            return name in [n.strip() for n in names.split(",")]
    return False


def _weights_blob(params: list[np.ndarray]) -> tuple[bytes, list[dict[str, Any]]]:
    """The weights concatenated at ``ALIGN``-byte offsets, and each one's place."""
    chunks: list[bytes] = []
    entries = []
    offset = 0
    for arr in params:
        pad = -offset % ALIGN
        chunks.append(b"\0" * pad)
        offset += pad
        arr = to_storage(np.asarray(arr, order="C"))
        data = arr.tobytes()
        entries.append({"offset": offset, "dtype": _dtype_name(arr.dtype), "shape": list(arr.shape)})
        chunks.append(data)
        offset += len(data)
    return b"".join(chunks), entries


def _dtype_name(dtype: np.dtype) -> str:
    return "bool" if dtype == np.bool_ else np.dtype(dtype).name


def _io_entries(values: list[Value], prefix: str) -> list[dict[str, Any]]:
    files = npy_file_names([v.name for v in values], prefix)
    out = []
    for v, f in zip(values, files):
        t = v.type
        assert isinstance(t, TensorType)
        shape = [d if isinstance(d, int) else str(d or "?") for d in (t.shape or ())]
        entry = {"name": v.name, "dtype": _dtype_name(t.dtype.numpy), "shape": shape, "file": f}
        if is_narrow(t.dtype):  # the model's dtype, and the bytes the library takes
            entry["storage"] = STORAGE
        out.append(entry)
    return out


def _write_kernel_sources(executable: Any, folder: Path) -> list[str]:
    """Device kernels' source (CUDA C, Metal, OpenCL C...) beside the library, so that a
    target that cannot run here can still be read and checked."""
    written = []
    for module in _device_modules(executable.mod):
        kind = module.kind
        suffix = _KERNEL_SUFFIX.get(kind)
        if suffix is None:
            continue
        try:
            source = module.inspect_source()
        except Exception:  # noqa: BLE001  (a module without source keeps only its binary)
            continue
        if not source:
            continue
        (folder / "kernels").mkdir(exist_ok=True)
        name = f"kernels/{kind}{suffix}"
        (folder / name).write_text(source)
        written.append(name)
    return written


def _device_modules(root: Any) -> list[Any]:
    seen, stack, out = set(), [root], []
    while stack:
        m = stack.pop()
        for sub in getattr(m, "imports", []):
            if id(sub) not in seen:
                seen.add(id(sub))
                out.append(sub)
                stack.append(sub)
    return out


@functools.cache
def _environment() -> Any:
    import jinja2

    try:
        loader: jinja2.BaseLoader = jinja2.PackageLoader("torsh_gen.templates", "tvm")
    except (ModuleNotFoundError, ValueError):
        loader = jinja2.FileSystemLoader(Path(__file__).resolve().parents[3] / "templates" / "tvm")
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _render_package(folder: Path, info: ArtifactInfo, target: str) -> None:
    """The package's ``__init__.py``: one template, written black-formatted, the same for
    every model but for the package name and versions (tests check it stays black-clean)."""
    template = _environment().get_template("__init__.py.j2")
    text = template.render(P=info.package, version=info.version, target=target, tvm_requirement=TVM_REQUIREMENT)
    (folder / "__init__.py").write_text(text)
