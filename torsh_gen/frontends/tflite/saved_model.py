"""TensorFlow SavedModel folder → IR Graph, through tf2onnx (the ``tensorflow`` extra).

TensorFlow graphs have thousands of op types and their own control flow; tf2onnx already
maps them to ONNX, so this frontend freezes the SavedModel's serving signature with it,
converts to an ONNX ModelProto in memory and imports that with the ONNX frontend. Without
TensorFlow and tf2onnx installed it fails with one line naming the extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torsh_gen.errors import ModelLoadError

#: The opset tf2onnx is asked for (what the IR's registry and onnxruntime cover).
OPSET = 17
EXTRA_HINT = "pip install 'torsh-gen[tensorflow]'"


def saved_model_folder(path: str | os.PathLike) -> Path | None:
    """The SavedModel folder ``path`` names (the folder, or its saved_model.pb), else None."""
    p = Path(path)
    if p.is_dir() and (p / "saved_model.pb").is_file():
        return p
    if p.name == "saved_model.pb" and p.is_file():
        return p.parent
    return None


def load_saved_model(path: str | os.PathLike) -> Any:
    """Convert the SavedModel at ``path`` (its serving signature) into an IR Graph."""
    folder = saved_model_folder(path)
    if folder is None:
        raise ModelLoadError(
            f"{path}: not a TensorFlow SavedModel folder (no saved_model.pb inside)"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines
    try:
        import tensorflow  # noqa: F401
        from tf2onnx import convert, tf_loader
    except ImportError:
        raise ModelLoadError(
            f"{folder}: converting a TensorFlow SavedModel needs TensorFlow and tf2onnx: "
            f"{EXTRA_HINT}"
        ) from None
    from torsh_gen.frontends.onnx import graph_from_model

    try:
        with _quiet_logs():
            graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
                str(folder), None, None, return_tensors_to_rename=True
            )
            model, _ = convert.from_graph_def(
                graph_def,
                name=folder.name,
                input_names=inputs,
                output_names=outputs,
                opset=OPSET,
                tensors_to_rename=renames,
            )
    except Exception as e:  # TensorFlow and tf2onnx raise many kinds of errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"{folder}: tf2onnx could not convert the SavedModel: {first[:300]}"
        ) from None
    graph = graph_from_model(model, source_name=str(folder))
    tf_ops = Counter(
        n.op for n in graph_def.node if n.op not in ("Placeholder", "Const", "NoOp", "Identity")
    )
    graph.meta["conversion"] = {
        "source": "tensorflow",
        "mapped": dict(sorted(tf_ops.items())),
        "compositions": {},
        "precision": [],
        "via": "tf2onnx",
    }
    return graph


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Hold TensorFlow's and tf2onnx's Python logs to errors while converting.

    tf2onnx logs the tracebacks of optional graph optimizations it skips; they are not
    failures, and a command's output should be its result.
    """
    loggers = [logging.getLogger(name) for name in ("tensorflow", "tf2onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
