"""Prepare a model file for ``scaffold.serve``: load it, its ONNX bytes, and how to compile it.

The scaffold layer sits below tools (DESIGN rule 3), so it cannot load files or call the
compiler itself; this is the one place that joins them for the service generator.
"""

from __future__ import annotations

import os
from pathlib import Path

from torsh_gen.scaffold.serve import ServeModel


def serve_model(path: str | os.PathLike, *, level: str = "O3") -> ServeModel:
    """The model at ``path`` (.onnx or .torsh) ready for ``generate_service``.

    The onnxruntime engine ships the ONNX file as it is (a .torsh model, or one with
    external data files, is exported to one self-contained ONNX file first); the compiled
    engine gets the package ``torsh-gen compile`` would write, without prebuilt kernels
    (numba compiles them at the service's first start).
    """
    from torsh_gen.tools.compile import compile_model
    from torsh_gen.tools.loading import load_model, model_format

    p = Path(path)
    graph = load_model(p)
    if model_format(p) == ".onnx" and not _external_data(p):
        data = p.read_bytes()
    else:  # one self-contained file (models over 2 GB cannot be, and fail here)
        from torsh_gen.frontends.onnx import to_onnx

        data = to_onnx(graph).SerializeToString()

    def compile_artifact(folder: Path) -> None:
        compile_model(p, folder, target="cpu", level=level, precompile=False)

    return ServeModel(graph=graph, source=p.name, onnx=data, compile_artifact=compile_artifact)


def _external_data(path: Path) -> bool:
    """True when the ONNX file keeps tensors in separate data files."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
