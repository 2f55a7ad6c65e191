"""The ``quantize`` tool: calibration strategies, the accuracy guard and the report.

Graph rewrites live in ``torsh_gen.passes.quantize``; this package feeds them ranges
(calibration), decides which layers stay float (guard) and measures the result against
float32 and onnxruntime's own quantizer (report).
"""

from torsh_gen.tools.quantize.api import AccuracyGuardError, QuantizeConfig, quantize_model
from torsh_gen.tools.quantize.calibrators import (
    CALIBRATORS,
    Calibrator,
    EntropyCalibrator,
    MinMaxCalibrator,
    PercentileCalibrator,
    TensorStats,
)

__all__ = [
    "CALIBRATORS",
    "AccuracyGuardError",
    "Calibrator",
    "EntropyCalibrator",
    "MinMaxCalibrator",
    "PercentileCalibrator",
    "QuantizeConfig",
    "TensorStats",
    "quantize_model",
]
