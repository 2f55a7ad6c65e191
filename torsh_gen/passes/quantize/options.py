"""Typed quantization options: what to quantize, how, and in which ONNX form.

Every choice the ``quantize`` command offers is a field here with its own type, so a
new option is a new field that type checkers and tests see, not a key in a string bag.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class QuantMode(enum.StrEnum):
    """What gets quantized and when its scales are known."""

    DYNAMIC = "dynamic"  # int8 weights now, activations quantized at run time
    STATIC = "static"  # int8 weights and activations, activation ranges from calibration
    WEIGHT_INT4 = "weight-int4"  # block-wise int4 weights, float activations


class QuantFormat(enum.StrEnum):
    """How quantized ops are written in ONNX."""

    QDQ = "qdq"  # float ops wrapped in QuantizeLinear/DequantizeLinear pairs
    QOPERATOR = "qoperator"  # integer ops (QLinearConv, QLinearMatMul, MatMulInteger, ...)


#: Modes that have a QOperator form (int4 weights exist only as DequantizeLinear).
QOPERATOR_MODES = (QuantMode.DYNAMIC, QuantMode.STATIC)


@dataclass(frozen=True)
class QuantOptions:
    """How to quantize a graph.

    ``include``/``exclude`` hold op types (``Conv``) or node names; an empty ``include``
    means every quantizable node. ``keep_float`` names nodes the accuracy guard sent back
    to float (kept apart from ``exclude`` so reports can tell the two reasons apart).
    """

    mode: QuantMode = QuantMode.STATIC
    format: QuantFormat = QuantFormat.QDQ
    per_channel: bool = False
    symmetric: bool = False  # activations: int8 around zero instead of uint8 with a zero point
    block_size: int = 32
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    keep_float: frozenset[str] = field(default_factory=frozenset)

    def with_keep_float(self, names: frozenset[str] | set[str]) -> QuantOptions:
        """A copy that also keeps ``names`` in float."""
        return QuantOptions(
            self.mode,
            self.format,
            self.per_channel,
            self.symmetric,
            self.block_size,
            self.include,
            self.exclude,
            frozenset(names),
        )


@dataclass(frozen=True)
class TensorRange:
    """The calibrated float range of one activation tensor."""

    lo: float
    hi: float
