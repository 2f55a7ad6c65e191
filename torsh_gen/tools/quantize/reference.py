"""onnxruntime's own quantizer on the same model and data, as the anchor of every report.

Maps our options onto ``onnxruntime.quantization`` (``quantize_dynamic``,
``quantize_static`` with the same calibration method, or ``MatMulNBitsQuantizer`` for
int4 weights) and returns the model it writes, or why it could not be made.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.passes.quantize import QuantFormat, QuantMode, QuantOptions


class _Reader:
    """The CalibrationDataReader protocol over our checked feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - called by some onnxruntime versions
        pass


def ort_quantize(
    model: Any, options: QuantOptions, method: str, calib: Sequence[dict[str, np.ndarray]] | None
) -> tuple[Any | None, str]:
    """(onnxruntime's quantized ModelProto, "") or (None, why it was not made)."""
    import onnx

    try:
        from onnxruntime import quantization as q
    except ImportError as e:  # pragma: no cover - onnxruntime is a core dependency
        return None, f"onnxruntime.quantization unavailable ({e})"
    for name in (
        "",
        "onnxruntime",
        "onnxruntime.quantization",
        "onnxruntime.quantization.matmul_nbits_quantizer",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="torsh-gen-ortq-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "quant.onnx"
        onnx.save(model, src)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its calibrators print progress
                if options.mode == QuantMode.DYNAMIC:
                    q.quantize_dynamic(
                        src, dst, per_channel=options.per_channel, weight_type=q.QuantType.QInt8
                    )
                elif options.mode == QuantMode.STATIC:
                    if not calib:
                        return None, "static quantization needs calibration data"
                    methods = {
                        "minmax": q.CalibrationMethod.MinMax,
                        "percentile": q.CalibrationMethod.Percentile,
                        "entropy": q.CalibrationMethod.Entropy,
                    }
                    q.quantize_static(
                        src,
                        dst,
                        _Reader(calib),
                        quant_format=(
                            q.QuantFormat.QDQ
                            if options.format == QuantFormat.QDQ
                            else q.QuantFormat.QOperator
                        ),
                        per_channel=options.per_channel,
                        activation_type=(
                            q.QuantType.QInt8 if options.symmetric else q.QuantType.QUInt8
                        ),
                        weight_type=q.QuantType.QInt8,
                        calibrate_method=methods[method],
                        extra_options={
                            "ActivationSymmetric": options.symmetric,
                            "WeightSymmetric": True,
                        },
                    )
                else:
                    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

                    quant = MatMulNBitsQuantizer(
                        onnx.load(src), block_size=options.block_size, is_symmetric=True
                    )
                    quant.process()
                    quant.model.save_model_to_file(str(dst), False)
        except Exception as e:  # onnxruntime's tool raises anything; the report says why
            return (
                None,
                f"onnxruntime's quantizer failed: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}",
            )
        return onnx.load(dst), ""
