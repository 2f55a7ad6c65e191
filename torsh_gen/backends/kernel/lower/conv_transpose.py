"""ConvTranspose: every output element gathers the input positions that scatter into it.

For output position ``o`` and tap ``k`` (per spatial axis) the input position is
``(o + pad_begin - k * dilation) / stride`` when that divides exactly and lands inside the
input. Pads and the output size follow the op's reference (``ConvTranspose._layout``:
explicit pads, ``output_shape`` or ``auto_pad``). The loops are scalar, split across
threads over (image, output channel): correct for every attribute combination, not yet a
tuned kernel (no model of the benchmark set uses this op).
"""

from __future__ import annotations

from torsh_gen.backends.kernel.ir import Bin, Const, Expr, idx, logical_and
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, prod
from torsh_gen.ops.nn import ConvTranspose, spatial_params


@lowers("ConvTranspose")
def lower_conv_transpose(ctx: LowerCtx) -> None:
    """y[n, m, o] = b[m] + sum over input channels of m's group and taps k of x * w."""
    xs, ws = ctx.in_shape(0), ctx.in_shape(1)
    dtype = ctx.y(0).dtype
    if dtype not in ("f32", "f64") or len(xs) < 3:
        raise LoweringDeclined("ConvTranspose needs float input of rank >= 3")
    a = ctx.attrs
    nsp = len(xs) - 2
    size, kernel = list(xs[2:]), list(a.kernel_shape or ws[2:])
    strides, dilations, pads = spatial_params(a, nsp)
    out_pad = list(a.output_padding or [0] * nsp)
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(size, strides, kernel, dilations)]
    begin, out = ConvTranspose._layout(a, size, strides, full, out_pad, pads)
    if tuple(out) != tuple(ctx.out_shape(0)[2:]):
        raise LoweringDeclined(f"output size {out} differs from the inferred {ctx.out_shape(0)[2:]}")
    batch, cin = xs[0], xs[1]
    group = int(a.group or 1)
    mg = ws[1]
    cg = cin // group
    kb, x, w, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    bias = ctx.x(2) if ctx.has(2) else None
    m_total = group * mg
    npos, ntaps, nin = prod(out), prod(kernel), prod(size)
    work = batch * m_total * npos * cg * ntaps
    with kb.loop(batch * m_total, kind=ctx.outer_kind(work), hint="nm") as nm:
        m = kb.let(nm % m_total, "m")
        img = kb.let(nm - m, "img")  # n * m_total
        gi = kb.let(Bin("div", m, idx(mg)), "g")
        mo = kb.let(m - gi * mg, "mo")
        with kb.loop(npos, hint="p") as p:
            acc = kb.local(dtype, bias[m] if bias is not None else Const(0.0, dtype), "acc")
            opos = _unflatten(kb, p, out)
            with kb.loop(ntaps, hint="t") as t:
                taps = _unflatten(kb, t, kernel)
                ipos, ok = [], None
                for d in range(nsp):
                    pos, inside = _source(kb, opos[d] + begin[d] - taps[d] * dilations[d], strides[d], size[d])
                    ok = inside if ok is None else logical_and(ok, inside)
                    ipos.append(pos)
                with kb.if_(ok):
                    flat = kb.let(_flatten(ipos, size), "ip")
                    with kb.loop(cg, hint="c") as c:
                        ic = kb.let(gi * cg + c, "ic")
                        xv = x[(Bin("div", img, idx(m_total)) * cin + ic) * nin + flat]
                        wv = w[(ic * mg + mo) * ntaps + t]
                        kb.assign(acc, Bin("add", acc, Bin("mul", xv, wv)))
            y[nm * npos + p] = acc


def _source(kb, shifted: Expr, stride: int, size: int) -> tuple[Expr, Expr]:
    """(input position, whether tap and output position meet an input element) on one axis:
    ``shifted`` = output position + pad - tap offset must be a multiple of the stride
    inside ``[0, size * stride)``."""
    t = kb.let(shifted, "s")
    inside = logical_and(Bin("ge", t, idx(0)), Bin("lt", t, idx(size * stride)))
    if stride == 1:
        return t, inside
    exact = Bin("eq", Bin("rem", t, idx(stride)), idx(0))
    return Bin("div", t, idx(stride)), logical_and(inside, exact)


def _unflatten(kb, flat: Expr, dims: list[int]) -> list[Expr]:
    """Per-axis positions of a row-major flat index."""
    out: list[Expr] = []
    rest = flat
    for d in range(len(dims) - 1, 0, -1):
        out.append(kb.let(Bin("rem", rest, idx(dims[d])), "u"))
        rest = kb.let(Bin("div", rest, idx(dims[d])), "r")
    out.append(rest)
    return out[::-1]


def _flatten(pos: list[Expr], dims: list[int]) -> Expr:
    flat: Expr = pos[0]
    for p, d in zip(pos[1:], dims[1:]):
        flat = flat * d + p
    return flat
