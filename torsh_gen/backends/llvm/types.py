"""LLVM types of kernel-IR element types: ``bool`` is i1 in registers and i8 in memory."""

from __future__ import annotations

from llvmlite import ir

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
VOID = ir.VoidType()
I8P = I8.as_pointer()

_VALUE = {
    "f32": F32, "f64": F64, "i8": I8, "u8": I8, "i16": ir.IntType(16), "u16": ir.IntType(16),
    "i32": I32, "u32": I32, "i64": I64, "u64": I64, "bool": I1,
}


def value_type(dtype: str) -> ir.Type:
    """The register type of ``dtype``."""
    return _VALUE[dtype]


def memory_type(dtype: str) -> ir.Type:
    """The in-memory type of ``dtype`` (bool is a byte)."""
    return I8 if dtype == "bool" else _VALUE[dtype]


def vector_of(t: ir.Type, width: int) -> ir.VectorType:
    """``<width x t>``."""
    return ir.VectorType(t, width)
