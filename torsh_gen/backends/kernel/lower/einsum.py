"""Einsum: one loop per output letter, one per summed letter, a product of the operands.

The equation is parsed once (explicit ``->`` or the implicit alphabetical output;
``...`` expands to generated letters, numpy-broadcast where an operand has size 1).
The outer output loop runs across threads, the innermost output letter is a vector loop
when every operand reads it contiguously or not at all; sums go in an accumulator.
"""

from __future__ import annotations

from torsh_gen.backends.kernel.ir import Bin, Const, Expr, idx
from torsh_gen.backends.kernel.lower import (
    LowerCtx,
    LoweringDeclined,
    lowers,
    prod,
    row_major_strides,
)

_SPARE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def parse(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """(operand subscripts, output subscripts) with ``...`` expanded to capital letters."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise LoweringDeclined("Einsum operand count does not match the equation")
    ell = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t), default=0)
    spare = _SPARE[:ell]
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            k = r - len(t.replace("...", ""))
            t = t.replace("...", spare[ell - k:])
        if len(t) != r or (t and not t.isalpha()):  # '' is a scalar's term
            raise LoweringDeclined(f"Einsum term {t!r} does not match rank {r}")
        out_terms.append(t)
    if arrow:
        out = rhs.replace("...", spare)
    else:
        letters = [c for c in sorted(set("".join(out_terms))) if c.islower() and "".join(out_terms).count(c) == 1]
        out = spare + "".join(letters)
    return out_terms, out


@lowers("Einsum")
def lower_einsum(ctx: LowerCtx) -> None:
    """Any einsum over float operands, as nested loops."""
    n_in = len(ctx.inputs)
    shapes = [ctx.in_shape(i) for i in range(n_in)]
    dtype = ctx.y(0).dtype
    if dtype not in ("f32", "f64", "i32", "i64"):
        raise LoweringDeclined(f"Einsum on {dtype}")
    terms, out = parse(str(ctx.attrs.equation), [len(s) for s in shapes])
    sizes: dict[str, int] = {}
    for t, s in zip(terms, shapes):
        for c, d in zip(t, s):
            if sizes.get(c, 1) not in (1, d) and d != 1:
                raise LoweringDeclined(f"Einsum letter {c} has sizes {sizes[c]} and {d}")
            sizes[c] = max(sizes.get(c, 1), d)
    if tuple(sizes[c] for c in out) != ctx.out_shape(0):
        raise LoweringDeclined("Einsum output shape differs from the inferred one")
    summed = [c for c in sorted(sizes) if c not in out]
    strides = []
    for t, s in zip(terms, shapes):
        st = row_major_strides(s)
        per: dict[str, int] = {}
        for k, c in enumerate(t):  # a letter repeated in one term (a diagonal) adds strides
            per[c] = per.get(c, 0) + (st[k] if s[k] != 1 else 0)
        strides.append(per)
    kb = ctx.kb
    ost = row_major_strides(ctx.out_shape(0))
    letters: dict[str, Expr] = {}

    def offset(k: int) -> Expr:
        e: Expr = idx(0)
        for c, st in strides[k].items():
            if st:
                e = e + letters[c] * st
        return e

    def reduce_body() -> None:
        acc = kb.local(dtype, Const(0, dtype), "acc")

        def sums(level: int) -> None:
            if level == len(summed):
                term: Expr = ctx.x(0)[offset(0)]
                for k in range(1, n_in):
                    term = Bin("mul", term, ctx.x(k)[offset(k)])
                kb.assign(acc, Bin("add", acc, term))
                return
            with kb.loop(sizes[summed[level]], hint="s") as v:
                letters[summed[level]] = v
                sums(level + 1)

        sums(0)
        o: Expr = idx(0)
        for c, st in zip(out, ost):
            o = o + letters[c] * st
        ctx.y(0)[o] = acc

    def outs(level: int) -> None:
        if level == len(out):
            reduce_body()
            return
        kind = ctx.outer_kind(prod(ctx.out_shape(0)) * max(prod([sizes[c] for c in summed]), 1)) if level == 0 else "serial"
        with kb.loop(sizes[out[level]], kind=kind, hint="o") as v:
            letters[out[level]] = v
            outs(level + 1)

    outs(0)
