"""Lowerings of the layer ops: convolution, linear, normalization, pooling, dropout.

Where the pattern matches a standard torch layer with constant weights, the node becomes a
submodule (``nn.Conv2d``, ``nn.Linear``, ``nn.BatchNorm2d``, ``nn.LayerNorm``, ``nn.Embedding``
…) whose state dict holds the model's weights in torch's layout; otherwise it becomes
functional torch code. Parameter-free ops (pooling) stay functional.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.ir.graph import Node
from torsh_gen.scaffold.train.lower import Ctx, NotLowerable, literal, lowers


def tup(values: list[int]) -> str:
    """``3`` when every entry is equal, else ``(3, 5)``."""
    if values and all(v == values[0] for v in values):
        return str(values[0])
    return "(" + ", ".join(str(v) for v in values) + ("," if len(values) == 1 else "") + ")"


def kwargs(**items: tuple[str, str]) -> str:
    """``, name=value`` for each (value, default) pair whose value is not the default."""
    return "".join(f", {k}={v}" for k, (v, default) in items.items() if v != default)


def torch_pad(pads: list[int]) -> list[int]:
    """ONNX pads ``[b1..bn, e1..en]`` in F.pad order (last dim first, begin then end)."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def spatial_pads(ctx: Ctx, node: Node, n: int, kernel: list[int], strides: list[int], dil: list[int]) -> list[int]:
    """Explicit ONNX pads for ``node`` (resolving auto_pad from static shapes)."""
    auto = node.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto == "VALID":
        return [0] * (2 * n)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        shape = ctx.shape(node.inputs[0])
        dims = None if shape is None else shape[2:]
        if dims is None or not all(isinstance(d, int) for d in dims):
            raise NotLowerable(f"auto_pad={auto} needs static spatial dims")
        begin, end = [], []
        for d, k, s, dl in zip(dims, kernel, strides, dil):
            total = max(0, (-(-d // s) - 1) * s + (k - 1) * dl + 1 - d)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin + end
    return [int(p) for p in node.attr("pads", [0] * (2 * n))]


def _padded(ctx: Ctx, x: str, pads: list[int], value: str = "0.0") -> tuple[str, list[int]]:
    """Symmetric pads go to the layer; asymmetric ones become an explicit ``F.pad``."""
    n = len(pads) // 2
    if pads[:n] == pads[n:]:
        return x, pads[:n]
    return f"F.pad({x}, {torch_pad(pads)}, value={value})", [0] * n


@lowers("Conv")
def conv(ctx: Ctx, node: Node) -> None:
    """Conv → nn.Conv1d/2d/3d with the model's weights (functional when weights are computed)."""
    x_val, w_val = node.inputs[0], node.inputs[1]
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    w = ctx.const(w_val)
    wshape = w.shape if w is not None else ctx.shape(w_val)
    if wshape is None or not 3 <= len(wshape) <= 5:
        raise NotLowerable("needs a 1-, 2- or 3-d kernel of known rank")
    n = len(wshape) - 2
    kernel = [int(k) for k in node.attr("kernel_shape", list(wshape[2:]))]
    strides = [int(s) for s in node.attr("strides", [1] * n)]
    dil = [int(d) for d in node.attr("dilations", [1] * n)]
    groups = int(node.attr("group", 1))
    x, padding = _padded(ctx, ctx.var(x_val), spatial_pads(ctx, node, n, kernel, strides, dil))
    bias = ctx.const(b_val)
    if w is not None and (b_val is None or bias is not None) and all(isinstance(d, int) for d in wshape):
        tensors = {"weight": w}
        if bias is not None:
            tensors["bias"] = bias
        extra = kwargs(
            stride=(tup(strides), "1"),
            padding=(tup(padding), "0"),
            dilation=(tup(dil), "1"),
            groups=(str(groups), "1"),
            bias=(str(bias is not None), "True"),
        )
        ctor = f"nn.Conv{n}d({wshape[1] * groups}, {wshape[0]}, kernel_size={tup(kernel)}{extra})"
        ctx.emit(f"{ctx.layer(ctor, tensors)}({x})")
        return
    b = "None" if b_val is None else ctx.var(b_val)
    ctx.emit(
        f"F.conv{n}d({x}, {ctx.var(w_val)}, {b}, stride={tup(strides)}, padding={tup(padding)}, "
        f"dilation={tup(dil)}, groups={groups})"
    )


@lowers("ConvTranspose")
def conv_transpose(ctx: Ctx, node: Node) -> None:
    """ConvTranspose with constant weights and explicit symmetric pads → nn.ConvTranspose{n}d."""
    w = ctx.const(node.inputs[1])
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    bias = ctx.const(b_val)
    if w is None or (b_val is not None and bias is None):
        raise NotLowerable("needs constant weights")
    n = w.ndim - 2
    if node.attr("output_shape") is not None or node.attr("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotLowerable("output_shape/auto_pad are not supported")
    strides = [int(s) for s in node.attr("strides", [1] * n)]
    dil = [int(d) for d in node.attr("dilations", [1] * n)]
    pads = [int(p) for p in node.attr("pads", [0] * (2 * n))]
    outpad = [int(p) for p in node.attr("output_padding", [0] * n)]
    groups = int(node.attr("group", 1))
    if pads[:n] != pads[n:]:
        raise NotLowerable("asymmetric pads are not supported")
    tensors = {"weight": w} | ({"bias": bias} if bias is not None else {})
    extra = kwargs(
        stride=(tup(strides), "1"),
        padding=(tup(pads[:n]), "0"),
        output_padding=(tup(outpad), "0"),
        groups=(str(groups), "1"),
        bias=(str(bias is not None), "True"),
        dilation=(tup(dil), "1"),
    )
    ctor = f"nn.ConvTranspose{n}d({w.shape[0]}, {w.shape[1] * groups}, kernel_size={tup(list(w.shape[2:]))}{extra})"
    ctx.emit(f"{ctx.layer(ctor, tensors)}({ctx.var(node.inputs[0])})")


def _linear(ctx: Ctx, x: str, weight: np.ndarray, bias: np.ndarray | None, outputs) -> None:
    """Emit nn.Linear for ``weight`` [out, in] (torch layout) and optional ``bias`` [out]."""
    tensors = {"weight": np.ascontiguousarray(weight)}
    if bias is not None:
        tensors["bias"] = np.ascontiguousarray(bias.reshape(-1))
    ctor = f"nn.Linear({weight.shape[1]}, {weight.shape[0]}{kwargs(bias=(str(bias is not None), 'True'))})"
    ctx.emit(f"{ctx.layer(ctor, tensors)}({x})", outputs)


def _bias_add(ctx: Ctx, node: Node, n_out: int, out_rank: int | None) -> tuple[Node, np.ndarray] | None:
    """The Add that adds a constant [N] bias to ``node``'s only use, if that is the pattern."""
    out = node.outputs[0]
    users = ctx.users(out)
    if len(users) != 1 or users[0].op_type != "Add" or out in ctx.graph.outputs:
        return None
    add = users[0]
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    b = ctx.const(other)
    if b is None or b.dtype != np.float32 or b.size != n_out or b.shape[-1:] != (n_out,):
        return None
    if out_rank is None or b.ndim > out_rank:
        return None
    return add, b


@lowers("MatMul")
def matmul(ctx: Ctx, node: Node) -> None:
    """MatMul by a constant 2-d weight (plus a bias Add) → nn.Linear; else torch.matmul."""
    a, b_val = node.inputs
    w = ctx.const(b_val)
    a_shape = ctx.shape(a)
    if w is not None and w.ndim == 2 and w.dtype == np.float32 and a_shape is not None and len(a_shape) >= 1:
        out_rank = ctx.rank(node.outputs[0]) if ctx.shape(node.outputs[0]) is not None else None
        fused = _bias_add(ctx, node, w.shape[1], out_rank)
        if fused is not None:
            add, bias = fused
            ctx.absorbed.add(id(add))
            _linear(ctx, ctx.var(a), w.T, bias, add.outputs)
        else:
            _linear(ctx, ctx.var(a), w.T, None, node.outputs)
        return
    ctx.emit(f"torch.matmul({ctx.var(a)}, {ctx.var(b_val)})")


@lowers("Gemm")
def gemm(ctx: Ctx, node: Node) -> None:
    """Gemm with a constant B and plain scaling → nn.Linear; else functional matmul code."""
    a_val, b_val = node.inputs[0], node.inputs[1]
    c_val = node.inputs[2] if len(node.inputs) > 2 else None
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    ta, tb = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    w, c = ctx.const(b_val), ctx.const(c_val)
    if w is not None and w.ndim == 2 and not ta and alpha == 1.0 and w.dtype == np.float32:
        weight = w if tb else w.T
        n_out = weight.shape[0]
        if c_val is None or beta == 0.0:
            _linear(ctx, ctx.var(a_val), weight, None, node.outputs)
            return
        if c is not None and beta == 1.0 and c.size in (1, n_out) and c.ndim <= 2:
            bias = np.broadcast_to(c.reshape(-1), (n_out,)).astype(np.float32)
            _linear(ctx, ctx.var(a_val), weight, bias, node.outputs)
            return
    a = ctx.var(a_val) + (".t()" if ta else "")
    b = ctx.var(b_val) + (".t()" if tb else "")
    expr = f"({a} @ {b})" if alpha == 1.0 else f"{literal(np.float32(alpha))} * ({a} @ {b})"
    if c_val is not None and beta != 0.0:
        cexpr = ctx.var(c_val)
        expr += f" + {cexpr}" if beta == 1.0 else f" + {literal(np.float32(beta))} * {cexpr}"
    ctx.emit(expr)


def _norm_suffix(rank: int) -> str:
    if rank in (2, 3):
        return "1d"
    if rank in (4, 5):
        return f"{rank - 2}d"
    raise NotLowerable(f"rank-{rank} input is not supported")


@lowers("BatchNormalization")
def batchnorm(ctx: Ctx, node: Node) -> None:
    """Inference-mode BatchNormalization with constant statistics → nn.BatchNorm{1,2,3}d."""
    x_val = node.inputs[0]
    stats = [ctx.const(v) for v in node.inputs[1:5]]
    if any(s is None for s in stats) or int(node.attr("training_mode", 0)):
        raise NotLowerable("needs constant scale/bias/mean/var and training_mode=0")
    if any(o.name and ctx.users(o) for o in node.outputs[1:]) or any(o in ctx.graph.outputs for o in node.outputs[1:]):
        raise NotLowerable("running-statistics outputs are not supported")
    scale, bias, mean, var = (np.asarray(s, np.float32).reshape(-1) for s in stats)
    eps = np.float32(node.attr("epsilon", 1e-5))
    momentum = round(1.0 - float(node.attr("momentum", 0.9)), 6)
    suffix = _norm_suffix(ctx.rank(x_val))
    tensors = {
        "weight": scale,
        "bias": bias,
        "running_mean": mean,
        "running_var": var,
        "num_batches_tracked": np.array(0, np.int64),
    }
    extra = kwargs(eps=(literal(eps), "1e-05"), momentum=(literal(np.float32(momentum)), "0.1"))
    ctor = f"nn.BatchNorm{suffix}({scale.size}{extra})"
    ctx.emit(f"{ctx.layer(ctor, tensors)}({ctx.var(x_val)})", node.outputs[:1])


@lowers("InstanceNormalization")
def instancenorm(ctx: Ctx, node: Node) -> None:
    """InstanceNormalization with constant scale and bias → nn.InstanceNorm{1,2,3}d(affine)."""
    scale, bias = ctx.const(node.inputs[1]), ctx.const(node.inputs[2])
    if scale is None or bias is None:
        raise NotLowerable("needs constant scale and bias")
    rank = ctx.rank(node.inputs[0])
    if rank < 3:
        raise NotLowerable("needs an input of rank 3 or more")
    eps = np.float32(node.attr("epsilon", 1e-5))
    ctor = f"nn.InstanceNorm{_norm_suffix(rank)}({scale.size}{kwargs(eps=(literal(eps), '1e-05'))}, affine=True)"
    ref = ctx.layer(ctor, {"weight": scale.reshape(-1), "bias": bias.reshape(-1)})
    ctx.emit(f"{ref}({ctx.var(node.inputs[0])})")


@lowers("LayerNormalization")
def layernorm(ctx: Ctx, node: Node) -> None:
    """LayerNormalization over the trailing dims with constant scale → nn.LayerNorm."""
    x_val = node.inputs[0]
    shape = ctx.shape(x_val)
    if shape is None:
        raise NotLowerable("needs an input of known rank")
    if any(ctx.users(o) or o in ctx.graph.outputs for o in node.outputs[1:] if o.name):
        raise NotLowerable("Mean/InvStdDev outputs are not supported")
    axis = int(node.attr("axis", -1))
    axis = axis + len(shape) if axis < 0 else axis
    norm = shape[axis:]
    eps = np.float32(node.attr("epsilon", 1e-5))
    scale = ctx.const(node.inputs[1])
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    bias = ctx.const(b_val)
    x = ctx.var(x_val)
    static = all(isinstance(d, int) for d in norm)
    if static and scale is not None and scale.shape == tuple(norm) and (b_val is None or bias is not None):
        tensors = {"weight": scale} | ({"bias": bias.reshape(scale.shape)} if bias is not None else {})
        shape_txt = tup(list(norm)) if len(norm) > 1 else str(norm[0])
        extra = kwargs(eps=(literal(eps), "1e-05"), bias=(str(bias is not None), "True"))
        ctor = f"nn.LayerNorm({shape_txt}{extra})"
        ctx.emit(f"{ctx.layer(ctor, tensors)}({x})", node.outputs[:1])
        return
    b = "None" if b_val is None else ctx.var(b_val)
    ctx.emit(
        f"F.layer_norm({x}, {x}.shape[{axis}:], {ctx.var(node.inputs[1])}, {b}, eps={literal(eps)})",
        node.outputs[:1],
    )


def _pool_args(ctx: Ctx, node: Node) -> tuple[int, list[int], list[int], list[int], list[int]]:
    kernel = [int(k) for k in node.attr("kernel_shape", [])]
    n = len(kernel)
    if not 1 <= n <= 3:
        raise NotLowerable("needs a 1-, 2- or 3-d kernel")
    strides = [int(s) for s in node.attr("strides", [1] * n)]
    dil = [int(d) for d in node.attr("dilations", [1] * n)]
    return n, kernel, strides, dil, spatial_pads(ctx, node, n, kernel, strides, dil)


@lowers("MaxPool")
def maxpool(ctx: Ctx, node: Node) -> None:
    """MaxPool → F.max_pool{n}d (asymmetric or large pads become an explicit -inf pad)."""
    if len(node.outputs) > 1 and node.outputs[1].name:
        raise NotLowerable("the Indices output is not supported")
    n, kernel, strides, dil, pads = _pool_args(ctx, node)
    x = ctx.var(node.inputs[0])
    if pads[:n] != pads[n:] or any(2 * p > k for p, k in zip(pads[:n], kernel)):
        x, padding = f"F.pad({x}, {torch_pad(pads)}, value=float(\"-inf\"))", [0] * n
    else:
        padding = pads[:n]
    extra = kwargs(
        stride=(tup(strides), tup(kernel)),
        padding=(tup(padding), "0"),
        dilation=(tup(dil), "1"),
        ceil_mode=(str(bool(node.attr("ceil_mode", 0))), "False"),
    )
    ctx.emit(f"F.max_pool{n}d({x}, {tup(kernel)}{extra})", node.outputs[:1])


@lowers("AveragePool")
def avgpool(ctx: Ctx, node: Node) -> None:
    """AveragePool → F.avg_pool{n}d."""
    n, kernel, strides, dil, pads = _pool_args(ctx, node)
    if any(d != 1 for d in dil):
        raise NotLowerable("dilations are not supported")
    include = bool(node.attr("count_include_pad", 0))
    x = ctx.var(node.inputs[0])
    if pads[:n] != pads[n:] or any(2 * p > k for p, k in zip(pads[:n], kernel)):
        if not include:
            raise NotLowerable("asymmetric pads without count_include_pad are not supported")
        x, padding = f"F.pad({x}, {torch_pad(pads)})", [0] * n
    else:
        padding = pads[:n]
    extra = kwargs(
        stride=(tup(strides), tup(kernel)),
        padding=(tup(padding), "0"),
        ceil_mode=(str(bool(node.attr("ceil_mode", 0))), "False"),
        count_include_pad=(str(include), "True"),
    )
    ctx.emit(f"F.avg_pool{n}d({x}, {tup(kernel)}{extra})")


@lowers("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: Ctx, node: Node) -> None:
    """Global pooling → a mean/amax over the spatial dims (keepdim)."""
    rank = ctx.rank(node.inputs[0])
    dims = tup(list(range(2, rank))) if rank > 3 else "2"
    fn = "mean" if node.op_type == "GlobalAveragePool" else "amax"
    ctx.emit(f"{ctx.var(node.inputs[0])}.{fn}(dim={dims}, keepdim=True)")


@lowers("Dropout")
def dropout(ctx: Ctx, node: Node) -> None:
    """Dropout → F.dropout active in training mode only (identity in eval, as in ONNX inference)."""
    if len(node.outputs) > 1 and node.outputs[1].name and ctx.users(node.outputs[1]):
        raise NotLowerable("the mask output is not supported")
    ratio_val = node.inputs[1] if len(node.inputs) > 1 else None
    ratio = ctx.const(ratio_val)
    p = np.float32(np.asarray(ratio).reshape(-1)[0] if ratio is not None else node.attr("ratio", 0.5))
    ctx.emit(f"F.dropout({ctx.var(node.inputs[0])}, p={literal(p)}, training=self.training)", node.outputs[:1])


@lowers("Gather")
def gather(ctx: Ctx, node: Node) -> None:
    """Gather rows of a constant 2-d table by runtime ids → nn.Embedding; else indexing code."""
    data, idx = node.inputs
    axis = int(node.attr("axis", 0))
    table = ctx.const(data)
    if table is not None and table.ndim == 2 and axis == 0 and ctx.const(idx) is None and table.dtype == np.float32:
        ctor = f"nn.Embedding({table.shape[0]}, {table.shape[1]})"
        ctx.emit(f"{ctx.layer(ctor, {'weight': table})}({ctx.var(idx)})")
        return
    const_idx = ctx.const(idx)
    if const_idx is not None and np.asarray(const_idx).ndim == 0:
        ctx.emit(f"{ctx.var(data)}.select({axis}, {int(const_idx)})")
        return
    ctx.emit(f"{ctx.helper('onnx_gather')}({ctx.var(data)}, {ctx.var(idx)}, {axis})")


@lowers("Attention")
def attention(ctx: Ctx, node: Node) -> None:
    """ONNX Attention (opset 23) → F.scaled_dot_product_attention (4-d or 3-d with head counts)."""
    q_val, k_val, v_val = node.inputs[:3]
    mask_val = node.inputs[3] if len(node.inputs) > 3 else None
    if any(v is not None for v in node.inputs[4:]) or any(o.name and (ctx.users(o) or o in ctx.graph.outputs) for o in node.outputs[1:]):
        raise NotLowerable("past key/value and extra outputs are not supported")
    if float(node.attr("softcap", 0.0)) or int(node.attr("qk_matmul_output_mode", 0)):
        raise NotLowerable("softcap and qk_matmul_output_mode are not supported")
    causal = bool(node.attr("is_causal", 0))
    if causal and mask_val is not None:
        raise NotLowerable("is_causal together with attn_mask is not supported")
    q, k, v = ctx.var(q_val), ctx.var(k_val), ctx.var(v_val)
    extra = ""
    if mask_val is not None:
        extra += f", attn_mask={ctx.var(mask_val)}"
    if causal:
        extra += ", is_causal=True"
    scale = node.attr("scale")
    if scale is not None:
        extra += f", scale={literal(np.float32(scale))}"
    rank = ctx.rank(q_val)
    if rank == 4:
        kv_shape, q_shape = ctx.shape(k_val), ctx.shape(q_val)
        if kv_shape[1] != q_shape[1]:
            if not (isinstance(kv_shape[1], int) and isinstance(q_shape[1], int)):
                raise NotLowerable("grouped heads need static head counts")
            extra += ", enable_gqa=True"
        ctx.emit(f"F.scaled_dot_product_attention({q}, {k}, {v}{extra})", node.outputs[:1])
        return
    qh, kvh = node.attr("q_num_heads"), node.attr("kv_num_heads")
    if rank != 3 or not qh or not kvh:
        raise NotLowerable("3-d inputs need q_num_heads and kv_num_heads")
    if int(kvh) != int(qh):
        extra += ", enable_gqa=True"

    def heads(x: str, n: int) -> str:
        return f"{x}.reshape({x}.shape[0], {x}.shape[1], {n}, -1).transpose(1, 2)"

    y = f"F.scaled_dot_product_attention({heads(q, int(qh))}, {heads(k, int(kvh))}, {heads(v, int(kvh))}{extra})"
    ctx.emit(f"{y}.transpose(1, 2).reshape({q}.shape[0], {q}.shape[1], -1)", node.outputs[:1])
