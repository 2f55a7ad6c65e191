"""Narrow element types in the TVM backend: the float8 types (e4m3fn, e4m3fnuz, e5m2,
e5m2fnuz, e8m0), float4e2m1 and the 4- and 2-bit integers, held as ``uint8``.

Why not TVM's own dtypes: TVM 0.27 converts float8 wrongly (e4m3fn 1e6 becomes -15) and
cannot build int4, uint4 or float4 code at all. So a tensor of one of these types is a
``uint8`` tensor in Relax and TIR, one element per byte in the low bits: the layout
ml_dtypes (and so numpy) uses, which lets inputs and outputs cross as views, without a
copy. Data-movement converters (Reshape, Transpose, Concat, Gather, Slice...) never read
values, so they move these bytes unchanged; ``Ctx.dtype`` declines the narrow types, so
a converter that computes on values refuses such a node instead of computing on bits.

The conversions are ours: ``decode`` (bits → float32, or int32 for the integers) and
``encode`` (any value → bits: round to nearest even, saturation as ONNX's Cast and
QuantizeLinear ask, NaN and infinity per format, the "fnuz" variants). Their bit-level
rules are the native backend's (``kernel/storage.py``): its kernel-IR expressions for a
load and a store are translated here into TIR (``_tir``), so both backends convert by
the same rules, float8e8m0's rounding modes included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from torsh_gen.backends.kernel.ir import Bin, Bitcast, Cast, Const, Expr, Select, Un, Var
from torsh_gen.backends.kernel.lower import KERNEL_DTYPES
from torsh_gen.backends.kernel.storage import (
    E8M0,
    E8M0_ROUND_MODES,
    SMALL_INTS,
    STORAGE_DTYPES,
    e8m0_bits,
    from_f32,
    saturated,
    to_f32,
)
from torsh_gen.ir.graph import Value
from torsh_gen.ir.types import DType, TensorType

#: The TVM dtype every narrow tensor is held in.
STORAGE = "uint8"
#: Narrow element types → their names in ``kernel/storage.py``: the types it holds in one
#: byte (float8 and float8e8m0, float4, the 4- and 2-bit integers).
NARROW: dict[DType, str] = {d: k for d, k in KERNEL_DTYPES.items() if STORAGE_DTYPES.get(k) == "u8"}
#: The float8 types whose Cast and QuantizeLinear obey ``saturate`` (float4 has no
#: infinity: it always saturates; float8e8m0 saturates by its own rule).
SATURATING = frozenset({"f8e4m3fn", "f8e4m3fnuz", "f8e5m2", "f8e5m2fnuz"})
#: float8e8m0's rounding modes (Cast's ``round_mode``).
ROUND_MODES = E8M0_ROUND_MODES

#: Kernel-IR element types → TVM dtypes.
_TVM = {
    "f32": "float32",
    "f64": "float64",
    "i8": "int8",
    "u8": "uint8",
    "i16": "int16",
    "u16": "uint16",
    "i32": "int32",
    "u32": "uint32",
    "i64": "int64",
    "u64": "uint64",
    "bool": "bool",
}
#: Sources whose every value float32 holds exactly. Others (float64, 32- and 64-bit
#: integers) go to float8 and float4 through float32 (rounding twice, as ml_dtypes,
#: onnxruntime and onnx's reference do) but to float8e8m0 as float64, whose rule reads
#: the exact value's bits and rounds once, as the op's reference does.
_EXACT_IN_F32 = ("float32", "float16", "bfloat16", "int8", "uint8", "int16", "uint16", "bool")

#: FuseOps' pattern kind of a function it must not fuse (``relax.OpPatternKind.kOpaque``).
_OPAQUE = 8


class Builder(Protocol):
    """What the conversions need of a converter's ``Ctx`` (convert.py imports this module,
    so it is named by its shape, not imported)."""

    bb: Any
    env: dict[int, Any]

    def emit(self, expr: Any) -> Any: ...

    def x(self, value: Value | None) -> Any: ...

    def weight(self, array: np.ndarray) -> Any: ...


def is_narrow(dtype: DType) -> bool:
    """Whether ``dtype`` is held as raw bytes (``STORAGE``) by the TVM backend."""
    return dtype in NARROW


def is_integer(dtype: DType) -> bool:
    """Whether a narrow ``dtype`` is one of the 4- and 2-bit integers (decoded to int32)."""
    return NARROW.get(dtype) in SMALL_INTS


def to_storage(array: np.ndarray) -> np.ndarray:
    """``array`` as the TVM backend holds it: narrow types viewed as uint8 (no copy),
    anything else unchanged."""
    array = np.asarray(array)
    try:
        narrow = is_narrow(DType.from_numpy(array.dtype))
    except ValueError:
        return array
    return np.ascontiguousarray(array).view(np.uint8) if narrow else array


def from_storage(array: np.ndarray, dtype: DType) -> np.ndarray:
    """A tensor of element type ``dtype`` as callers see it: uint8 bytes of a narrow type
    viewed back as its ml_dtypes type; anything else unchanged."""
    if not is_narrow(dtype):
        return array
    return np.ascontiguousarray(array).view(dtype.numpy)


def dtype_of(value: Value) -> DType | None:
    """``value``'s element type, None when it is not a tensor."""
    t = value.type
    return t.dtype if isinstance(t, TensorType) else None


# -- conversions in Relax -------------------------------------------------------------------
def operand(ctx: Builder, value: Value) -> Any:
    """The Relax expression of ``value``, a narrow constant included: its bytes become a
    uint8 constant or weight (``Ctx.x`` declines narrow arrays: Relax would convert their
    values, not keep their bits)."""
    if value.const is not None and id(value) not in ctx.env and dtype_of(value) in NARROW:
        ctx.env[id(value)] = ctx.weight(to_storage(value.const))
    return ctx.x(value)


def decoded(ctx: Builder, value: Value) -> Any:
    """The values of the narrow tensor ``value``: float32, or int32 for the integers."""
    return decode(ctx, operand(ctx, value), dtype_of(value))  # type: ignore[arg-type]


def decode(ctx: Builder, bits: Any, dtype: DType) -> Any:
    """The values of the narrow tensor ``bits`` (uint8): float32, or int32 for the 4- and
    2-bit integers."""
    name = NARROW[dtype]
    kernel = to_f32(Var("v", "u8"), name)
    out = "int32" if name in SMALL_INTS else "float32"
    return _elementwise(ctx, bits, lambda v: _tir(kernel, v), f"decode_{name}", out)


def encode(
    ctx: Builder, x: Any, dtype: DType, saturate: bool = True, round_mode: str = "up"
) -> Any:
    """The narrow tensor (uint8 bits) nearest to ``x`` (any TVM dtype): floats round to
    nearest even (float8e8m0 by ``round_mode``), ``saturate`` clamps float8 overflow to
    ±max (else it becomes inf or NaN); integers keep their low bits, as ml_dtypes does."""
    name = NARROW[dtype]
    src = x.ty.dtype
    if name in SMALL_INTS:
        wide, rule = "int32", from_f32(Var("v", "i32"), name)
    elif name == E8M0:
        wide = "float32" if src in _EXACT_IN_F32 else "float64"
        rule = e8m0_bits(Var("v", "f32" if wide == "float32" else "f64"), saturate, round_mode)
    else:
        value = Var("v", "f32")
        wide = "float32"
        rule = from_f32(saturated(value, name) if saturate and name in SATURATING else value, name)

    def element(v: Any) -> Any:
        return _tir(rule, v if src == wide else _cast(wide, v))

    return _elementwise(ctx, x, element, f"to_{name}", STORAGE)


def _elementwise(
    ctx: Builder, x: Any, element: Callable[[Any], Any], name: str, out_dtype: str
) -> Any:
    """``element`` over every element of ``x`` as a PrimFunc of its own, called from Relax.
    Not ``emit_te``: it makes the PrimFunc with int64 indices, and that rewrite turns the
    int32 constants of comparisons into int64 ones, with their operands, reinterprets
    included, which LLVM then rejects ("Invalid bitcast")."""
    from tvm import relax, te, tirx
    from tvm.ir.prim.expr import IntImm

    shape = list(x.ty.shape.values)
    # the kernel's own dims (elementwise: the output's are the input's), so a dim that is
    # an expression of symbols on the Relax side is a plain variable here
    dims = [d if isinstance(d, IntImm) else tirx.Var(f"n{k}", "int64") for k, d in enumerate(shape)]
    src = te.placeholder(dims, x.ty.dtype, name="x")
    out = te.compute(dims, lambda *i: element(src(*i)), name=name)
    func = te.create_prim_func([src, out]).without_attr("global_symbol")
    # opaque to FuseOps: fused into a neighbour, the ``Let``s of ``_tir`` can be visited
    # twice, which TVM's bound analysis rejects ("conflicts with memorization")
    func = func.with_attr("op_pattern", _OPAQUE)
    fn = ctx.bb.add_func(func, name)
    return ctx.emit(relax.call_tir(fn, [x], relax.TensorType(shape, out_dtype)))


def _cast(dtype: str, v: Any) -> Any:
    from tvm import tirx

    return tirx.Cast(dtype, v)


# -- kernel IR → TIR ------------------------------------------------------------------------
def _tir(expr: Expr, leaf: Any) -> Any:
    """``expr`` (kernel IR of one element, its one ``Var`` standing for ``leaf``) as a TIR
    expression. An integer subexpression used more than once is bound once with ``Let``:
    the rules share subtrees (a DAG), and as a tree they grow past what TVM simplifies
    quickly (20 s for one float8 encoder). Only integers: TVM's vectorizer fails on
    float and bool ``Let``s (it compares a vector with a scalar)."""
    from tvm import tirx

    uses: dict[int, int] = {}
    _count(expr, uses)
    memo: dict[int, Any] = {}
    lets: list[tuple[Any, Any]] = []

    def go(e: Expr) -> Any:
        got = memo.get(id(e))
        if got is None:
            got = _node(e, go, leaf)
            if uses[id(e)] > 1 and e.dtype[0] in "iu" and not isinstance(e, (Var, Const)):
                var = tirx.Var(f"t{len(lets)}", _TVM[e.dtype])
                lets.append((var, got))
                got = var
            memo[id(e)] = got
        return got

    body = go(expr)
    for var, value in reversed(lets):
        body = tirx.Let(var, value, body)
    return body


def _count(e: Expr, uses: dict[int, int]) -> None:
    """How many times each node of the DAG ``e`` is used (its children counted once)."""
    uses[id(e)] = uses.get(id(e), 0) + 1
    if uses[id(e)] > 1:
        return
    for child in _children(e):
        _count(child, uses)


def _children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Bin):
        return (e.a, e.b)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, (Cast, Bitcast, Un)):
        return (e.x,)
    return ()


def _node(e: Expr, go: Callable[[Expr], Any], leaf: Any) -> Any:
    from tvm import tirx

    if isinstance(e, Var):
        return leaf
    if isinstance(e, Const):
        return tirx.const(e.value, _TVM[e.dtype])
    if isinstance(e, Cast):
        return tirx.Cast(_TVM[e.dtype], go(e.x))
    if isinstance(e, Bitcast):
        return tirx.reinterpret(_TVM[e.dtype], go(e.x))
    if isinstance(e, Select):
        return tirx.Select(go(e.cond), go(e.a), go(e.b))
    if isinstance(e, Un):
        x = go(e.x)
        if e.op == "neg":
            return -x
        return tirx.Not(x) if e.x.dtype == "bool" else tirx.bitwise_not(x)
    if isinstance(e, Bin):
        return _binary(e, go)
    raise TypeError(f"no TIR translation for kernel-IR {type(e).__name__}")


def _binary(e: Bin, go: Callable[[Expr], Any]) -> Any:
    from tvm import tirx

    if e.a is e.b and e.op in ("ne", "eq") and e.a.dtype in ("f32", "f64"):
        # x != x is the NaN test: say so, or TVM's simplifier folds it to false
        nan = tirx.isnan(go(e.a))
        return nan if e.op == "ne" else tirx.Not(nan)
    a, b = go(e.a), go(e.b)
    flag = e.a.dtype == "bool"
    ops: dict[str, Callable[[], Any]] = {
        "add": lambda: a + b,
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "div": lambda: a / b if e.a.dtype in ("f32", "f64") else tirx.truncdiv(a, b),
        "rem": lambda: tirx.truncmod(a, b),
        "min": lambda: tirx.min(a, b),
        "max": lambda: tirx.max(a, b),
        "and": lambda: tirx.And(a, b) if flag else tirx.bitwise_and(a, b),
        "or": lambda: tirx.Or(a, b) if flag else tirx.bitwise_or(a, b),
        "xor": lambda: tirx.NE(a, b) if flag else tirx.bitwise_xor(a, b),
        "shl": lambda: tirx.shift_left(a, b),
        "shr": lambda: tirx.shift_right(a, b),
        "lt": lambda: tirx.LT(a, b),
        "le": lambda: tirx.LE(a, b),
        "gt": lambda: tirx.GT(a, b),
        "ge": lambda: tirx.GE(a, b),
        "eq": lambda: tirx.EQ(a, b),
        "ne": lambda: tirx.NE(a, b),
    }
    return ops[e.op]()
