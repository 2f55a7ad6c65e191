"""Collect activation statistics by running the model in onnxruntime with extra outputs.

A copy of the model lists the tensors to observe as additional graph outputs, so one
onnxruntime session run per calibration batch yields every activation at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from torsh_gen.errors import TorshGenError
from torsh_gen.frontends.onnx import to_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.passes.quantize import TensorRange
from torsh_gen.tools.quantize.calibrators import Calibrator, TensorStats


def ort_session(model: Any, extra_outputs: Sequence[str] = (), threads: int = 1) -> Any:
    """An onnxruntime CPU session for a Graph or ModelProto, with ``extra_outputs`` exposed."""
    import onnx
    import onnxruntime as ort

    proto = to_onnx(model, value_info=False) if isinstance(model, Graph) else model
    if extra_outputs:
        proto = onnx.ModelProto.FromString(proto.SerializeToString())
        have = {o.name for o in proto.graph.output}
        for name in extra_outputs:
            if name not in have:
                proto.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:
        raise TorshGenError(
            f"onnxruntime cannot load this model: {str(e).splitlines()[0]}"
        ) from None


def run_all(session: Any, feeds: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every output of ``session`` over all ``feeds``, concatenated along the batch axis."""
    names = [o.name for o in session.get_outputs()]
    return concat_batches(names, (session.run(names, dict(feed)) for feed in feeds))


def concat_batches(
    names: Sequence[str], batches: Iterable[Sequence[Any]]
) -> dict[str, np.ndarray]:
    """Outputs ``names`` of every batch run (one list of values per batch, in ``names``'
    order), concatenated along the batch axis (a scalar output: the first batch's)."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for values in batches:
        for n, v in zip(names, values):
            parts[n].append(np.asarray(v))
    return {
        n: np.concatenate(v) if v and v[0].ndim else (v[0] if v else np.zeros(0))
        for n, v in parts.items()
    }


def collect_stats(
    graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]], tensors: Sequence[str]
) -> dict[str, TensorStats]:
    """Statistics of each named float tensor over all calibration ``feeds``."""
    session = ort_session(graph, tensors)
    names = list(dict.fromkeys(tensors))
    stats = {n: TensorStats() for n in names}
    for feed in feeds:
        for n, v in zip(names, session.run(names, dict(feed))):
            stats[n].update(v)
    return stats


def calibrate(stats: Mapping[str, TensorStats], calibrator: Calibrator) -> dict[str, TensorRange]:
    """The range ``calibrator`` picks for every observed tensor."""
    return {n: calibrator.range(s) for n, s in stats.items() if s.count}
