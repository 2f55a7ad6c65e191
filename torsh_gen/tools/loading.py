"""Load and save models by file extension (.onnx, .torsh), verified on the way in."""

from __future__ import annotations

import os
from pathlib import Path

from torsh_gen.errors import InputError, ModelLoadError
from torsh_gen.frontends.onnx import load_onnx, save_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.serialize import MAGIC, load_torsh, save_torsh
from torsh_gen.ir.verify import verify

FORMATS = {".onnx": "onnx", ".torsh": "torsh"}


def model_format(path: str | os.PathLike) -> str:
    """'onnx' or 'torsh' from the extension; sniffs the magic for other names."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt:
        return fmt
    if p.is_file():
        with open(p, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                return "torsh"
        return "onnx"
    raise InputError(f"{p}: unknown model format '{p.suffix}'; use .onnx or .torsh")


def load_model(path: str | os.PathLike) -> Graph:
    """Load an ONNX or .torsh model and check it with the IR verifier."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file; check the path")
    graph = load_torsh(p) if model_format(p) == "torsh" else load_onnx(p)
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
