"""The kernel IR: buffers, loop nests, scalar expressions (shared by the native backends).

One place decides loops; emitters only translate (DESIGN, "The kernel IR"). A ``Kernel``
takes flat buffers (element offsets, row-major) and integer dimension parameters, and its
body is a list of statements:

- ``Loop(var, start, stop, body, kind)`` with kind ``serial``, ``parallel`` (split across
  the target's threads), ``vector`` (``width`` lanes: expressions varying with ``var``
  become vectors; a scalar remainder loop covers the tail), ``unroll`` or ``rolled`` (a
  serial loop the emitter must not unroll), ``gpu`` (one iteration per GPU thread,
  a grid-stride loop on the CUDA target; an ordinary loop everywhere else, so the host
  runs a GPU schedule as it is; ``width`` 32: one iteration per warp) or ``warp`` (the
  32 lanes of one warp in lockstep, ``ShflXor`` exchanging values between them: a warp
  of threads on the CUDA target, a 32-lane vector loop on CPUs);
- ``Let`` (an immutable name), ``Local`` / ``Assign`` (a mutable scalar, an accumulator),
  ``Store``, ``If``.

Expressions are immutable trees: ``Const``, ``Var`` (loop variables, dimension
parameters, ``Let`` and ``Local`` names), ``Load``, ``Bin``, ``Un``, ``Cast``, ``Select``
and ``Call`` of a small set of intrinsics every target has as an instruction (sqrt, fabs,
floor, ceil, trunc, round-to-even, fma). Transcendentals are not intrinsics: ``math.py``
writes them as polynomials, so artifacts need no libm and every target computes alike.

Python operators on expressions build trees (``a + b``, ``a * 2``, ``a < b``), so lowerings
read like the loops they describe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Element types of the kernel IR. ``bool`` is one byte in memory (0 or 1).
DTYPES = ("f32", "f64", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "bool")
FLOAT_DTYPES = ("f32", "f64")
INDEX = "i64"

#: Binary operators; comparisons give ``bool``.
ARITH_OPS = ("add", "sub", "mul", "div", "rem", "min", "max", "and", "or", "xor", "shl", "shr")
CMP_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
#: Unary operators.
UN_OPS = ("neg", "not")
#: Intrinsic calls: name → number of arguments.
INTRINSICS = {"sqrt": 1, "fabs": 1, "floor": 1, "ceil": 1, "trunc": 1, "roundeven": 1, "fma": 3}
#: Loop kinds.
LOOP_KINDS = ("serial", "parallel", "vector", "unroll", "rolled", "gpu", "warp")
#: Lanes of a ``warp`` loop (an NVIDIA warp).
WARP = 32


def is_float(dtype: str) -> bool:
    """True for the floating-point element types."""
    return dtype in FLOAT_DTYPES


def is_signed(dtype: str) -> bool:
    """True for signed integer element types (floats count as signed too)."""
    return dtype[0] in "if"


def itemsize(dtype: str) -> int:
    """Bytes per element in memory."""
    if dtype == "bool":
        return 1
    if dtype == "bf16":  # storage-only types (kernel/storage.py)
        return 2
    if dtype.startswith(("f8", "f4")) or dtype in ("i4", "u4", "i2", "u2"):
        return 1
    return int(dtype[1:]) // 8


class Expr:
    """Base of all expressions; Python operators build ``Bin`` nodes."""

    dtype: str

    def _bin(self, op: str, other: ExprLike, swap: bool = False) -> Bin:
        o = as_expr(other, self.dtype)
        return Bin(op, o, self) if swap else Bin(op, self, o)

    def __add__(self, o: ExprLike) -> Expr:
        return self._bin("add", o)

    def __radd__(self, o: ExprLike) -> Expr:
        return self._bin("add", o, True)

    def __sub__(self, o: ExprLike) -> Expr:
        return self._bin("sub", o)

    def __rsub__(self, o: ExprLike) -> Expr:
        return self._bin("sub", o, True)

    def __mul__(self, o: ExprLike) -> Expr:
        return self._bin("mul", o)

    def __rmul__(self, o: ExprLike) -> Expr:
        return self._bin("mul", o, True)

    def __truediv__(self, o: ExprLike) -> Expr:
        return self._bin("div", o)

    def __rtruediv__(self, o: ExprLike) -> Expr:
        return self._bin("div", o, True)

    def __floordiv__(self, o: ExprLike) -> Expr:
        return self._bin("div", o)

    def __mod__(self, o: ExprLike) -> Expr:
        return self._bin("rem", o)

    def __neg__(self) -> Expr:
        return Un("neg", self)

    def __lt__(self, o: ExprLike) -> Expr:  # type: ignore[override]
        return self._bin("lt", o)

    def __le__(self, o: ExprLike) -> Expr:  # type: ignore[override]
        return self._bin("le", o)

    def __gt__(self, o: ExprLike) -> Expr:  # type: ignore[override]
        return self._bin("gt", o)

    def __ge__(self, o: ExprLike) -> Expr:  # type: ignore[override]
        return self._bin("ge", o)


ExprLike = Expr | int | float | bool


@dataclass(frozen=True, eq=False)
class Const(Expr):
    """A literal of ``dtype``."""

    value: float | int | bool
    dtype: str = "f32"


@dataclass(frozen=True, eq=False)
class Var(Expr):
    """A name: a loop variable, a dimension parameter, a ``Let`` or a ``Local``."""

    name: str
    dtype: str = INDEX


@dataclass(frozen=True, eq=False)
class Load(Expr):
    """``buf[index]`` (element offset); its dtype is the buffer's."""

    buf: str
    index: Expr
    dtype: str = "f32"


@dataclass(frozen=True, eq=False)
class Bin(Expr):
    """A binary operation; operands have the same dtype (lowerings insert ``Cast``)."""

    op: str
    a: Expr
    b: Expr

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return "bool" if self.op in CMP_OPS else self.a.dtype


@dataclass(frozen=True, eq=False)
class Un(Expr):
    """A unary operation."""

    op: str
    x: Expr

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.x.dtype


@dataclass(frozen=True, eq=False)
class Cast(Expr):
    """Conversion to ``dtype`` (float → int truncates toward zero, as C does)."""

    x: Expr
    dtype: str = "f32"


@dataclass(frozen=True, eq=False)
class Select(Expr):
    """``a if cond else b``."""

    cond: Expr
    a: Expr
    b: Expr

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.a.dtype


@dataclass(frozen=True, eq=False)
class Call(Expr):
    """An intrinsic from ``INTRINSICS``; the result has the first argument's dtype."""

    fn: str
    args: tuple[Expr, ...]

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.args[0].dtype


@dataclass(frozen=True, eq=False)
class Bitcast(Expr):
    """Reinterpret the bits of ``x`` as ``dtype`` (same size); used by the math helpers."""

    x: Expr
    dtype: str = "i32"


@dataclass(frozen=True, eq=False)
class ShflXor(Expr):
    """Inside a ``warp`` loop: the value ``x`` has in lane ``lane ^ mask`` of the warp (a
    butterfly exchange: ``shfl.sync.bfly`` on the CUDA target, a vector shuffle on CPUs).
    Every lane of the warp must reach it together (no lane-varying branch around it)."""

    x: Expr
    mask: int

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.x.dtype


@dataclass(frozen=True, eq=False)
class ShflIdx(Expr):
    """Inside a ``warp`` loop: the value ``x`` has in lane ``src`` (the same lane for every
    lane: a broadcast; ``shfl.sync.idx`` on the CUDA target, an element pick on CPUs)."""

    x: Expr
    src: Expr

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.x.dtype


class Stmt:
    """Base of all statements."""


@dataclass(eq=False)
class Let(Stmt):
    """Bind ``name`` to ``value`` for the rest of the enclosing block."""

    name: str
    value: Expr


@dataclass(eq=False)
class Local(Stmt):
    """Declare a mutable scalar ``name`` with an initial value (an accumulator)."""

    name: str
    dtype: str
    init: Expr


@dataclass(eq=False)
class Assign(Stmt):
    """Set the ``Local`` named ``name``."""

    name: str
    value: Expr


@dataclass(eq=False)
class Store(Stmt):
    """``buf[index] = value``."""

    buf: str
    index: Expr
    value: Expr


@dataclass(eq=False)
class Loop(Stmt):
    """``for var in range(start, stop)`` with a schedule ``kind`` (see the module doc)."""

    var: str
    start: Expr
    stop: Expr
    body: list[Stmt]
    kind: str = "serial"
    width: int = 1


@dataclass(eq=False)
class If(Stmt):
    """Run ``then`` when ``cond`` holds, else ``orelse``."""

    cond: Expr
    then: list[Stmt]
    orelse: list[Stmt] = field(default_factory=list)


@dataclass(frozen=True)
class Buffer:
    """A kernel parameter: a flat array of ``dtype``; ``size`` in elements (may use dims)."""

    name: str
    dtype: str
    size: Expr
    writable: bool = False


@dataclass(eq=False)
class Kernel:
    """A function over buffers and integer dimension parameters."""

    name: str
    buffers: list[Buffer]
    dims: list[str]
    body: list[Stmt]

    def buffer(self, name: str) -> Buffer:
        """The buffer parameter called ``name``."""
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)


def as_expr(value: ExprLike, dtype: str = INDEX) -> Expr:
    """``value`` as an expression; Python numbers become constants of ``dtype``."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool):
        return Const(value, "bool")
    return Const(value, dtype)


def idx(value: ExprLike) -> Expr:
    """An index expression (``i64``)."""
    return as_expr(value, INDEX)


def minimum(a: ExprLike, b: ExprLike) -> Expr:
    """``min(a, b)`` of two expressions of one dtype."""
    a = as_expr(a)
    return Bin("min", a, as_expr(b, a.dtype))


def maximum(a: ExprLike, b: ExprLike) -> Expr:
    """``max(a, b)`` of two expressions of one dtype."""
    a = as_expr(a)
    return Bin("max", a, as_expr(b, a.dtype))


def call(fn: str, *args: ExprLike) -> Expr:
    """An intrinsic call; the first argument fixes the dtype of the others' constants."""
    first = as_expr(args[0], "f32")
    return Call(fn, (first,) + tuple(as_expr(a, first.dtype) for a in args[1:]))


def logical_and(a: Expr, b: Expr) -> Expr:
    """Both conditions (``bool`` operands)."""
    return Bin("and", a, b)


def logical_or(a: Expr, b: Expr) -> Expr:
    """Either condition (``bool`` operands)."""
    return Bin("or", a, b)


def eq(a: ExprLike, b: ExprLike) -> Expr:
    """``a == b`` (Python's ``==`` stays identity on expressions)."""
    a = as_expr(a)
    return Bin("eq", a, as_expr(b, a.dtype))


def ne(a: ExprLike, b: ExprLike) -> Expr:
    """``a != b``."""
    a = as_expr(a)
    return Bin("ne", a, as_expr(b, a.dtype))
