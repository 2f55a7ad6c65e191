"""Write a standalone PyTorch training project for a model (``torsh-gen scaffold train``).

The project holds the model as ``nn.Module`` source (``lower.py`` decides its pieces,
``templates/train/model.py.j2`` writes them), its weights in safetensors, golden inputs and
outputs computed at generation time by the reference executor (the project's own tests
check the module against them), and a training script with its config, README, pinned
dependencies and tests. Generation needs no torch; the output is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import DType
from torsh_gen.ops.execute import run_graph
from torsh_gen.passes.manager import run_passes
from torsh_gen.scaffold.common import (
    TensorSpec,
    atomic_folder,
    identifier,
    markdown_code,
    package_name,
    py_string,
    render,
    write_tree,
)
from torsh_gen.scaffold.train.lower import TORCH_DTYPES, TorchModule, lower_graph

#: Exact versions the generated project pins (the set this generator is tested with).
PINS = {
    "torch": "2.13.0",
    "numpy": "2.4.6",
    "safetensors": "0.8.0",
    "tensorboard": "2.21.0",
    "pillow": "13.0.0",
    "onnx": "1.23.2",
    "onnxscript": "0.7.2",
    "onnxruntime": "1.32.0",
    "pytest": "9.2.0",
    "mlflow": "3.6.0",
}

#: Folder templates → output paths (``{pkg}`` is the package name).
TEMPLATES = {
    "README.md.j2": "README.md",
    "pyproject.toml.j2": "pyproject.toml",
    "config.toml.j2": "config.toml",
    "gitignore.j2": ".gitignore",
    "train_entry.py.j2": "train.py",
    "package_init.py.j2": "{pkg}/__init__.py",
    "model.py.j2": "{pkg}/model.py",
    "config.py.j2": "{pkg}/config.py",
    "data.py.j2": "{pkg}/data.py",
    "loop.py.j2": "{pkg}/train.py",
    "checkpoint.py.j2": "{pkg}/checkpoint.py",
    "export.py.j2": "{pkg}/export.py",
    "conftest.py.j2": "tests/conftest.py",
    "test_model.py.j2": "tests/test_model.py",
    "test_training.py.j2": "tests/test_training.py",
}

GOLDEN_BATCH = 2


@dataclass
class TrainScaffold:
    """What ``scaffold_train`` wrote: where, the package, and how the model was lowered."""

    out_dir: str
    package: str
    files: list[str]
    layers: list[str]
    functional_lines: int
    parameters: int

    def to_dict(self) -> dict:
        """Plain data for JSON/YAML output."""
        return dict(self.__dict__)


def prepare(graph: Graph) -> TorchModule:
    """Fold constant subgraphs (weights transposed by the model, shape arithmetic), then lower."""
    run_passes(graph, ["fold_constants", "eliminate_dead_code"])
    return lower_graph(graph)


def golden_data(graph: Graph, inputs: list[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs (symbolic dims bound to 2) and the reference executor's outputs."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        if spec.shape is None:
            raise InputError(f"input {py_string(spec.name)} has unknown rank; give the model static input ranks")
        shape = tuple(d if isinstance(d, int) else GOLDEN_BATCH for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, shape).astype(bool)
        else:
            arr = rng.integers(0, 2, shape).astype(dtype)
        feeds[spec.name] = arr
        arrays[f"input.{spec.ident}"] = arr
    runtime = [v for v in graph.inputs if not v.is_const]
    outs = run_graph(graph, {v.name: feeds[v.name] for v in runtime})
    for i, arr in enumerate(outs):
        arrays[f"output.{i}"] = np.ascontiguousarray(np.asarray(arr))
    return arrays


def safetensors_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as safetensors bytes (deterministic: keys sorted by the format)."""
    try:
        from safetensors.numpy import save
    except ImportError:
        raise InputError("scaffold train needs safetensors; install torsh-gen[torch]") from None
    clean = {k: np.ascontiguousarray(v) for k, v in sorted(arrays.items())}
    return save(clean, metadata={"format": "pt"})


def tensor_ctor(arr: np.ndarray) -> str:
    """``torch.zeros(shape, dtype=...)`` source for a placeholder the weights file fills."""
    dtype = TORCH_DTYPES[DType.from_numpy(arr.dtype)]
    shape = ", ".join(str(d) for d in arr.shape)
    tail = "" if dtype == "torch.float32" else f", dtype={dtype}"
    return f"torch.zeros(({shape}{',' if arr.ndim == 1 else ''}){tail})"


def _dims(specs: list[TensorSpec]) -> tuple[list[dict], list[str]]:
    """Input descriptions for templates: static dims, symbols as safe identifiers."""
    symbols: dict[str, str] = {}
    taken: set[str] = set()
    described = []
    for i, s in enumerate(specs):
        dims: list[int | str] = []
        for j, d in enumerate(s.shape or ()):
            if isinstance(d, int):
                dims.append(d)
                continue
            key = d if isinstance(d, str) else f"{s.ident}_dim{j}"
            if key not in symbols:
                symbols[key] = identifier(key, taken, fallback="dim")
            dims.append(symbols[key])
        described.append(
            {
                "ident": s.ident,
                "name": py_string(s.name),
                "md": markdown_code(s.name),
                "dims": dims,
                "dtype": TORCH_DTYPES.get(DType.from_numpy(np.dtype(s.dtype)), "torch.float32"),
                "is_float": np.dtype(s.dtype).kind == "f",
                "index": i,
            }
        )
    return described, sorted(set(symbols.values()))


def render_module(graph: Graph, package: str = "model", source: str = "model") -> tuple[str, bytes]:
    """Just the module: ``model.py`` source and its weights (safetensors bytes)."""
    module = prepare(graph)
    values = _values(module, package, source)
    return render("train", "model.py.j2", **values), safetensors_bytes(module.state_dict())


def _values(module: TorchModule, package: str, source: str) -> dict:
    """The template values shared by every file of the project."""
    inputs, symbols = _dims(module.inputs)
    outputs, _ = _dims(module.outputs)
    out_shape = module.outputs[0].shape or ()
    classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    return {
        "package": package,
        # for docstrings: an ASCII literal whose double quotes cannot close the docstring
        "source": py_string(source).replace('"', "\\x22"),
        "source_md": markdown_code(source),
        "module": module,
        "inputs": inputs,
        "outputs": outputs,
        "symbols": symbols,
        "classes": classes,
        "pins": PINS,
        "opset": 18,
        "tensor_ctor": tensor_ctor,
        "single_input": len(inputs) == 1,
    }


def build_files(graph: Graph, package: str, source: str) -> tuple[dict[str, str | bytes], TorchModule]:
    """Every file of the project (relative path → text or bytes) and the lowered module."""
    module = prepare(graph)
    values = _values(module, package, source)
    files: dict[str, str | bytes] = {}
    for template, path in TEMPLATES.items():
        files[path.format(pkg=package)] = render("train", template, **values)
    files[f"{package}/weights.safetensors"] = safetensors_bytes(module.state_dict())
    files["tests/golden.safetensors"] = safetensors_bytes(golden_data(graph, module.inputs))
    return files, module


def scaffold_train(graph: Graph, out: Path, *, name: str | None = None, source: str = "model", force: bool = False) -> TrainScaffold:
    """Generate the training project for ``graph`` into ``out`` (atomically).

    ``name`` is the Python package name (default: ``source``'s stem made an identifier);
    ``source`` is the model's file name, shown in docs. The graph is folded in place.
    """
    package = package_name(name or Path(source).stem)
    if name is not None and package != name:
        raise InputError(f"--name {name!r} is not a usable package name; try {package!r}")
    with atomic_folder(Path(out), force) as tmp:
        files, module = build_files(graph, package, Path(source).name)
        write_tree(tmp, files)
    state = module.state_dict()
    return TrainScaffold(
        out_dir=str(out),
        package=package,
        files=sorted(files),
        layers=[layer.ident for layer in module.layers],
        functional_lines=len(module.body) - len(module.layers),
        parameters=int(sum(a.size for k, a in state.items() if np.asarray(a).dtype.kind == "f")),
    )

