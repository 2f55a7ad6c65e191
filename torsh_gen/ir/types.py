"""Types of IR values: tensor element types, symbolic shapes, sequences and optionals.

Element types mirror ONNX's ``TensorProto.DataType`` numbering so that import and export
are a lookup, and map to numpy dtypes (``ml_dtypes`` supplies bfloat16, the float8
variants, float4 and the 4- and 2-bit integers) so that the reference kernels can hold
every tensor as a plain ``numpy.ndarray``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import ml_dtypes
import numpy as np


class DType(enum.IntEnum):
    """ONNX tensor element types, numbered as in ``onnx.TensorProto.DataType``."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26
    FLOAT6E2M3 = 27
    FLOAT6E3M2 = 28

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype that holds this element type in memory."""
        try:
            return _TO_NUMPY[self]
        except KeyError:
            raise ValueError(f"element type {self.name} has no numpy representation") from None

    @property
    def itemsize_bits(self) -> int:
        """Bits per element as stored packed in a model file (4 for int4, 8 for int8, ...)."""
        return _BITS.get(self, self.numpy.itemsize * 8 if self in _TO_NUMPY else 0)

    @property
    def is_float(self) -> bool:
        """True for every real floating-point type, including the 8-, 6- and 4-bit ones."""
        return self.name.startswith(("FLOAT", "DOUBLE", "BFLOAT"))

    @property
    def is_integer(self) -> bool:
        """True for signed and unsigned integer types of any width."""
        return self.name.startswith(("INT", "UINT"))

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        """The element type whose numpy representation is ``dtype``."""
        dt = np.dtype(dtype)
        if dt.kind in "US" or dt == np.dtype(object):
            return cls.STRING
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            raise ValueError(f"numpy dtype {dt} has no ONNX element type") from None


_TO_NUMPY: dict[DType, np.dtype] = {
    DType.FLOAT: np.dtype(np.float32),
    DType.UINT8: np.dtype(np.uint8),
    DType.INT8: np.dtype(np.int8),
    DType.UINT16: np.dtype(np.uint16),
    DType.INT16: np.dtype(np.int16),
    DType.INT32: np.dtype(np.int32),
    DType.INT64: np.dtype(np.int64),
    DType.STRING: np.dtype(object),
    DType.BOOL: np.dtype(np.bool_),
    DType.FLOAT16: np.dtype(np.float16),
    DType.DOUBLE: np.dtype(np.float64),
    DType.UINT32: np.dtype(np.uint32),
    DType.UINT64: np.dtype(np.uint64),
    DType.COMPLEX64: np.dtype(np.complex64),
    DType.COMPLEX128: np.dtype(np.complex128),
    DType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    DType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    DType.UINT4: np.dtype(ml_dtypes.uint4),
    DType.INT4: np.dtype(ml_dtypes.int4),
    DType.FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
}
for _name, _code in (
    ("float8_e8m0fnu", DType.FLOAT8E8M0),
    ("uint2", DType.UINT2),
    ("int2", DType.INT2),
    ("float6_e2m3fn", DType.FLOAT6E2M3),
    ("float6_e3m2fn", DType.FLOAT6E3M2),
):
    if hasattr(ml_dtypes, _name):
        _TO_NUMPY[_code] = np.dtype(getattr(ml_dtypes, _name))

_FROM_NUMPY: dict[np.dtype, DType] = {v: k for k, v in _TO_NUMPY.items() if k != DType.STRING}
_BITS = {
    DType.UINT4: 4,
    DType.INT4: 4,
    DType.FLOAT4E2M1: 4,
    DType.UINT2: 2,
    DType.INT2: 2,
    DType.FLOAT6E2M3: 6,
    DType.FLOAT6E3M2: 6,
}

#: One dimension: a known size, a symbol (``"batch"``) or unknown (``None``).
Dim = int | str | None


@dataclass(frozen=True)
class TensorType:
    """A tensor's element type and shape; ``shape is None`` means the rank is unknown."""

    dtype: DType
    shape: tuple[Dim, ...] | None = None

    @property
    def rank(self) -> int | None:
        """Number of dimensions, or None when unknown."""
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def numel(self, bindings: dict[str, int] | None = None) -> int | None:
        """Element count, binding symbolic dims from ``bindings``; None when not computable."""
        if self.shape is None:
            return None
        total = 1
        for d in self.shape:
            if isinstance(d, str) and bindings and d in bindings:
                d = bindings[d]
            if not isinstance(d, int):
                return None
            total *= d
        return total

    def nbytes(self, bindings: dict[str, int] | None = None) -> int | None:
        """Bytes as stored packed (4-bit types two per byte); None when the size is unknown."""
        n = self.numel(bindings)
        bits = self.dtype.itemsize_bits
        if n is None or not bits:
            return None
        return (n * bits + 7) // 8

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype.name.lower()}[*]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype.name.lower()}[{dims}]"


@dataclass(frozen=True)
class SequenceType:
    """An ONNX sequence of values of one type."""

    elem: Type | None

    def __str__(self) -> str:
        return f"seq<{self.elem if self.elem is not None else '?'}>"


@dataclass(frozen=True)
class OptionalType:
    """An ONNX optional: a value of ``elem`` type, or nothing."""

    elem: Type | None

    def __str__(self) -> str:
        return f"optional<{self.elem if self.elem is not None else '?'}>"


@dataclass(frozen=True)
class MapType:
    """An ONNX map (used by a few ai.onnx.ml ops)."""

    key: DType
    value: Type | None

    def __str__(self) -> str:
        return f"map<{self.key.name.lower()},{self.value}>"


Type = TensorType | SequenceType | OptionalType | MapType


def tensor_type_of(array: np.ndarray) -> TensorType:
    """The static TensorType describing a concrete array."""
    return TensorType(DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))
