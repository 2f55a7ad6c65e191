"""Emitters for Conv, FusedConv and the pooling ops.

Float32 2-d convolutions take the numba path of ``conv_numba.py`` (direct depthwise
kernel, parallel im2col into a reused scratch, fused epilogue). Otherwise convolutions are
GEMMs: a 1x1 convolution multiplies the weight matrix with the input
viewed as (N, C, H*W) with no copy at all; other kernels gather columns with
``sliding_window_view`` (one copy, im2col) and multiply once per group. Bias, residual
and activation are applied in place on the product. Pooling loops over the kernel taps
with one vectorized ufunc call each over strided slices (no window copies); the window
geometry is fixed at compile time, so pooling needs static spatial sizes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.backends.python.emitters.conv_numba import emit_numba_conv, use_conv_runtime
from torsh_gen.backends.python.emitters.elementwise import FLOATS, dtypes
from torsh_gen.backends.python.emitters.fused import emit_activation
from torsh_gen.backends.python.literals import index_src
from torsh_gen.ir.types import DType
from torsh_gen.ops.nn import conv_pads, spatial_params, windows


def _static_dims(ctx: NodeCtx, i: int) -> list[int] | None:
    t = ctx.in_tensor(i)
    if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
        return None
    return [int(d) for d in t.shape]


def _spatial(ctx: NodeCtx, n: int) -> list[int] | None:
    t = ctx.in_tensor(0)
    if t is None or t.shape is None or len(t.shape) != n + 2:
        return None
    sp = t.shape[2:]
    return [int(d) for d in sp] if all(isinstance(d, int) for d in sp) else None


def _pads(ctx: NodeCtx, kernel: list[int], ceil: bool = False) -> tuple[list[int], list[int], list[int] | None] | None:
    """(begin, end, out-or-None) pads; None when they need unknown sizes or crop."""
    n = len(kernel)
    strides, dilations, pads = spatial_params(ctx.attrs, n)
    auto = ctx.attrs.get("auto_pad", "NOTSET") or "NOTSET"
    size = _spatial(ctx, n)
    if size is None:
        if auto in ("SAME_UPPER", "SAME_LOWER") or ceil:
            return None
        begin, end = ([0] * n, [0] * n) if auto == "VALID" else (list(pads[:n]), list(pads[n:]))
        out = None
    else:
        begin, end, out = conv_pads(size, kernel, strides, dilations, pads, auto, ceil)
    if any(p < 0 for p in begin + end):
        return None
    return begin, end, out


@emits("Conv")
def conv(ctx: NodeCtx) -> bool:
    """Convolution as (im2col +) matmul, bias added in place."""
    return _conv(ctx, fused=False)


@emits("FusedConv", domain="ai.torsh")
def fused_conv(ctx: NodeCtx) -> bool:
    """Convolution with bias, residual and activation applied in place."""
    return _conv(ctx, fused=True)


def _given_dtypes(ctx: NodeCtx) -> list | None:
    """Element types of the inputs given (a FusedConv may have a residual but no bias)."""
    types = [ctx.in_tensor(i) for i in range(ctx.n_in()) if ctx.x(i) is not None]
    return None if any(t is None for t in types) else [t.dtype for t in types]


def _conv(ctx: NodeCtx, fused: bool) -> bool:
    ds = _given_dtypes(ctx)
    w_shape = _static_dims(ctx, 1)
    if not ds or any(d != ds[0] for d in ds) or ds[0] not in FLOATS or w_shape is None or len(w_shape) < 3:
        return False
    n = len(w_shape) - 2
    kernel = [int(k) for k in (ctx.attrs.kernel_shape or w_shape[2:])]
    if kernel != w_shape[2:] or ctx.in_tensor(0).rank != n + 2:
        return False
    geo = _pads(ctx, kernel)
    if geo is None:
        return False
    begin, end, _ = geo
    strides, dilations, _ = spatial_params(ctx.attrs, n)
    group = int(ctx.attrs.group or 1)
    m, cg = w_shape[0], w_shape[1]
    if m % group:
        return False
    if n == 2 and emit_numba_conv(ctx, w_shape, begin, strides, dilations, group, fused):
        return True
    x, w, y = ctx.x(0), ctx.x(1), ctx.y()
    nb = ctx.tmp("n")
    ctx.emit(f"{nb} = {x}.shape[0]")
    if all(k == 1 for k in kernel) and not any(begin + end) and group == 1:
        src = x if all(s == 1 for s in strides) else f"{x}[{index_src([(None, None, None)] * 2 + [(None, None, s) for s in strides])}]"
        xs = ctx.tmp("xs")
        ctx.emit(f"{xs} = {src}")
        _product(ctx, f"{w}.reshape({m}, {cg})", f"{xs}.reshape({nb}, {cg}, -1)", f"({nb}, {m}, -1)", f"({nb}, {m}) + {xs}.shape[2:]")
        ctx.emit(f"del {xs}")
    else:
        cols, outs = _im2col(ctx, x, nb, kernel, strides, dilations, begin, end, group, cg)
        wm = f"{w}.reshape({m}, {cg * math.prod(kernel)})" if group == 1 else f"{w}.reshape({group}, {m // group}, {cg * math.prod(kernel)})"
        prod = f"({nb}, {m}, -1)" if group == 1 else f"({nb}, {group}, {m // group}, -1)"
        _product(ctx, wm, cols, prod, f"({nb}, {m}) + {outs}")
        ctx.emit(f"del {cols}, {outs}")
    ctx.emit(f"del {nb}")
    if ctx.x(2) is not None:
        ctx.emit(f"np.add({y}, {ctx.x(2)}.reshape({ctx.lit((m,) + (1,) * n)}), out={y})")
    if not fused:
        return True
    if ctx.x(3) is not None:
        ctx.emit(f"np.add({y}, {ctx.x(3)}, out={y})")
    params = [float(p) for p in (ctx.attrs.activation_params or [])]
    return emit_activation(ctx, y, ctx.attrs.activation or "", params, ds[0])


def _product(ctx: NodeCtx, wm: str, cols: str, prod_shape: str, out_shape: str) -> None:
    """y = wm @ cols per batch item (one 2-D BLAS call each), shaped ``out_shape``.

    numpy's stacked matmul with a broadcast weight runs far below BLAS speed; a loop over
    the batch calls BLAS once per image instead.
    """
    y, buf = ctx.y(), ctx.buf()
    t = ctx.out_type(0)
    alloc = buf or f"np.empty({out_shape}, dtype={ctx.dtype(t.dtype)})"
    ctx.emit(f"{y} = {alloc}\n_rt.batched_matmul({wm}, {cols}, {y}.reshape({prod_shape}))")


def _im2col(ctx: NodeCtx, x: str, nb: str, kernel: list[int], strides: list[int], dilations: list[int],
            begin: list[int], end: list[int], group: int, cg: int) -> tuple[str, str]:
    """Emit the column matrix (N, [G,] C/G*prod(k), prod(out)); returns (cols, out-shape) names."""
    n = len(kernel)
    xp, v, cols, outs = ctx.tmp("xp"), ctx.tmp("win"), ctx.tmp("cols"), ctx.tmp("osp")
    if any(begin + end):
        widths = ((0, 0), (0, 0)) + tuple((b, e) for b, e in zip(begin, end))
        ctx.emit(f"{xp} = np.pad({x}, {ctx.lit(widths)})")
    else:
        ctx.emit(f"{xp} = {x}")
    dk = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    axes = tuple(range(2, 2 + n))
    sl = index_src([(None, None, None)] * 2 + [(None, None, s) for s in strides] + [(None, None, d) for d in dilations])
    view = f"np.lib.stride_tricks.sliding_window_view({xp}, {ctx.lit(dk)}, axis={ctx.lit(axes)})"
    ctx.emit(f"{v} = {view}[{sl}]" if sl != ":," else f"{v} = {view}")
    ctx.emit(f"{outs} = {v}.shape[2:{2 + n}]")
    perm = (0, 1) + tuple(range(2 + n, 2 + 2 * n)) + tuple(range(2, 2 + n))
    k = cg * math.prod(kernel)
    shape = f"({nb}, {k}, -1)" if group == 1 else f"({nb}, {group}, {k}, -1)"
    ctx.emit(f"{cols} = {v}.transpose({ctx.lit(perm)}).reshape({shape})\ndel {xp}, {v}")
    return cols, outs


# --------------------------------------------------------------------------- pooling
def _taps(ctx: NodeCtx, xp: str, kernel: list[int], strides: list[int], dilations: list[int], out: list[int]) -> list[str]:
    """Strided slices of ``xp``, one per kernel tap, each shaped like the output."""
    result = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        parts: list = [(None, None, None)] * 2
        for t, s, d, o in zip(tap, strides, dilations, out):
            parts.append((t * d, t * d + (o - 1) * s + 1, s))
        result.append(f"{xp}[{index_src(parts)}]")
    return result


def _pool_geometry(ctx: NodeCtx) -> tuple | None:
    """(dtype, kernel, strides, dilations, begin pads, end pads, output size) of a float
    pooling node with one output and static spatial sizes, else None."""
    ds = dtypes(ctx, 1)
    if not ds or ds[0] not in FLOATS or len(ctx.outs) != 1:
        return None
    kernel = [int(k) for k in ctx.attrs.kernel_shape or []]
    if not kernel or _spatial(ctx, len(kernel)) is None:
        return None
    geo = _pads(ctx, kernel, bool(ctx.attrs.ceil_mode))
    if geo is None or geo[2] is None or 0 in geo[2]:
        return None
    begin, end, out = geo
    strides, dilations, _ = spatial_params(ctx.attrs, len(kernel))
    return ds[0], kernel, strides, dilations, begin, end, out


def _pool_setup(ctx: NodeCtx, fill: str) -> tuple | None:
    geometry = _pool_geometry(ctx)
    if geometry is None:
        return None
    dtype, kernel, strides, dilations, begin, end, out = geometry
    xp = ctx.tmp("xp")
    if any(begin + end):
        widths = ((0, 0), (0, 0)) + tuple((b, e) for b, e in zip(begin, end))
        ctx.emit(f"{xp} = np.pad({ctx.x(0)}, {ctx.lit(widths)}, constant_values={fill})")
    else:
        ctx.emit(f"{xp} = {ctx.x(0)}")
    return dtype, xp, kernel, strides, dilations, begin, end, out


@emits("MaxPool")
def max_pool(ctx: NodeCtx) -> bool:
    """Running np.maximum over the kernel taps (pads are -inf); float32 2-d pooling is the
    numba kernel of ``_conv.py`` instead (one pass over the rows, one over the columns)."""
    if _numba_max_pool(ctx):
        return True
    setup = _pool_setup(ctx, "-np.inf")
    if setup is None:
        return False
    _, xp, kernel, strides, dilations, _, _, out = setup
    _reduce_taps(ctx, "np.maximum", _taps(ctx, xp, kernel, strides, dilations, out))
    ctx.emit(f"del {xp}")
    return True


@emits("AveragePool")
def average_pool(ctx: NodeCtx) -> bool:
    """Sum over the kernel taps, times 1/count (counted at compile time, as the reference);
    one window over the whole unpadded plane (ResNet-50's last 7x7 pool) is the mean over
    the spatial axes instead of 49 strided additions."""
    setup = _pool_setup(ctx, "0")
    if setup is None:
        return False
    dt, xp, kernel, strides, dilations, begin, end, out = setup
    whole = list(kernel) == _spatial(ctx, len(kernel)) and set(dilations) == {1}
    if whole and not any(begin + end) and set(out) == {1}:
        axes = tuple(range(2, len(kernel) + 2))
        ctx.emit(f"{ctx.y()} = np.mean({xp}, axis={ctx.lit(axes)}, keepdims=True{ctx.out_kw()})\ndel {xp}")
        return True
    _reduce_taps(ctx, "np.add", _taps(ctx, xp, kernel, strides, dilations, out))
    inv = 1.0 / np.maximum(_avg_count(ctx, kernel, strides, dilations, begin, end, out), 1)
    y = ctx.y()
    ctx.emit(f"np.multiply({y}, {ctx.weight(inv.astype(dt.numpy), 'pool_scale')}, out={y})\ndel {xp}")
    return True


def _reduce_taps(ctx: NodeCtx, fn: str, taps: list[str]) -> None:
    y = ctx.y()
    if len(taps) == 1:
        ctx.emit(f"{y} = np.array({taps[0]}, copy=True)" if not ctx.buf() else f"{y} = {ctx.buf()}\nnp.copyto({y}, {taps[0]})")
        return
    ctx.emit(f"{y} = {fn}({taps[0]}, {taps[1]}{ctx.out_kw()})")
    for t in taps[2:]:
        ctx.emit(f"{fn}({y}, {t}, out={y})")


def _avg_count(ctx: NodeCtx, kernel: list[int], strides: list[int], dilations: list[int],
               begin: list[int], end: list[int], out: list[int]) -> np.ndarray:
    """Elements per window the mean divides by (pads counted with count_include_pad)."""
    n = len(kernel)
    size = _spatial(ctx, n)
    auto = ctx.attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        s, d, p = spatial_params(ctx.attrs, n)
        b, e, _ = conv_pads(size, kernel, s, d, p, auto, bool(ctx.attrs.ceil_mode))
        explicit = b + e
    elif auto == "VALID":
        explicit = [0] * (2 * n)
    else:
        explicit = list(ctx.attrs.pads or [0] * (2 * n))
    count = np.ones((), np.float64)
    for i in range(n):
        lo, hi = (explicit[i], explicit[i + n]) if ctx.attrs.count_include_pad else (0, 0)
        pos = np.arange(-begin[i], size[i] + end[i])
        inside = ((pos >= -lo) & (pos < size[i] + hi)).astype(np.float64)
        cnt = windows(inside, [kernel[i]], [strides[i]], [dilations[i]], [out[i]]).sum(axis=-1)
        count = count[..., None] * cnt
    return count


@emits("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: NodeCtx) -> bool:
    """Mean or max over the spatial axes, kept as size-1 axes."""
    ds = dtypes(ctx, 1)
    t = ctx.in_tensor(0)
    if not ds or ds[0] not in FLOATS or t is None or t.shape is None or len(t.shape) < 3:
        return False
    axes = tuple(range(2, len(t.shape)))
    fn = "np.mean" if ctx.node.op_type == "GlobalAveragePool" else "np.max"
    ctx.emit(f"{ctx.y()} = {fn}({ctx.x(0)}, axis={ctx.lit(axes)}, keepdims=True{ctx.out_kw()})")
    return True


def _numba_max_pool(ctx: NodeCtx) -> bool:
    """The ``_cv.max_pool`` call for a float32 2-d MaxPool without indices; False to decline."""
    geometry = _pool_geometry(ctx)
    t_out = ctx.out_type(0)
    if geometry is None or geometry[0] != DType.FLOAT or len(geometry[1]) != 2:
        return False
    if t_out is None or t_out.shape is None or len(t_out.shape) != 4 or ctx.attrs.get("storage_order", 0):
        return False
    _, kernel, strides, dilations, begin, _, out = geometry
    x, y = ctx.x(0), ctx.y()
    alloc = ctx.buf() or f"np.empty(({x}.shape[0], {x}.shape[1], {out[0]}, {out[1]}), dtype=np.float32)"
    ctx.emit(f"{y} = {alloc}")
    width = ctx.in_tensor(0).shape[3]
    if (kernel[1], strides[1], *dilations) == (3, 2, 1, 1) and begin[1] in (0, 1) and isinstance(width, int) and isinstance(out[1], int) and out[1] <= (width + begin[1] + 1) // 2:
        # 3-wide, stride-2 windows with a left padding of 0 or 1: the even/odd kernel (its own part)
        geo = (int(kernel[0]), int(strides[0]), int(begin[0]), int(begin[1]))
        call = f"_cv.max_pool_w3s2({x}, {y}, {ctx.lit(geo)})"
        use_conv_runtime(ctx.module, "pool_w3s2")
    else:
        params = (*kernel, *strides, *dilations, *begin)
        call = f"_cv.max_pool({x}, {y}, {ctx.lit(tuple(int(p) for p in params))})"
        use_conv_runtime(ctx.module, "pool")
    if list(kernel) == [3, 3] and strides[0] == strides[1] in (1, 2) and set(dilations) == {1}:
        # 3x3 windows: the row kernel where the host has AVX-512 (chosen at import), else the above
        geo = (int(strides[0]), int(begin[0]), int(begin[1]))
        ctx.emit(f"if _cv.AVX512[0]:\n    _cv.max_pool3({x}, {y}, {ctx.lit(geo)})\nelse:\n    {call}")
        use_conv_runtime(ctx.module, "pool3")
        return True
    ctx.emit(call)
    return True
