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

    The onnxruntime engine ships the ONNX file as it is (a .torsh model is exported to
    ONNX first); the compiled engine gets the package ``torsh-gen compile`` would write,
    without prebuilt kernels (numba compiles them at the service's first start).
    """
    from torsh_gen.tools.compile import compile_model
    from torsh_gen.tools.loading import load_model, model_format

    p = Path(path)
    graph = load_model(p)
    if model_format(p) == ".onnx":
        data = p.read_bytes()
    else:
        from torsh_gen.frontends.onnx import to_onnx

        data = to_onnx(graph).SerializeToString()

    def compile_artifact(folder: Path) -> None:
        compile_model(p, folder, target="cpu", level=level, precompile=False)

    return ServeModel(graph=graph, source=p.name, onnx=data, compile_artifact=compile_artifact)
