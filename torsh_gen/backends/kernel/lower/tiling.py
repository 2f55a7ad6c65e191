"""Loop-building helpers shared by the convolution and pooling lowerings.

They keep the lowerings short and their kernel text readable: loops that vanish when their
extent is 1, conditions that vanish when empty, index arithmetic folded where constant,
and ``row_blocks``, which covers a row with full-width vector loops and one overlapped
narrower block instead of a scalar remainder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import Bin, Const, Expr, idx, is_float, logical_and
from torsh_gen.backends.kernel.lower import prod

Triple = tuple[int, int, int]


def lift(values: list[int], fill: int) -> Triple:
    """Per-axis values padded in front to three spatial axes (1-d and 2-d ops as 3-d)."""
    v = (fill,) * (3 - len(values)) + tuple(int(a) for a in values)
    return v  # type: ignore[return-value]


@contextmanager
def axis(kb: KernelBuilder, n: int, hint: str) -> Iterator[Expr]:
    """A serial loop over ``n``, or the constant 0 when ``n`` is 1 (no loop at all)."""
    if n == 1:
        yield idx(0)
        return
    with kb.loop(n, hint=hint) as v:
        yield v


def vector_width(n: int, lanes: int, registers: int = 2) -> int:
    """Lanes of the tile along a row of ``n`` outputs: ``registers`` vector registers (two
    by default) when the row allows, else fewer lanes."""
    for w in (registers * lanes, lanes, lanes // 2, lanes // 4):
        if w >= 4 and n >= w:
            return w
    return 1


def narrow_width(width: int, rest: int) -> int:
    """The fewest lanes (``width`` halved, at least 4) that cover ``rest`` positions."""
    last = width
    while last // 2 >= max(rest, 4):
        last //= 2
    return last


def row_blocks(
    kb: KernelBuilder, n: int, width: int, body: Callable[[Expr], None], start: int = 0
) -> None:
    """``body(x)`` over positions start..n-1 as vector loops of exactly ``width`` lanes,
    then one narrower block (the fewest lanes that cover the rest) ending at ``n``; it
    overlaps the block before it, so no scalar remainder runs. A range shorter than
    ``width`` takes halved widths (down to 4 lanes), then a plain serial loop."""
    while width > 4 and n - start < width:
        width //= 2
    if width <= 1 or n - start < width:
        if n > start:
            with kb.loop(n, start=start, hint="x") as v:
                body(v)
        return
    full, rest = divmod(n - start, width)
    if full == 1:
        with kb.loop(start + width, start=start, kind="vector", width=width, hint="x") as v:
            body(v)
    else:
        with kb.loop(full, hint="xb") as xb:
            x0 = kb.let(fold(xb * width + start), "x0")
            with kb.loop(x0 + width, start=x0, kind="vector", width=width, hint="x") as v:
                body(v)
    if rest:
        last = narrow_width(width, rest)
        with kb.loop(n, start=n - last, kind="vector", width=last, hint="x") as v:
            body(v)


def balanced(total: int, most: int, unit: int = 1) -> int:
    """The chunk size, a multiple of ``unit``, that covers ``total`` in as many chunks as
    chunks of ``most`` would need but as evenly as the unit allows. Threads take contiguous
    runs of jobs, so a short last chunk leaves one thread idle: 3,136 positions in chunks
    of 1,024 split 2,048 / 1,088 between two threads (a 1x1 layer scaled 1.53x on two
    cores, onnxruntime's 2.0x); as 4 x 784, 1,568 each."""
    unit = max(unit, 1)
    count = -(-total // max(most, 1))
    even = -(-total // count)
    return -(-even // unit) * unit


def split_index(kb: KernelBuilder, job: Expr, extents: list[int]) -> list[Expr]:
    """``job`` as mixed-radix digits over ``extents`` (outermost first); size-1 digits are 0."""
    digits: list[Expr] = []
    rest = job
    inner = prod(extents)
    for n in extents:
        inner //= n
        if n == 1:
            digits.append(idx(0))
        elif inner == 1:
            digits.append(kb.let(rest, "d"))
        else:
            digits.append(kb.let(rest // inner, "d"))
            rest = rest % inner
    return digits


def fold(e: Expr) -> Expr:
    """``e`` with constant integer arithmetic folded (``x * 1``, ``x + 0``, ``2 * 3``), so
    the kernel text stays readable; LLVM would fold it anyway."""
    if not isinstance(e, Bin) or e.op not in ("add", "sub", "mul") or is_float(e.dtype):
        return e
    a, b = fold(e.a), fold(e.b)
    ca = a.value if isinstance(a, Const) else None
    cb = b.value if isinstance(b, Const) else None
    if ca is not None and cb is not None:
        return Const({"add": ca + cb, "sub": ca - cb, "mul": ca * cb}[e.op], e.dtype)
    if e.op == "mul":
        if ca == 0 or cb == 0:
            return Const(0, e.dtype)
        if ca == 1 or cb == 1:
            return b if ca == 1 else a
    if cb == 0:
        return a
    if ca == 0 and e.op == "add":
        return b
    return Bin(e.op, a, b)


@contextmanager
def when(kb: KernelBuilder, conds: list[Expr]) -> Iterator[None]:
    """Statements that run only when every condition holds (no test at all for none)."""
    if not conds:
        yield
        return
    c = conds[0]
    for more in conds[1:]:
        c = logical_and(c, more)
    with kb.if_(c):
        yield
