"""Small quantized ONNX models for the integer-kernel tests, built with onnx.helper.

Each builder takes the shapes and quantization choices as arguments and draws weights,
scales and zero points from a seeded generator, so a test names exactly the case it
covers (odd K, per-channel, asymmetric, int8 or uint8 activations...).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_TP = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def _init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


def _model(
    nodes: list, inputs: list, outputs: list, inits: list, opset: int = 21
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "q", inputs, outputs, inits)
    imports = [helper.make_opsetid("", opset)]
    if any(n.domain == "com.microsoft" for n in nodes):
        imports.append(helper.make_opsetid("com.microsoft", 1))
    m = helper.make_model(graph, opset_imports=imports)
    m.ir_version = 10
    return m


def qweights(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    axis: int,
    wdt: type,
    per_channel: bool,
    symmetric: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random int8/uint8 weights with scales/zero points per tensor or along ``axis``."""
    info = np.iinfo(wdt)
    w = rng.integers(info.min, info.max + 1, shape).astype(wdt)
    n = shape[axis] if per_channel else 1
    scale = rng.uniform(0.002, 0.02, n).astype(np.float32)
    if symmetric:
        zp = np.full(n, 0 if wdt == np.int8 else 128, wdt)
    else:
        zp = rng.integers(
            info.min // 2 + (info.max + 1) // 4, info.max // 2 + (info.max + 1) // 4, n
        ).astype(wdt)
    if not per_channel:
        scale, zp = scale.reshape(()), zp.reshape(())
    return w, scale, zp


def qdq_matmul(
    m: int,
    k: int,
    n: int,
    *,
    xdt: type = np.uint8,
    wdt: type = np.int8,
    per_channel: bool = True,
    symmetric: bool = True,
    bias: bool = True,
    relu: bool = False,
    gemm: bool = False,
    quantized_output: bool = True,
    seed: int = 0,
) -> onnx.ModelProto:
    """float x → Q → DQ → MatMul/Gemm(DQ(W)) [+ DQ(int32 bias)] [→ Relu] [→ Q], output the
    integers (Q's output) or the float product."""
    rng = np.random.default_rng(seed)
    gemm_trans = gemm
    w, ws, wz = qweights(
        rng, (n, k) if gemm_trans else (k, n), 0 if gemm_trans else 1, wdt, per_channel, symmetric
    )
    xinfo = np.iinfo(xdt)
    xs = np.float32(0.02)
    xz = np.asarray(rng.integers(xinfo.min // 2, xinfo.max // 2), xdt)
    ys = np.float32(rng.uniform(0.05, 0.2))
    yz = np.asarray(rng.integers(xinfo.min // 4, xinfo.max // 4), xdt)
    inits = [
        _init("xs", xs),
        _init("xz", xz),
        _init("w", w),
        _init("ws", ws),
        _init("wz", wz),
        _init("ys", ys),
        _init("yz", yz),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node(
            "DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0 if gemm_trans else 1
        ),
    ]
    y = "prod"
    if gemm:
        ins = ["xd", "wd"]
        if bias:
            bscale = (xs * np.asarray(ws, np.float32)).astype(np.float32).reshape(-1)
            inits += [
                _init("b", rng.integers(-3000, 3000, n).astype(np.int32)),
                _init("bs", bscale if per_channel else bscale.reshape(())),
            ]
            nodes.append(helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], axis=0))
            ins.append("bd")
        nodes.append(helper.make_node("Gemm", ins, [y], transB=1))
    else:
        nodes.append(helper.make_node("MatMul", ["xd", "wd"], [y]))
        if bias:
            inits.append(_init("bf", rng.uniform(-0.5, 0.5, n).astype(np.float32)))
            nodes.append(helper.make_node("Add", [y, "bf"], ["biased"]))
            y = "biased"
    if relu:
        nodes.append(helper.make_node("Relu", [y], ["act"]))
        y = "act"
    if quantized_output:
        nodes.append(helper.make_node("QuantizeLinear", [y, "ys", "yz"], ["yq"]))
        out = helper.make_tensor_value_info("yq", _TP[np.dtype(xdt)], [m, n])
    else:
        out = helper.make_tensor_value_info(y, TensorProto.FLOAT, [m, n])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
    return _model(nodes, [x], [out], inits)


def qlinear_matmul(
    m: int,
    k: int,
    n: int,
    *,
    xdt: type = np.uint8,
    wdt: type = np.int8,
    per_channel: bool = True,
    symmetric: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """QLinearMatMul on an integer input, integer output (QOperator)."""
    rng = np.random.default_rng(seed)
    w, ws, wz = qweights(rng, (k, n), 1, wdt, per_channel, symmetric)
    info = np.iinfo(xdt)
    inits = [
        _init("xs", np.float32(0.03)),
        _init("xz", np.asarray(rng.integers(info.min // 2, info.max // 2), xdt)),
        _init("w", w),
        _init("ws", ws),
        _init("wz", wz),
        _init("ys", np.float32(0.7)),
        _init("yz", np.asarray(rng.integers(info.min // 4, info.max // 4), xdt)),
    ]
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    x = helper.make_tensor_value_info("x", _TP[np.dtype(xdt)], [m, k])
    y = helper.make_tensor_value_info("y", _TP[np.dtype(xdt)], [m, n])
    return _model([node], [x], [y], inits)


def qlinear_conv(
    n: int,
    c: int,
    h: int,
    w_: int,
    m: int,
    kernel: int,
    *,
    stride: int = 1,
    pad: int = 0,
    xdt: type = np.uint8,
    per_channel: bool = True,
    bias: bool = True,
    seed: int = 0,
) -> onnx.ModelProto:
    """QLinearConv (int8 weights per output channel, int32 bias) on an integer input."""
    rng = np.random.default_rng(seed)
    w, ws, wz = qweights(rng, (m, c, kernel, kernel), 0, np.int8, per_channel, True)
    info = np.iinfo(xdt)
    inits = [
        _init("xs", np.float32(0.03)),
        _init("xz", np.asarray(rng.integers(info.min // 2, info.max // 2), xdt)),
        _init("w", w),
        _init("ws", ws),
        _init("wz", wz),
        _init("ys", np.float32(0.5)),
        _init("yz", np.asarray(rng.integers(info.min // 4, info.max // 4), xdt)),
    ]
    ins = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if bias:
        inits.append(_init("b", rng.integers(-2000, 2000, m).astype(np.int32)))
        ins.append("b")
    node = helper.make_node(
        "QLinearConv",
        ins,
        ["y"],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[pad] * 4,
    )
    oh = (h + 2 * pad - kernel) // stride + 1
    ow = (w_ + 2 * pad - kernel) // stride + 1
    x = helper.make_tensor_value_info("x", _TP[np.dtype(xdt)], [n, c, h, w_])
    y = helper.make_tensor_value_info("y", _TP[np.dtype(xdt)], [n, m, oh, ow])
    return _model([node], [x], [y], inits)


def matmul_integer(
    m: int, k: int, n: int, *, wdt: type = np.int8, per_column: bool = True, seed: int = 0
) -> onnx.ModelProto:
    """MatMulInteger of a uint8 input (run-time zero point) with constant weights."""
    rng = np.random.default_rng(seed)
    w, _, wz = qweights(rng, (k, n), 1, wdt, per_column, False)
    node = helper.make_node("MatMulInteger", ["x", "w", "xz", "wz"], ["y"])
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k]),
        helper.make_tensor_value_info("xz", TensorProto.UINT8, []),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
    return _model([node], inputs, [y], [_init("w", w), _init("wz", wz)])


def int_input(rng: np.random.Generator, shape: tuple[int, ...], dt: type) -> np.ndarray:
    """Random integers over the whole range of ``dt``."""
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def combine(models: list[onnx.ModelProto]) -> onnx.ModelProto:
    """One model running ``models`` side by side (names prefixed m0_, m1_, ...): one
    compile covers several cases."""
    from onnx import compose

    parts = [compose.add_prefix(m, f"m{i}_") for i, m in enumerate(models)]
    graph = helper.make_graph(
        [n for p in parts for n in p.graph.node],
        "combined",
        [v for p in parts for v in p.graph.input],
        [v for p in parts for v in p.graph.output],
        [t for p in parts for t in p.graph.initializer],
    )
    imports = {(o.domain, o.version) for p in parts for o in p.opset_import}
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(imports)]
    )
    m.ir_version = 10
    return m


def int4_matmul(
    m: int, k: int, n: int, *, block: int = 16, zero_point: bool = True, seed: int = 0
) -> onnx.ModelProto:
    """float32 x @ DequantizeLinear(int4 constant W (K, N), block_size along K)."""
    import ml_dtypes

    rng = np.random.default_rng(seed)
    blocks = -(-k // block)
    w = rng.integers(-8, 8, (k, n)).astype(ml_dtypes.int4)
    inits = [_init("w", w), _init("s", rng.uniform(0.01, 0.1, (blocks, n)).astype(np.float32))]
    ins = ["w", "s"]
    if zero_point:
        inits.append(_init("z", rng.integers(-3, 4, (blocks, n)).astype(ml_dtypes.int4)))
        ins.append("z")
    nodes = [
        helper.make_node("DequantizeLinear", ins, ["wd"], axis=0, block_size=block),
        helper.make_node("MatMul", ["x", "wd"], ["y"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        inits,
    )
