"""Emitters for Softmax, LogSoftmax, LayerNormalization, inference BatchNormalization and LRN.

Each computes in the input's float type with numpy reductions and in-place updates of
the output buffer (max-shifted exponentials for the softmaxes; mean, centred variance
and 1/sqrt for the norms), as the reference kernels do. float32 softmaxes over the last
axes and float32 LayerNormalization are numba row kernels instead (``_nn.py.j2``): one
read of each row for the max or the mean, one for the sum or the variance, one write,
with a vectorized polynomial exp.
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.backends.python.emitters.conv_numba import use_conv_runtime
from torsh_gen.backends.python.emitters.elementwise import FLOATS, dtypes
from torsh_gen.backends.python.emitters.fused import nn_block, parallel_worthwhile
from torsh_gen.ir.types import DType


def _rank(ctx: NodeCtx) -> int | None:
    t = ctx.in_tensor(0)
    if t is None or t.shape is None or any(d == 0 for d in t.shape):
        return None
    return len(t.shape)


@emits("Softmax", "LogSoftmax")
def softmax(ctx: NodeCtx) -> bool:
    """exp(x - max) / sum along the axis (flattened to 2-D at the axis before opset 13)."""
    ds = dtypes(ctx, 1)
    rank = _rank(ctx)
    if not ds or ds[0] not in FLOATS or not rank:
        return False
    axis = int(ctx.attrs.axis)
    if not -rank <= axis < rank:
        return False
    x, y = ctx.x(0), ctx.y()
    coerce = ctx.opset < 13
    if ds[0] == DType.FLOAT and (coerce or axis % rank == rank - 1):
        log = ctx.node.op_type == "LogSoftmax"
        kernel = nn_block(ctx, "softmax", ctx.node.op_type.lower(), log, parallel_worthwhile(ctx.in_tensor(0)))
        _rows_call(ctx, kernel, axis % rank, [])
        return True
    src, ax = x, axis % rank
    if coerce:
        src = ctx.tmp("x2d")
        ctx.emit(f"{src} = _rt.flatten({x}, {ax})")
        ax = 1
    m = ctx.tmp("top")
    out = "" if coerce else ctx.out_kw()
    ctx.emit(f"{m} = np.max({src}, axis={ax}, keepdims=True)\n{y} = np.subtract({src}, {m}{out})\ndel {m}")
    s = ctx.tmp("total")
    if ctx.node.op_type == "Softmax":
        ctx.emit(f"np.exp({y}, out={y})\n{s} = np.sum({y}, axis={ax}, keepdims=True)\nnp.divide({y}, {s}, out={y})")
    else:
        ctx.emit(f"{s} = np.log(np.sum(np.exp({y}), axis={ax}, keepdims=True))\nnp.subtract({y}, {s}, out={y})")
    ctx.emit(f"del {s}")
    if coerce:
        ctx.emit(f"{y} = {y}.reshape({x}.shape)\ndel {src}")
    return True


@emits("LayerNormalization")
def layer_norm(ctx: NodeCtx) -> bool:
    """(x - mean) * 1/sqrt(var + eps) * scale + bias over axes axis..end."""
    ds = dtypes(ctx)
    rank = _rank(ctx)
    if not ds or any(d != ds[0] for d in ds) or ds[0] not in FLOATS or not rank:
        return False
    stash = int(ctx.attrs.stash_type)
    if (ds[0] == DType.FLOAT and stash != 1) or (ds[0] == DType.DOUBLE and stash != 11):
        return False
    axis = int(ctx.attrs.axis)
    if not -rank <= axis < rank:
        return False
    if ds[0] == DType.FLOAT and len(ctx.outs) == 1 and _fits_rows(ctx, axis % rank):
        kernel = nn_block(ctx, "layernorm", "layernorm", ctx.x(2) is not None)
        params = [_flat(ctx, 1)] + ([_flat(ctx, 2)] if ctx.x(2) is not None else [])
        eps = f"np.float32({ctx.lit(float(ctx.attrs.epsilon))})"
        _rows_call(ctx, kernel, axis % rank, params + [eps])
        return True
    axes = ctx.lit(tuple(range(axis % rank, rank)))
    x, y, d = ctx.x(0), ctx.y(), ctx.dtype(ds[0])
    mean, var = ctx.tmp("mean"), ctx.tmp("inv_std")
    ctx.emit(f"{mean} = np.mean({x}, axis={axes}, keepdims=True)\n{y} = np.subtract({x}, {mean}{ctx.out_kw()})")
    ctx.emit(f"{var} = np.mean(np.square({y}), axis={axes}, keepdims=True)")
    ctx.emit(f"np.add({var}, {d}({ctx.lit(float(ctx.attrs.epsilon))}), out={var})\nnp.sqrt({var}, out={var})\nnp.reciprocal({var}, out={var})")
    ctx.emit(f"np.multiply({y}, {var}, out={y})\nnp.multiply({y}, {ctx.x(1)}, out={y})")
    if ctx.x(2) is not None:
        ctx.emit(f"np.add({y}, {ctx.x(2)}, out={y})")
    extra = {1: mean, 2: var}
    for k in range(1, len(ctx.outs)):
        ctx.emit(f"{ctx.y(k)} = {extra[k]}")
    ctx.emit(f"del {mean}, {var}")
    return True


def _rows_call(ctx: NodeCtx, kernel: str, axis: int, params: list[str]) -> None:
    """``kernel(x2d, *params, y2d)`` on the input and output seen as rows of the axes from
    ``axis`` on (a C-contiguous copy of the input when it is a strided view)."""
    x, y = ctx.x(0), ctx.y()
    rows = ctx.tmp("rows")
    ctx.emit(f"{rows} = _rt.flatten(np.ascontiguousarray({x}), {axis})")
    alloc = ctx.buf() or f"np.empty({x}.shape, dtype=np.float32)"
    ctx.emit(f"{y} = {alloc}")
    ctx.emit(f"{kernel}({', '.join([rows] + params + [f'{y}.reshape({rows}.shape)'])})\ndel {rows}")


def _fits_rows(ctx: NodeCtx, axis: int) -> bool:
    """True when scale (and bias) hold exactly the normalized axes' values, in order."""
    norm = tuple(ctx.in_tensor(0).shape[axis:])
    if not all(isinstance(d, int) for d in norm):
        return False
    for i in (1, 2):
        t = ctx.in_tensor(i)
        if ctx.x(i) is None:
            continue
        if t is None or not t.is_static:
            return False
        shape = tuple(t.shape)
        while len(shape) > len(norm) and shape[0] == 1:
            shape = shape[1:]
        if shape != norm:
            return False
    return True


def _flat(ctx: NodeCtx, i: int) -> str:
    """Input ``i`` as a contiguous 1-D array (weights already are contiguous)."""
    x = ctx.x(i) if ctx.const(i) is not None else f"np.ascontiguousarray({ctx.x(i)})"
    return f"{x}.reshape(-1)"


@emits("BatchNormalization")
def batch_norm(ctx: NodeCtx) -> bool:
    """Inference form: (x - mean) / sqrt(var + eps) * scale + bias, per channel."""
    ds = dtypes(ctx, 5)
    rank = _rank(ctx)
    if not ds or any(d != ds[0] for d in ds) or ds[0] not in FLOATS or not rank or rank < 2:
        return False
    if (ctx.attrs.training_mode and len(ctx.outs) > 1) or len(ctx.outs) > 1:
        return False
    if any(ctx.in_tensor(i).rank != 1 for i in range(1, 5)):
        return False
    shape = ctx.lit((-1,) + (1,) * (rank - 2))
    x, y, d = ctx.x(0), ctx.y(), ctx.dtype(ds[0])
    scale, bias, mean, var = (ctx.x(i) for i in range(1, 5))
    k = ctx.tmp("factor")
    ctx.emit(f"{k} = ({scale} / np.sqrt({var} + {d}({ctx.lit(float(ctx.attrs.epsilon))}))).reshape({shape})")
    ctx.emit(f"{y} = np.subtract({x}, {mean}.reshape({shape}){ctx.out_kw()})\nnp.multiply({y}, {k}, out={y})")
    ctx.emit(f"np.add({y}, {bias}.reshape({shape}), out={y})\ndel {k}")
    return True


@emits("LRN")
def local_response_norm(ctx: NodeCtx) -> bool:
    """float32 LRN over (N, C, ...) inputs: the channel-window kernel of ``_conv.py``."""
    if dtypes(ctx, 1) != [DType.FLOAT] or (_rank(ctx) or 0) < 3:
        return False
    a = ctx.attrs
    y, x = ctx.y(), ctx.x(0)
    ctx.emit(f"{y} = {ctx.buf() or f'np.empty({x}.shape, dtype=np.float32)'}")
    params = ", ".join(ctx.lit(v) for v in (int(a.size), float(a.alpha), float(a.beta), float(a.bias)))
    ctx.emit(f"_cv.local_response_norm({x}, {y}, {params})")
    use_conv_runtime(ctx.module, "lrn")
    return True
