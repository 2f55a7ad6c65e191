"""Convolution kernels of this generated package (numba), by torsh-gen 0.1.0.

- ``im2col``: gathers the columns of a 2-d convolution into a reused scratch matrix, in
  parallel over its rows, so one BLAS product per image does the multiply-adds;
- ``epilogue``: bias, residual and a simple activation in one pass over the product;
- ``depthwise``: a direct depthwise (group == input channels) convolution, parallel over
  output channels, with the same epilogue applied while the channel is in cache.

Activation codes: 0 none, 1 Relu, 2 Clip(lo, hi), 3 LeakyRelu(alpha = lo). Only float32
C-contiguous operands are taken (explicit signatures: the kernels compile once when this
module is imported, ``cache=True`` keeps the machine code in ``__pycache__``). Sums run in
the same order as the numpy reference where it matters (bias, then residual), without
fastmath, so results stay within float32 rounding of it.
"""

import os

# numba's OpenMP workers and OpenBLAS's threads share the cores: workers that spin while
# the other pool computes cost more than they save, so ours wait passively. Both are
# read when the pools start, hence before numba launches its first parallel kernel.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402

# numba's cache records the module name and imports it when loading cached code: give this
# module a stable name, whatever name the package was imported under.
_NAME = "_torsh_conv_bdd93e3e91c1f3f7"
sys.modules.setdefault(_NAME, sys.modules[__spec__.name])
__name__ = _NAME  # noqa: A001

if "NUMBA_THREADING_LAYER" not in os.environ:
    nb.config.THREADING_LAYER = "omp"

_F4 = nb.float32
_I8 = nb.int64
_X3 = nb.types.Array(_F4, 3, "C", readonly=True)
_X4 = nb.types.Array(_F4, 4, "C", readonly=True)
_Y2 = nb.types.Array(_F4, 2, "C")
_Y3 = nb.types.Array(_F4, 3, "C")
_Y4 = nb.types.Array(_F4, 4, "C")
_B1 = nb.types.Array(_F4, 1, "C", readonly=True)
_R3 = nb.types.Array(_F4, 3, "C", readonly=True)
_R4 = nb.types.Array(_F4, 4, "C", readonly=True)
_U = nb.uint64  # unsigned indices: no negative-index wraparound check
_OPTS = dict(parallel=True, cache=True, nogil=True)

_scratch_attr = "_torsh_conv_scratch"


def scratch(owner, count: int) -> np.ndarray:
    """A float32 scratch vector of ``count`` elements kept on ``owner`` (grown, never shrunk)."""
    buf = owner.__dict__.get(_scratch_attr)
    if buf is None or buf.size < count:
        buf = np.empty(count, np.float32)
        setattr(owner, _scratch_attr, buf)
    return buf[:count]


_NO_BIAS = np.zeros(0, np.float32)
_NO_RES3 = np.zeros((0, 0, 0), np.float32)
_NO_RES4 = np.zeros((0, 0, 0, 0), np.float32)


def conv2d(owner, x, w, b, z, y, geo, act, lo, hi):
    """y = act(conv(x, w) + b + z) for float32 NCHW ``x`` into the preallocated ``y``.

    ``geo`` is (strides h, w, dilations h, w, begin pads h, w, group). Depthwise
    convolutions (one input channel per group) run the direct kernel; the others gather
    columns per image into ``owner``'s scratch (1x1 stride-1 unpadded ones use the input
    as it is) and multiply once per group straight into ``y``, then run the epilogue.
    """
    sh, sw, dh, dw, ph, pw, group = geo
    x = np.ascontiguousarray(x)
    n, c, h, wd = x.shape
    m, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    bias = _NO_BIAS if b is None else b
    if group > 1 and w.shape[1] == 1 and group == c:
        res = _NO_RES4 if z is None else np.ascontiguousarray(z)
        depthwise(x, w.reshape(m, kh, kw), bias, res, y, sh, sw, dh, dw, ph, pw, act, lo, hi)
        return
    oh, ow = y.shape[2], y.shape[3]
    p = oh * ow
    k = w.shape[1] * kh * kw
    mg = m // group
    w3 = w.reshape(group, mg, k)
    y3 = y.reshape(n, m, p)
    direct = kh == kw == sh == sw == 1 and ph == pw == 0 and (oh, ow) == (h, wd)
    cols = x.reshape(n, c, p) if direct else None
    for i in range(n):
        if direct:
            ci = cols[i]
        else:
            ci = scratch(owner, c * kh * kw * p).reshape(c * kh * kw, p)
            im2col(x[i], ci, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow)
        for g in range(group):
            np.matmul(w3[g], ci[g * k : (g + 1) * k], out=y3[i, g * mg : (g + 1) * mg])
    if b is not None or z is not None or act:
        res = _NO_RES3 if z is None else np.ascontiguousarray(z).reshape(n, m, p)
        epilogue(y3, bias, res, act, lo, hi)


@nb.njit(nb.void(_X3, _Y2, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _I8), **_OPTS)
def im2col(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow):
    """cols[(c, i, j), (y, x)] = x[c, y*sh - ph + i*dh, x*sw - pw + j*dw], 0 outside."""
    c_n, h, w = x.shape
    p = oh * ow
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    for r in nb.prange(c_n * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        off = j * dw - pw
        lo = 0 if off >= 0 else (sw - 1 - off) // sw
        hi = min(ow, (w - 1 - off) // sw + 1) if w - 1 - off >= 0 else 0
        lo = min(lo, ow)
        hi = max(hi, lo)
        for yo in range(oh):
            iy = yo * sh - ph + i * dh
            dbase = r * p + yo * ow
            if iy < 0 or iy >= h:
                for xo in range(ow):
                    cf[_U(dbase + xo)] = 0.0
                continue
            sbase = (c * h + iy) * w + off
            for xo in range(lo):
                cf[_U(dbase + xo)] = 0.0
            if sw == 1:
                for xo in range(lo, hi):
                    cf[_U(dbase + xo)] = xf[_U(sbase + xo)]
            else:
                for xo in range(lo, hi):
                    cf[_U(dbase + xo)] = xf[_U(sbase + xo * sw)]
            for xo in range(hi, ow):
                cf[_U(dbase + xo)] = 0.0


@nb.njit(inline="always")
def _valid(off, sw, w, ow):
    """The output columns xo whose input column xo * sw + off lies inside [0, w)."""
    lo = 0 if off >= 0 else (sw - 1 - off) // sw
    hi = min(ow, (w - 1 - off) // sw + 1) if w - 1 - off >= 0 else 0
    lo = min(lo, ow)
    return lo, max(hi, lo)


@nb.njit(inline="always")
def _row3(xf, yf, wf, wrow, s, d, sw, dw, pw, wd, ow):
    """One kernel row of width 3 added into output row ``d``: three taps per load/store."""
    w0 = wf[_U(wrow)]
    w1 = wf[_U(wrow + 1)]
    w2 = wf[_U(wrow + 2)]
    lo, _ = _valid(-pw, sw, wd, ow)
    _, hi = _valid(2 * dw - pw, sw, wd, ow)
    hi = max(hi, lo)
    for xo in range(lo, hi):
        b = s + xo * sw
        yf[_U(d + xo)] += (w0 * xf[_U(b)] + w1 * xf[_U(b + dw)]) + w2 * xf[_U(b + 2 * dw)]
    _edge3(xf, yf, wf, wrow, s, d, sw, dw, pw, wd, 0, lo)
    _edge3(xf, yf, wf, wrow, s, d, sw, dw, pw, wd, hi, ow)


@nb.njit(inline="always")
def _edge3(xf, yf, wf, wrow, s, d, sw, dw, pw, wd, start, stop):
    """Columns [start, stop) of a width-3 kernel row, where some taps fall in the padding."""
    for xo in range(start, stop):
        acc = yf[_U(d + xo)]
        for j in range(3):
            col = xo * sw + j * dw - pw
            if col >= 0 and col < wd:
                acc += wf[_U(wrow + j)] * xf[_U(s + col + pw)]
        yf[_U(d + xo)] = acc


@nb.njit(_F4(_F4, _I8, _F4, _F4), inline="always")
def _act(v, act, lo, hi):
    if act == 1:
        return np.float32(0.0) if v < 0 else v
    if act == 2:
        v = lo if v < lo else v
        return hi if v > hi else v
    if act == 3:
        return v if v >= 0 else v * lo
    return v


@nb.njit(nb.void(_Y3, _B1, _R3, _I8, _F4, _F4), **_OPTS)
def epilogue(y, bias, res, act, lo, hi):
    """y = act(y + bias[channel] + res) in place over y (N, C, P); empty bias/res: none."""
    n, m, p = y.shape
    yf = y.reshape(-1)
    rf = res.reshape(-1)
    has_bias = bias.size > 0
    has_res = res.size > 0
    for r in nb.prange(n * m):
        bv = bias[r % m] if has_bias else np.float32(0.0)
        base = r * p
        if has_res:
            for k in range(p):
                q = _U(base + k)
                yf[q] = _act((yf[q] + bv) + rf[q], act, lo, hi)
        else:
            for k in range(p):
                q = _U(base + k)
                yf[q] = _act(yf[q] + bv, act, lo, hi)


@nb.njit(nb.void(_X4, _X3, _B1, _R4, _Y4, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _F4, _F4), **_OPTS)
def depthwise(x, w, bias, res, y, sh, sw, dh, dw, ph, pw, act, lo, hi):
    """y[b, m] = act(sum_taps w[m] * x[b, m // mult] + bias[m] + res[b, m]), x (N, C, H, W)."""
    n, c_n, h, wd = x.shape
    _, m_n, oh, ow = y.shape
    kh, kw = w.shape[1], w.shape[2]
    mult = m_n // c_n
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    rf = res.reshape(-1)
    wf = w.reshape(-1)
    has_bias = bias.size > 0
    has_res = res.size > 0
    for r in nb.prange(n * m_n):
        m = r % m_n
        xbase = ((r // m_n) * c_n + m // mult) * h * wd
        ybase = r * oh * ow
        for q in range(ybase, ybase + oh * ow):
            yf[_U(q)] = 0.0
        for i in range(kh):
            for yo in range(oh):
                iy = yo * sh - ph + i * dh
                if iy < 0 or iy >= h:
                    continue
                d = ybase + yo * ow
                s = xbase + iy * wd - pw
                wrow = (m * kh + i) * kw
                if kw == 3:
                    _row3(xf, yf, wf, wrow, s, d, sw, dw, pw, wd, ow)
                    continue
                for j in range(kw):
                    wv = wf[_U(wrow + j)]
                    lo_x, hi_x = _valid(j * dw - pw, sw, wd, ow)
                    for xo in range(lo_x, hi_x):
                        yf[_U(d + xo)] += wv * xf[_U(s + j * dw + xo * sw)]
        bv = bias[m] if has_bias else np.float32(0.0)
        if has_res:
            for q in range(ybase, ybase + oh * ow):
                yf[_U(q)] = _act((yf[_U(q)] + bv) + rf[_U(q)], act, lo, hi)
        else:
            for q in range(ybase, ybase + oh * ow):
                yf[_U(q)] = _act(yf[_U(q)] + bv, act, lo, hi)
