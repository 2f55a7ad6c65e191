"""GPU schedules of row reductions: Softmax, LogSoftmax and LayerNormalization.

The CPU lowerings give each row to one thread, which on a GPU leaves a few warps looping
over a row with uncoalesced loads (BERT's 128 LayerNorm rows: one block on one
multiprocessor, about 0.25 ms each). Here a row is reduced in two levels, as top-level
loops of one kernel that the GPU schedule launches one after the other:

1. ``rows x LANES`` threads: lane ``l`` of a row folds elements ``l, l + LANES, ...``
   (neighbouring threads read neighbouring elements: coalesced) into a partial;
2. the same for the second statistic (the sum of exponentials, the variance), each
   thread first folding the row's ``LANES`` partials of the first (cached loads);
3. ``rows x n`` threads: fold both rows of partials and write every output.

Rows up to ``WARP_ROW_MAX`` long (BERT's, ResNet's classifier) take one launch instead:
one warp per row (a ``warp`` loop), each lane folding its strided share, five butterfly
exchanges (``ShflXor``) giving every lane the row's statistic, then the lanes writing
the outputs.

On the host the same kernels run (``gpu`` loops in order, a ``warp`` loop as one 32-lane
vector), so the schedules are tested there.
"""

from __future__ import annotations

from collections.abc import Callable

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import (
    WARP,
    Const,
    Expr,
    Select,
    ShflXor,
    call,
    idx,
    maximum,
    minimum,
)

#: Partial results per row (one warp's worth).
LANES = WARP


class Rows:
    """Rows of ``n`` elements ``inner`` apart: ``outer * inner`` of them."""

    def __init__(self, outer: int, n: int, inner: int) -> None:
        self.outer, self.n, self.inner = outer, n, inner
        self.count = outer * inner
        self.lanes = max(1, min(LANES, n))

    def at(self, r: Expr, i: Expr) -> Expr:
        """Flat index of element ``i`` of row ``r``."""
        if self.inner == 1:
            return r * self.n + i
        return (r // idx(self.inner)) * (self.n * self.inner) + r % idx(self.inner) + i * self.inner

    def partials(self, kb: KernelBuilder, part: BufferRef, value: Callable[[Expr, Expr], Expr], op: str, before: Callable[[Expr], None] | None = None) -> None:
        """One launch of ``rows x lanes`` threads: lane ``l`` folds ``value(r, i)`` over
        ``i = l, l + lanes, ...`` into ``part[r * lanes + l]`` (``before(r)`` runs first
        in every thread: reading the statistics the values need)."""
        lanes, steps = self.lanes, -(-self.n // self.lanes)
        with kb.loop(self.count, kind="parallel", hint="r") as r, kb.loop(lanes, kind="parallel", hint="l") as lane:
            if before is not None:
                before(r)
            acc = kb.local("f32", _start(op))
            with kb.loop(steps, hint="t") as t:
                i = kb.let(lane + t * lanes, "i")
                if self.n % lanes:
                    with kb.if_(i < self.n):
                        kb.assign(acc, _combine(op, acc, value(r, i)))
                else:
                    kb.assign(acc, _combine(op, acc, value(r, i)))
            part[r * lanes + lane] = acc

    def total(self, kb: KernelBuilder, part: BufferRef, r: Expr, op: str) -> Expr:
        """The row's value folded from its ``lanes`` partials (a few loads, cached)."""
        acc = kb.local("f32", _start(op), "tot")
        # rolled: LLVM's CPU pipeline, fully unrolling this inside a loop over a row's
        # outputs, ran for minutes on a 1000-wide row (the host runs of the tests)
        with kb.loop(self.lanes, kind="rolled", hint="l") as lane:
            kb.assign(acc, _combine(op, acc, part[r * self.lanes + lane]))
        return kb.let(acc, "total")

    def each(self, kb: KernelBuilder, put: Callable[[Expr, Expr], None]) -> None:
        """``put(r, i)`` for every element, one thread each."""
        with kb.loop(self.count, kind="parallel", hint="r") as r, kb.loop(self.n, kind="parallel", hint="i") as i:
            put(r, i)


def _start(op: str) -> Const:
    return Const(float("-inf") if op == "max" else 0.0, "f32")


def _combine(op: str, a: Expr, b: Expr) -> Expr:
    return maximum(a, b) if op == "max" else a + b


def _inv_std(kb: KernelBuilder, var: Expr, eps: float) -> Expr:
    """1 / sqrt(variance + epsilon)."""
    return kb.let(Const(1.0, "f32") / call("sqrt", var + Const(eps, "f32")), "inv")


def _put_normalized(rows: Rows, x: BufferRef, y: BufferRef, scale: BufferRef, bias: BufferRef | None, r: Expr, i: Expr, mean: Expr, inv: Expr) -> None:
    """LayerNorm's output at element ``i`` of row ``r``."""
    v = (x[rows.at(r, i)] - mean) * inv * scale[i]
    y[rows.at(r, i)] = v + bias[i] if bias is not None else v


def softmax(kb: KernelBuilder, rows: Rows, x: BufferRef, y: BufferRef, parts: tuple[BufferRef, BufferRef], log_form: bool) -> None:
    """Softmax (or LogSoftmax) of every row in three launches: partial maxima, partial
    sums of exp(x - max), outputs."""
    p0, p1 = parts
    top: dict[str, Expr] = {}

    def read_max(r: Expr) -> None:
        top["m"] = rows.total(kb, p0, r, "max")

    rows.partials(kb, p0, lambda r, i: x[rows.at(r, i)], "max")
    rows.partials(kb, p1, lambda r, i: km.exp(kb, x[rows.at(r, i)] - top["m"]), "add", read_max)

    def put(r: Expr, i: Expr) -> None:
        m = rows.total(kb, p0, r, "max")
        total = rows.total(kb, p1, r, "add")
        v = x[rows.at(r, i)] - m
        y[rows.at(r, i)] = v - km.log(kb, total) if log_form else km.exp(kb, v) / total

    rows.each(kb, put)


def layer_norm(kb: KernelBuilder, rows: Rows, x: BufferRef, y: BufferRef, scale: BufferRef, bias: BufferRef | None, parts: tuple[BufferRef, BufferRef], eps: float) -> None:
    """LayerNormalization over rows of the trailing dims (``inner`` is 1) in three
    launches: partial sums, partial squared deviations, outputs."""
    p0, p1 = parts
    inv_n = Const(1.0 / rows.n, "f32")
    stats: dict[str, Expr] = {}

    def read_mean(r: Expr) -> None:
        stats["mean"] = kb.let(rows.total(kb, p0, r, "add") * inv_n, "mean")

    def square(r: Expr, i: Expr) -> Expr:
        d = kb.let(x[rows.at(r, i)] - stats["mean"], "d")
        return d * d

    rows.partials(kb, p0, lambda r, i: x[rows.at(r, i)], "add")
    rows.partials(kb, p1, square, "add", read_mean)

    def put(r: Expr, i: Expr) -> None:
        mean = kb.let(rows.total(kb, p0, r, "add") * inv_n, "mean")
        var = rows.total(kb, p1, r, "add") * inv_n
        _put_normalized(rows, x, y, scale, bias, r, i, mean, _inv_std(kb, var, eps))

    rows.each(kb, put)


# ----------------------------------------------------------------------- one warp per row
#: Rows at most this long are reduced by one warp each, in one launch; longer rows (a
#: vocabulary-wide Softmax) take the two-level scheme above, which spreads a row over
#: several warps.
WARP_ROW_MAX = 4096


def warp_fits(rows: Rows) -> bool:
    """Whether ``rows`` is reduced by one warp per row."""
    return rows.n <= WARP_ROW_MAX


def _warp_total(kb: KernelBuilder, rows: Rows, r: Expr, lane: Expr, value: Callable[[Expr, Expr], Expr], op: str) -> Expr:
    """Every lane gets the fold of ``value(r, i)`` over the row: lane ``l`` folds
    ``i = l, l + 32, ...`` (a lane past the end adds the identity), then five butterfly
    exchanges combine the 32 partials."""
    acc = kb.local("f32", _start(op), "wacc")
    with kb.loop(-(-rows.n // WARP), hint="t") as t:
        i = kb.let(lane + t * WARP, "i")
        if rows.n % WARP:
            v = Select(i < rows.n, value(r, minimum(i, rows.n - 1)), _start(op))
        else:
            v = value(r, i)
        kb.assign(acc, _combine(op, acc, v))
    for mask in (16, 8, 4, 2, 1):
        kb.assign(acc, _combine(op, acc, ShflXor(acc, mask)))
    return kb.let(acc, "row")


def _warp_each(kb: KernelBuilder, rows: Rows, r: Expr, lane: Expr, put: Callable[[Expr, Expr], None]) -> None:
    """``put(r, i)`` for the row's elements, lane ``l`` taking ``l, l + 32, ...``; lanes
    past the end redo the last element (the same value written again)."""
    with kb.loop(-(-rows.n // WARP), hint="t") as t:
        put(r, kb.let(minimum(lane + t * WARP, rows.n - 1), "i"))


def warp_softmax(kb: KernelBuilder, rows: Rows, x: BufferRef, y: BufferRef, log_form: bool) -> None:
    """Softmax (or LogSoftmax), one warp per row, one launch."""
    with kb.loop(rows.count, kind="parallel", hint="r") as r, kb.loop(WARP, kind="warp", hint="lane") as lane:
        top = _warp_total(kb, rows, r, lane, lambda r, i: x[rows.at(r, i)], "max")
        total = _warp_total(kb, rows, r, lane, lambda r, i: km.exp(kb, x[rows.at(r, i)] - top), "add")
        shift = kb.let(top + km.log(kb, total), "shift") if log_form else None
        inv = None if log_form else kb.let(Const(1.0, "f32") / total, "inv")

        def put(r: Expr, i: Expr) -> None:
            v = x[rows.at(r, i)]
            y[rows.at(r, i)] = v - shift if shift is not None else km.exp(kb, v - top) * inv

        _warp_each(kb, rows, r, lane, put)


def warp_layer_norm(kb: KernelBuilder, rows: Rows, x: BufferRef, y: BufferRef, scale: BufferRef, bias: BufferRef | None, eps: float) -> None:
    """LayerNormalization, one warp per row, one launch."""
    inv_n = Const(1.0 / rows.n, "f32")
    with kb.loop(rows.count, kind="parallel", hint="r") as r, kb.loop(WARP, kind="warp", hint="lane") as lane:
        mean = kb.let(_warp_total(kb, rows, r, lane, lambda r, i: x[rows.at(r, i)], "add") * inv_n, "mean")

        def square(r: Expr, i: Expr) -> Expr:
            d = kb.let(x[rows.at(r, i)] - mean, "d")
            return d * d

        var = _warp_total(kb, rows, r, lane, square, "add") * inv_n
        inv = _inv_std(kb, var, eps)
        _warp_each(kb, rows, r, lane, lambda r, i: _put_normalized(rows, x, y, scale, bias, r, i, mean, inv))


def warp_reduce(kb: KernelBuilder, rows: Rows, x: BufferRef, y: BufferRef, op: str) -> None:
    """``y[r]`` = the mean (``op`` "mean") or max of row ``r``, one warp per row (global
    pools: a row per channel plane). Every lane stores the same value."""
    with kb.loop(rows.count, kind="parallel", hint="r") as r, kb.loop(WARP, kind="warp", hint="lane") as lane:
        total = _warp_total(kb, rows, r, lane, lambda r, i: x[rows.at(r, i)], "max" if op == "max" else "add")
        y[r] = total * Const(1.0 / rows.n, "f32") if op == "mean" else total
