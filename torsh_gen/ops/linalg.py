"""Linear algebra ops: MatMul, Gemm, Einsum, Det and the integer / quantized matmuls.

Float types narrower than 32 bits (float16, bfloat16, float8) are computed in float32 and
cast back, so that results do not depend on numpy's support for the small types. Integer
matmuls accumulate in int32 as ONNX requires (wrapping on overflow).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from torsh_gen.ir.types import TensorType
from torsh_gen.ops.registry import FLOAT, INT, STRING, Cost, InferContext, OpSpec, RunContext, op


def _wide(x: np.ndarray) -> np.ndarray:
    """``x`` in a dtype numpy computes well in: small floats become float32."""
    return x.astype(np.float32) if _is_small_float(x.dtype) else x


def _is_small_float(dt: np.dtype) -> bool:
    return dt.kind == "V" or (dt.kind == "f" and dt.itemsize < 4)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX MatMul on any dtype, with the result in the inputs' dtype."""
    if _is_small_float(a.dtype):
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)
    return np.asarray(np.matmul(a, b)).astype(a.dtype, copy=False)


def _static_shape(t: Any) -> tuple[int, ...] | None:
    if (
        isinstance(t, TensorType)
        and t.shape is not None
        and all(isinstance(d, int) for d in t.shape)
    ):
        return tuple(t.shape)  # type: ignore[arg-type]
    return None


def _scaled(x: np.ndarray, f: float) -> np.ndarray:
    """x * f, in x's dtype for floats (float64 for integers, cast back by the caller)."""
    if f == 1.0:
        return x
    return x * np.asarray(f, dtype=x.dtype if x.dtype.kind == "f" else np.float64)


def _matmul_cost(spec: OpSpec, ctx: InferContext, output_types: list[Any]) -> Cost:
    """MACs = output elements * K, where K is the contracted length of input A."""
    a = _static_shape(ctx.input_type(0))
    out = _static_shape(output_types[0] if output_types else None)
    base = OpSpec.cost(spec, ctx, output_types)
    if a is None or out is None or not a:
        return base
    macs = math.prod(out) * a[-1]
    return Cost(macs, 2 * macs, base.bytes_read, base.bytes_written)


@op("MatMul", since=1)
class MatMul(OpSpec):
    """numpy.matmul semantics: N-d broadcasting of the batch dims, 1-D operands promoted."""

    def run(self, ctx: RunContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _matmul(a, b)

    def cost(self, ctx: InferContext, output_types: list[Any]) -> Cost:
        return _matmul_cost(self, ctx, output_types)


@op("Gemm", since=1)
class Gemm(OpSpec):
    """alpha * op(A) @ op(B) + beta * C with optional, unidirectionally broadcast C."""

    attrs = {
        "alpha": FLOAT(1.0),
        "beta": FLOAT(1.0),
        "transA": INT(0),
        "transB": INT(0),
        "broadcast": INT(0),
    }

    def run(
        self, ctx: RunContext, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None
    ) -> np.ndarray:
        at = ctx.attrs
        dt = a.dtype
        wa, wb = _wide(a), _wide(b)
        if at.transA:
            wa = wa.T
        if at.transB:
            wb = wb.T
        y = _scaled(np.matmul(wa, wb), at.alpha)
        if c is not None and at.beta != 0.0:
            y = y + _scaled(_wide(c), at.beta)
        return np.asarray(y).astype(dt, copy=False)

    def cost(self, ctx: InferContext, output_types: list[Any]) -> Cost:
        a = _static_shape(ctx.input_type(0))
        out = _static_shape(output_types[0] if output_types else None)
        base = super().cost(ctx, output_types)
        if a is None or out is None or len(a) != 2:
            return base
        k = a[0] if ctx.attrs.transA else a[1]
        macs = math.prod(out) * k
        return Cost(macs, 2 * macs + math.prod(out), base.bytes_read, base.bytes_written)


@op("Einsum", since=12)
class Einsum(OpSpec):
    """Einstein summation; the equation syntax (with ``...`` and implicit output) is numpy's."""

    attrs = {"equation": STRING(required=True)}

    def run(self, ctx: RunContext, *xs: np.ndarray) -> np.ndarray:
        eq = "".join(str(ctx.attrs.equation).split())
        dt = xs[0].dtype
        y = np.einsum(eq, *[_wide(x) for x in xs])
        return np.asarray(y).astype(dt, copy=False)


@op("Det", since=11)
class Det(OpSpec):
    """Determinant of the square matrices in the last two dims."""

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        wide = x.astype(np.float64) if _is_small_float(x.dtype) else x
        return np.asarray(np.linalg.det(wide)).astype(x.dtype)


def _row_zero_point(zp: np.ndarray | None, a: np.ndarray) -> np.ndarray:
    """A's zero point as a broadcastable int32 array: scalar, per row ([M]) or N-d ([..., M, 1])."""
    if zp is None:
        return np.zeros((), np.int32)
    z = zp.astype(np.int32)
    if z.ndim == 1 and z.size > 1 and a.ndim >= 2:  # one per row of A
        return z.reshape(-1, 1)
    return z


def _col_zero_point(zp: np.ndarray | None) -> np.ndarray:
    """B's zero point as a broadcastable int32 array: scalar, per column ([N]) or N-d."""
    return np.zeros((), np.int32) if zp is None else zp.astype(np.int32)


@op("MatMulInteger", since=10)
class MatMulInteger(OpSpec):
    """(A - a_zero_point) @ (B - b_zero_point) in int32; zero points per tensor/row/column."""

    def run(
        self,
        ctx: RunContext,
        a: np.ndarray,
        b: np.ndarray,
        a_zp: np.ndarray | None = None,
        b_zp: np.ndarray | None = None,
    ) -> np.ndarray:
        aa = a.astype(np.int32) - _row_zero_point(a_zp, a)
        bb = b.astype(np.int32) - _col_zero_point(b_zp)
        return np.matmul(aa, bb).astype(np.int32)

    def cost(self, ctx: InferContext, output_types: list[Any]) -> Cost:
        return _matmul_cost(self, ctx, output_types)


def _int_range(dt: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dt) if dt.kind in "iu" else None
    if info is not None:
        return int(info.min), int(info.max)
    import ml_dtypes

    i = ml_dtypes.iinfo(dt)
    return int(i.min), int(i.max)


def _per_row(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    s = s.astype(np.float64)
    return s.reshape(-1, 1) if s.ndim == 1 and s.size > 1 and a.ndim >= 2 else s


@op("QLinearMatMul", since=10)
class QLinearMatMul(OpSpec):
    """Quantized matmul: dequantize A and B, multiply, requantize with y's scale and zero point."""

    def run(
        self,
        ctx: RunContext,
        a: np.ndarray,
        a_scale: np.ndarray,
        a_zp: np.ndarray,
        b: np.ndarray,
        b_scale: np.ndarray,
        b_zp: np.ndarray,
        y_scale: np.ndarray,
        y_zp: np.ndarray,
    ) -> np.ndarray:
        acc = np.matmul(
            (a.astype(np.int64) - _row_zero_point(a_zp, a)).astype(np.float64),
            (b.astype(np.int64) - _col_zero_point(b_zp)).astype(np.float64),
        )
        sa = _per_row(a_scale, a)
        sb = b_scale.astype(np.float64)
        ys = y_scale.astype(np.float64)
        y = np.rint(acc * sa * sb / ys) + y_zp.astype(np.float64)
        lo, hi = _int_range(y_zp.dtype)
        return np.clip(y, lo, hi).astype(y_zp.dtype)

    def cost(self, ctx: InferContext, output_types: list[Any]) -> Cost:
        return _matmul_cost(self, ctx, output_types)
