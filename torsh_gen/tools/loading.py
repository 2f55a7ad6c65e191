"""Load and save models by file extension, verified on the way in.

Each input format has one loader in ``LOADERS`` (extension → function), so a new frontend
adds one entry here and every command (inspect, run, compile, convert, …) accepts it.
Loaders import their frontend lazily: a missing optional extra fails only for its format.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torsh_gen.errors import InputError, ModelLoadError
from torsh_gen.frontends.onnx import load_onnx, save_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.serialize import MAGIC, load_torsh, save_torsh
from torsh_gen.ir.verify import verify

# Output formats: extension → format name.
FORMATS = {".onnx": "onnx", ".torsh": "torsh"}


def _load_tflite(path: Path) -> Graph:
    from torsh_gen.frontends.tflite import load_tflite

    return load_tflite(path)


def _load_saved_model(path: Path) -> Graph:
    from torsh_gen.frontends.tflite.saved_model import load_saved_model

    return load_saved_model(path)


# A TensorFlow SavedModel is a folder (with saved_model.pb), not an extension.
SAVED_MODEL = "saved_model/"

# Input formats: extension → loader(path) -> Graph.
LOADERS: dict[str, Callable[[Path], Graph]] = {
    ".onnx": load_onnx,
    ".torsh": load_torsh,
    ".tflite": _load_tflite,
    SAVED_MODEL: _load_saved_model,
}


def _torch_loader(name: str) -> Callable[[Path], Graph]:
    """A loader that imports the PyTorch frontend (and torch) only when a file needs it."""

    def load(path: Path) -> Graph:
        from torsh_gen.frontends import torch as torch_frontend

        return getattr(torch_frontend, name)(path)

    load.__name__ = name
    return load


def _load_torchscript(path: Path, input_shapes: Sequence[str] | None) -> Graph:
    from torsh_gen.frontends.torch import load_torchscript
    from torsh_gen.frontends.torch.inputs import parse_input_specs

    return load_torchscript(path, parse_input_specs(list(input_shapes or [])))


LOADERS[".pt2"] = _torch_loader("load_pt2")
LOADERS[".pt"] = _torch_loader("load_torchscript")
# Formats whose file records no input shapes: their loader also takes the --input-shape specs.
SHAPED_LOADERS: dict[str, Callable[[Path, Sequence[str] | None], Graph]] = {
    ".pt": _load_torchscript,
}
for _suffix in (".pth", ".bin", ".safetensors"):
    LOADERS[_suffix] = _torch_loader("refuse_bare_checkpoint")


def model_format(path: str | os.PathLike) -> str:
    """The input extension that picks the loader ('.onnx', '.torsh', …).

    Files with another extension are sniffed: the .torsh magic, else ONNX.
    """
    p = Path(path)
    if (p.is_dir() and (p / "saved_model.pb").is_file()) or p.name == "saved_model.pb":
        return SAVED_MODEL
    if p.is_dir():
        raise InputError(f"{p}: is a folder without saved_model.pb; give a model file or a TensorFlow SavedModel folder")
    suffix = p.suffix.lower()
    if suffix in LOADERS:
        return suffix
    if p.is_file():
        with open(p, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                return ".torsh"
        return ".onnx"
    known = ", ".join(sorted(LOADERS))
    raise InputError(f"{p}: unknown model format '{p.suffix}'; use one of {known}")


def load_model(path: str | os.PathLike, input_shapes: Sequence[str] | None = None) -> Graph:
    """Load a model in any supported input format and check it with the IR verifier.

    ``input_shapes`` (``--input-shape`` specs, ``x=1x3x224x224[:int64]``) reach only the
    loaders of formats that record no input shapes (TorchScript); other formats ignore
    them here and commands use them to bind symbolic dims.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file; check the path")
    fmt = model_format(p)
    shaped = SHAPED_LOADERS.get(fmt)
    graph = shaped(p, input_shapes) if shaped else LOADERS[fmt](p)
    try:
        verify(graph)
    except InputError as e:
        raise type(e)(f"{p}: {e}") from None
    return graph


def save_model(graph: Graph, path: str | os.PathLike) -> Path:
    """Write ``graph`` in the format its extension names (.onnx or .torsh)."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"{p}: output extension must be .onnx or .torsh")
    return save_torsh(graph, p) if fmt == "torsh" else save_onnx(graph, p)
