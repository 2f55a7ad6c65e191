"""The numba path of Conv and FusedConv: float32 2-d convolutions through ``_conv.py``.

The generated code makes one call, ``_cv.conv2d(...)``, into the package's convolution
runtime (``templates/python/_conv.py.j2``): depthwise convolutions run a direct kernel
with the epilogue fused; the others gather columns with a parallel numba kernel into a
scratch matrix the Model keeps (no per-call allocation, no sliding-window copy chain),
multiply once per image and group with BLAS straight into the output buffer, and apply
bias, residual and a simple activation (Relu, Clip, LeakyRelu) in one pass over it.
Other activations run after that pass with the generic in-place code.

The emitter declines (the numpy path of ``conv.py`` takes over) for other element types,
1-d and 3-d convolutions, spatial sizes unknown at compile time, and residuals whose shape
differs from the output's (broadcast residuals).
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters.fused import emit_activation
from torsh_gen.ir.types import DType

#: FusedConv activations the convolution runtime applies itself → their code there.
ACT_CODES = {"": 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3}


def act_args(act: str, params: list[float]) -> tuple[int, float, float]:
    """(code, lo, hi) of an activation for the runtime's kernels: Clip's bounds or
    LeakyRelu's slope in lo; code 0 (none) for activations they do not apply."""
    code = ACT_CODES.get(act, 0)
    lo, hi = (params + [0.0, 0.0])[:2] if code else (0.0, 0.0)
    return code, lo, hi

#: The attribute on ``Module`` naming the parts of ``_conv.py`` the package needs (a set;
#: none: no ``_conv.py``): "conv", "conv_gather", "depthwise", "depthwise_any", "matmul", ...
CONV_PARTS = "conv_runtime_parts"


def use_conv_runtime(module: object, *parts: str) -> None:
    """Record that the generated code calls the ``parts`` of ``_conv.py``."""
    current = getattr(module, CONV_PARTS, None) or set()
    setattr(module, CONV_PARTS, current | set(parts))


def emit_numba_conv(ctx: NodeCtx, w_shape: list[int], begin: list[int], strides: list[int],
                    dilations: list[int], group: int, fused: bool) -> bool:
    """Emit the ``_cv.conv2d`` call for a 2-d float32 convolution; False to decline."""
    t_in, t_out = ctx.in_tensor(0), ctx.out_type(0)
    if t_in is None or t_out is None or t_in.dtype != DType.FLOAT or len(w_shape) != 4:
        return False
    if t_in.shape is None or t_out.shape is None or len(t_out.shape) != 4:
        return False
    spatial = list(t_out.shape[1:]) + list(t_in.shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in spatial):
        return False
    z = ctx.x(3) if fused else None
    if z is not None:
        tz = ctx.in_tensor(3)
        if tz is None or tz.shape is None or tuple(tz.shape) != tuple(t_out.shape):
            return False
    act = (ctx.attrs.activation or "") if fused else ""
    params = [float(p) for p in (ctx.attrs.activation_params or [])] if fused else []
    code, lo, hi = act_args(act, params)
    y = ctx.y()
    m, oh, ow = t_out.shape[1:]
    alloc = ctx.buf() or f"np.empty(({ctx.x(0)}.shape[0], {m}, {oh}, {ow}), dtype=np.float32)"
    geo = (strides[0], strides[1], dilations[0], dilations[1], begin[0], begin[1], group)
    b = ctx.x(2) or "None"
    ctx.emit(f"{y} = {alloc}")
    ctx.emit(f"_cv.conv2d(self, {ctx.x(0)}, {ctx.x(1)}, {b}, {z or 'None'}, {y}, {ctx.lit(geo)}, "
             f"{code}, {ctx.lit(float(lo))}, {ctx.lit(float(hi))})")
    if act not in ACT_CODES and not emit_activation(ctx, y, act, params, DType.FLOAT):
        return False
    c = t_in.shape[1]
    if group > 1 and w_shape[1] == 1 and c == group:  # depthwise
        use_conv_runtime(ctx.module, depthwise_part(w_shape, strides, dilations))
        return True
    use_conv_runtime(ctx.module, "conv", *(("depthwise",) if group > 1 and w_shape[1] == 1 else ()))
    if rgb3(w_shape, c, group, strides, dilations):
        use_conv_runtime(ctx.module, "conv_rgb3")
    if gathers(w_shape, begin, strides, dilations, (oh, ow), tuple(t_in.shape[2:])):
        use_conv_runtime(ctx.module, "conv_gather")
    return True


def depthwise_part(w_shape: list[int], strides: list[int], dilations: list[int]) -> str:
    """The part of ``_conv.py`` that runs a depthwise convolution, as ``conv2d`` picks its
    kernel: "depthwise" (the 3x3 grid kernel, stride 1 or 2, no dilation) or
    "depthwise_any" (the scalar loop for the rest; 4 s of CPU on a cold build, so a model
    with only 3x3 depthwise convolutions does not compile it)."""
    kh, kw = w_shape[2], w_shape[3]
    (sh, sw), (dh, dw) = strides, dilations
    if kh == kw == 3 and dh == dw == 1 and sh == sw and sh in (1, 2):
        return "depthwise"
    return "depthwise_any"


def rgb3(w_shape: list[int], c: int, group: int, strides: list[int], dilations: list[int]) -> bool:
    """Whether ``conv2d`` may run this convolution on ``conv_rgb3`` (3x3 over 3 input
    channels, stride 1 or 2, no dilation: an RGB stem), which lives in its own part
    ("conv_rgb3") so that other models do not compile it; the package decides at import
    whether the CPU has the AVX-512 it needs."""
    (sh, sw), (dh, dw) = strides, dilations
    return group == 1 and c == 3 and tuple(w_shape[2:]) == (3, 3) and dh == dw == 1 and sh == sw and sh in (1, 2)


def gathers(w_shape: list[int], begin: list[int], strides: list[int], dilations: list[int],
            out_hw: tuple[int, int], in_hw: tuple[int, int]) -> bool:
    """Whether ``conv2d`` in ``_conv.py`` runs this (non-depthwise) convolution through
    ``gemm_conv``'s gathered panels, which live in their own part ("conv_gather": 1.3 s of
    CPU on a cold build). Mirrors that function's choice of path, which a test checks over
    a sweep of geometries: padded grid (stride 1), phase split (equal strides, no
    dilation), subsampled 1x1, direct 1x1; anything else gathers."""
    kh, kw = w_shape[2], w_shape[3]
    (sh, sw), (dh, dw), (ph, pw) = strides, dilations, begin
    (oh, ow), (h, w) = out_hw, in_hw
    if sh == sw == 1 and (kh > 1 or kw > 1 or ph or pw) and ow + (kw - 1) * dw >= 8:
        return False
    if sh == sw > 1 and dh == dw == 1 and (kh > 1 or kw > 1) and ow + (kw - 1) // sh >= 8:
        return False
    if kh == kw == 1 and (sh > 1 or sw > 1) and not (ph or pw):
        return False  # subsampled: direct below, its input is exactly (oh, ow)
    return not (kh == kw == sh == sw == 1 and ph == pw == 0 and (oh, ow) == (h, w))
