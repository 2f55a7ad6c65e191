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

On the host the same kernel runs its loops in order, so the schedule is tested there.
"""

from __future__ import annotations

from collections.abc import Callable

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import Const, Expr, call, idx, maximum

#: Partial results per row (one warp).
LANES = 32


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
        inv = kb.let(Const(1.0, "f32") / call("sqrt", var + Const(eps, "f32")), "inv")
        v = (x[rows.at(r, i)] - mean) * inv * scale[i]
        y[rows.at(r, i)] = v + bias[i] if bias is not None else v

    rows.each(kb, put)
