"""GPU schedules of row reductions: Softmax, LogSoftmax and LayerNormalization.

The CPU lowerings give each row to one thread, which on a GPU leaves a few warps looping
over a row with uncoalesced loads (BERT's 128 LayerNorm rows: one block on one
multiprocessor, about 0.25 ms each). Here a row is reduced in two levels, as top-level
loops of one kernel that the GPU schedule launches one after the other:

1. ``rows x LANES`` threads: lane ``l`` of a row folds elements ``l, l + LANES, ...``
   (neighbouring threads read neighbouring elements: coalesced) into a partial;
2. ``rows`` threads: fold the row's ``LANES`` partials into the row's statistic;
3. repeat for the second statistic (the sum of exponentials, the variance);
4. ``rows x n`` threads: write every output from the input and the row's statistics.

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

    def fold(self, kb: KernelBuilder, part: BufferRef, stat: BufferRef, slot: int, value: Callable[[Expr, Expr], Expr], op: str, finish: Callable[[Expr, Expr], Expr]) -> None:
        """``stat[2 r + slot] = finish(r, fold_op(value(r, i) for i < n))`` in two levels."""
        lanes, steps = self.lanes, -(-self.n // self.lanes)
        start = Const(float("-inf") if op == "max" else 0.0, "f32")

        def combine(a: Expr, b: Expr) -> Expr:
            return maximum(a, b) if op == "max" else a + b

        with kb.loop(self.count, kind="parallel", hint="r") as r, kb.loop(lanes, kind="parallel", hint="l") as lane:
            acc = kb.local("f32", start)
            with kb.loop(steps, hint="t") as t:
                i = kb.let(lane + t * lanes, "i")
                if self.n % lanes:
                    with kb.if_(i < self.n):
                        kb.assign(acc, combine(acc, value(r, i)))
                else:
                    kb.assign(acc, combine(acc, value(r, i)))
            part[r * lanes + lane] = acc
        with kb.loop(self.count, kind="parallel", hint="r") as r:
            acc = kb.local("f32", start)
            with kb.loop(lanes, hint="l") as lane:
                kb.assign(acc, combine(acc, part[r * lanes + lane]))
            stat[r * 2 + slot] = finish(r, acc)

    def each(self, kb: KernelBuilder, put: Callable[[Expr, Expr], None]) -> None:
        """``put(r, i)`` for every element, one thread each."""
        with kb.loop(self.count, kind="parallel", hint="r") as r, kb.loop(self.n, kind="parallel", hint="i") as i:
            put(r, i)


def softmax(kb: KernelBuilder, rows: Rows, x: BufferRef, y: BufferRef, part: BufferRef, stat: BufferRef, log_form: bool) -> None:
    """Softmax (or LogSoftmax) of every row: max, sum of exp(x - max), outputs."""
    rows.fold(kb, part, stat, 0, lambda r, i: x[rows.at(r, i)], "max", lambda r, m: m)

    def shifted_exp(r: Expr, i: Expr) -> Expr:
        return km.exp(kb, x[rows.at(r, i)] - stat[r * 2])

    if log_form:
        rows.fold(kb, part, stat, 1, shifted_exp, "add", lambda r, s: stat[r * 2] + km.log(kb, s))

        def put(r: Expr, i: Expr) -> None:
            y[rows.at(r, i)] = x[rows.at(r, i)] - stat[r * 2 + 1]
    else:
        rows.fold(kb, part, stat, 1, shifted_exp, "add", lambda r, s: Const(1.0, "f32") / s)

        def put(r: Expr, i: Expr) -> None:
            y[rows.at(r, i)] = shifted_exp(r, i) * stat[r * 2 + 1]

    rows.each(kb, put)


def layer_norm(kb: KernelBuilder, rows: Rows, x: BufferRef, y: BufferRef, scale: BufferRef, bias: BufferRef | None, part: BufferRef, stat: BufferRef, eps: float) -> None:
    """LayerNormalization over rows of the trailing dims (``inner`` is 1)."""
    inv_n = Const(1.0 / rows.n, "f32")
    rows.fold(kb, part, stat, 0, lambda r, i: x[rows.at(r, i)], "add", lambda r, s: s * inv_n)

    def square(r: Expr, i: Expr) -> Expr:
        d = kb.let(x[rows.at(r, i)] - stat[r * 2], "d")
        return d * d

    rows.fold(kb, part, stat, 1, square, "add", lambda r, s: Const(1.0, "f32") / call("sqrt", s * inv_n + Const(eps, "f32")))

    def put(r: Expr, i: Expr) -> None:
        v = (x[rows.at(r, i)] - stat[r * 2]) * stat[r * 2 + 1] * scale[i]
        y[rows.at(r, i)] = v + bias[i] if bias is not None else v

    rows.each(kb, put)
