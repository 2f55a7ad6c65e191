"""Every op lowering of ``scaffold train`` against onnxruntime, one small model per case.

Each case is one node: runtime inputs (first dim symbolic, fed with two batch sizes) and
constant inputs (initializers, so layer patterns apply). The generated ``model.py`` is
executed from memory with its weights, in eval mode, and must match within 1e-5.
"""

from __future__ import annotations

import types

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.scaffold.train.project import render_module

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
safetensors_torch = pytest.importorskip("safetensors.torch")

R = np.random.default_rng(0)


def f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (R.standard_normal(shape) * scale).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


# (id, op, attrs, runtime inputs, constant inputs by position, opset, n outputs)
CASES: list[tuple] = [
    ("conv1d", "Conv", {"pads": [1, 2], "strides": [2]}, [f32(2, 3, 9)], {1: f32(4, 3, 3), 2: f32(4)}, 17, 1),
    ("conv3d", "Conv", {"pads": [1, 1, 1, 1, 1, 1]}, [f32(1, 2, 4, 4, 4)], {1: f32(3, 2, 3, 3, 3)}, 17, 1),
    ("conv_same_strided", "Conv", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, [f32(2, 2, 7, 7)], {1: f32(4, 2, 4, 4)}, 17, 1),
    ("conv_same_lower", "Conv", {"auto_pad": "SAME_LOWER"}, [f32(2, 2, 6, 6)], {1: f32(4, 2, 2, 2)}, 17, 1),
    ("conv_depthwise", "Conv", {"group": 4, "pads": [1, 1, 1, 1]}, [f32(2, 4, 6, 6)], {1: f32(4, 1, 3, 3)}, 17, 1),
    ("conv_runtime_weight", "Conv", {}, [f32(2, 2, 5, 5), f32(2, 2, 3, 3)], {}, 17, 1),
    ("conv_transpose", "ConvTranspose", {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, [f32(2, 3, 4, 4)], {1: f32(3, 2, 3, 3), 2: f32(2)}, 17, 1),
    ("gemm_general", "Gemm", {"alpha": 0.5, "beta": 2.0, "transB": 1}, [f32(2, 3)], {1: f32(4, 3), 2: f32(4)}, 17, 1),
    ("gemm_linear_no_bias", "Gemm", {"transB": 1}, [f32(2, 6)], {1: f32(5, 6)}, 17, 1),
    ("matmul_runtime", "MatMul", {}, [f32(2, 3, 4), f32(2, 4, 5)], {}, 17, 1),
    ("batchnorm1d", "BatchNormalization", {"epsilon": 1e-3}, [f32(2, 3, 5)], {1: f32(3), 2: f32(3), 3: f32(3), 4: np.abs(f32(3)) + 0.5}, 15, 1),
    ("instancenorm", "InstanceNormalization", {}, [f32(2, 3, 4, 4)], {1: f32(3), 2: f32(3)}, 17, 1),
    ("layernorm_2d", "LayerNormalization", {"axis": -2}, [f32(2, 3, 4)], {1: f32(3, 4), 2: f32(3, 4)}, 17, 1),
    ("layernorm_runtime_scale", "LayerNormalization", {}, [f32(2, 5), f32(5)], {}, 17, 1),
    ("maxpool_ceil_dilated", "MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "dilations": [2, 1], "ceil_mode": 1}, [f32(1, 2, 9, 8)], {}, 17, 1),
    ("maxpool1d_pad", "MaxPool", {"kernel_shape": [3], "pads": [1, 1]}, [f32(2, 2, 7)], {}, 17, 1),
    ("avgpool_include_pad", "AveragePool", {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, [f32(1, 2, 5, 5)], {}, 17, 1),
    ("avgpool_asym_include", "AveragePool", {"kernel_shape": [3, 3], "pads": [0, 0, 1, 1], "count_include_pad": 1}, [f32(1, 2, 5, 5)], {}, 17, 1),
    ("global_avg_1d", "GlobalAveragePool", {}, [f32(2, 3, 7)], {}, 17, 1),
    ("dropout_eval", "Dropout", {}, [f32(2, 5)], {1: np.array(0.3, np.float32)}, 17, 1),
    ("gather_const_rows", "Gather", {"axis": 1}, [f32(2, 5, 3)], {1: i64(4, -1, 0)}, 17, 1),
    ("gather_scalar", "Gather", {"axis": 2}, [f32(2, 3, 4)], {1: np.array(-2, np.int64)}, 17, 1),
    ("leaky", "LeakyRelu", {"alpha": 0.2}, [f32(2, 6)], {}, 17, 1),
    ("elu", "Elu", {"alpha": 0.7}, [f32(2, 6)], {}, 17, 1),
    ("celu", "Celu", {"alpha": 1.3}, [f32(2, 6)], {}, 17, 1),
    ("selu_default", "Selu", {}, [f32(2, 6)], {}, 17, 1),
    ("selu_custom", "Selu", {"alpha": 1.5, "gamma": 1.1}, [f32(2, 6)], {}, 17, 1),
    ("gelu_none", "Gelu", {}, [f32(2, 6)], {}, 20, 1),
    ("hardsigmoid", "HardSigmoid", {"alpha": 0.3, "beta": 0.4}, [f32(2, 6, scale=3)], {}, 17, 1),
    ("hardswish", "HardSwish", {}, [f32(2, 6, scale=3)], {}, 17, 1),
    ("thresholded", "ThresholdedRelu", {"alpha": 0.5}, [f32(2, 6)], {}, 17, 1),
    ("prelu", "PRelu", {}, [f32(2, 3, 4)], {1: f32(3, 1)}, 17, 1),
    ("softplus", "Softplus", {}, [f32(2, 6)], {}, 17, 1),
    ("softsign", "Softsign", {}, [f32(2, 6)], {}, 17, 1),
    ("mish", "Mish", {}, [f32(2, 6)], {}, 18, 1),
    ("clip", "Clip", {}, [f32(2, 6)], {1: np.array(-0.5, np.float32), 2: np.array(0.7, np.float32)}, 17, 1),
    ("clip_attr_v6", "Clip", {"min": -0.2, "max": 0.3}, [f32(2, 6)], {}, 6, 1),
    ("softmax_axis1", "Softmax", {"axis": 1}, [f32(2, 3, 4)], {}, 17, 1),
    ("logsoftmax_v11", "LogSoftmax", {"axis": 1}, [f32(2, 5)], {}, 11, 1),
    ("sum3", "Sum", {}, [f32(2, 3), f32(2, 3), f32(2, 3)], {}, 17, 1),
    ("mean2", "Mean", {}, [f32(2, 3), f32(2, 3)], {}, 17, 1),
    ("max3", "Max", {}, [f32(2, 3), f32(2, 3), f32(2, 3)], {}, 17, 1),
    ("min_bcast", "Min", {}, [f32(2, 3)], {1: f32(3)}, 17, 1),
    ("sub_const", "Sub", {}, [f32(2, 4)], {1: f32(1, 4)}, 17, 1),
    ("pow", "Pow", {}, [np.abs(f32(2, 3)) + 0.1], {1: np.array(1.5, np.float32)}, 17, 1),
    ("exp", "Exp", {}, [f32(2, 3)], {}, 17, 1),
    ("reciprocal", "Reciprocal", {}, [np.abs(f32(2, 3)) + 0.5], {}, 17, 1),
    ("sign", "Sign", {}, [f32(2, 3)], {}, 17, 1),
    ("flatten_axis2", "Flatten", {"axis": 2}, [f32(2, 3, 4, 5)], {}, 17, 1),
    ("flatten_axis0", "Flatten", {"axis": 0}, [f32(2, 3)], {}, 17, 1),
    ("transpose_default", "Transpose", {}, [f32(2, 3, 4)], {}, 17, 1),
    ("split_sizes", "Split", {"axis": 1}, [f32(2, 7)], {1: i64(3, 4)}, 17, 2),
    ("split_v11_attr", "Split", {"axis": -1, "split": [1, 2]}, [f32(2, 3)], {}, 11, 2),
    ("slice_steps", "Slice", {}, [f32(2, 10, 6)], {1: i64(1, -5), 2: i64(9, 100), 3: i64(1, 2), 4: i64(2, 1)}, 17, 1),
    ("slice_v9", "Slice", {"starts": [1], "ends": [3], "axes": [1]}, [f32(2, 5)], {}, 9, 1),
    ("squeeze_v11", "Squeeze", {"axes": [1]}, [f32(2, 1, 3)], {}, 11, 1),
    ("unsqueeze_neg", "Unsqueeze", {}, [f32(2, 3)], {1: i64(-1, 1)}, 17, 1),
    ("expand", "Expand", {}, [f32(2, 1, 3)], {1: i64(4, 3)}, 17, 1),
    ("tile", "Tile", {}, [f32(2, 3)], {1: i64(2, 2)}, 17, 1),
    ("pad_reflect", "Pad", {"mode": "reflect"}, [f32(2, 3, 5)], {1: i64(0, 0, 2, 0, 0, 1)}, 17, 1),
    ("pad_edge", "Pad", {"mode": "edge"}, [f32(2, 3, 4, 4)], {1: i64(0, 0, 1, 2, 0, 0, 2, 1)}, 17, 1),
    ("pad_constant", "Pad", {}, [f32(2, 3)], {1: i64(0, 1, 0, 2), 2: np.array(1.5, np.float32)}, 17, 1),
    ("pad_axes", "Pad", {}, [f32(2, 3, 4)], {1: i64(1, 2), 2: np.array(0.0, np.float32), 3: i64(-1)}, 18, 1),
    ("reducesum_input_axes", "ReduceSum", {"keepdims": 0}, [f32(2, 3, 4)], {1: i64(1, 2)}, 17, 1),
    ("reducemax_all", "ReduceMax", {}, [f32(2, 3)], {}, 17, 1),
    ("reducel2", "ReduceL2", {"axes": [1]}, [f32(2, 3)], {}, 17, 1),
    ("reducelogsumexp", "ReduceLogSumExp", {"axes": [-1]}, [f32(2, 3)], {}, 17, 1),
    ("reducesumsquare", "ReduceSumSquare", {"axes": [0]}, [f32(2, 3)], {}, 17, 1),
    ("argmax", "ArgMax", {"axis": 1, "keepdims": 0}, [f32(2, 5)], {}, 17, 1),
    ("argmin", "ArgMin", {"axis": -1}, [f32(2, 5)], {}, 17, 1),
    ("einsum", "Einsum", {"equation": "bij,jk->bik"}, [f32(2, 3, 4)], {1: f32(4, 5)}, 17, 1),
    ("cast_int", "Cast", {"to": onnx.TensorProto.INT64}, [f32(2, 3, scale=5)], {}, 17, 1),
    ("mod_int", "Mod", {}, [np.array([[7, -7, 5], [-5, 3, 9]], np.int64)], {1: i64(3, -4, 2)}, 17, 1),
    ("fmod", "Mod", {"fmod": 1}, [f32(2, 3, scale=5)], {1: np.array(1.5, np.float32)}, 17, 1),
    ("div_int", "Div", {}, [np.array([[7, -7, 5], [-5, 3, 9]], np.int64)], {1: i64(2, 2, -2)}, 17, 1),
    ("where_less", "Where", {}, [np.array([[True, False, True], [False, False, True]]), f32(2, 3), f32(2, 3)], {}, 17, 1),
    ("greater_not", "Greater", {}, [f32(2, 3), f32(2, 3)], {}, 17, 1),
]


def _model(op: str, attrs: dict, runtime: list[np.ndarray], consts: dict[int, np.ndarray], opset: int, n_out: int) -> onnx.ModelProto:
    n_inputs = len(runtime) + len(consts)
    names, inputs, inits = [], [], []
    feed_iter = iter(range(len(runtime)))
    for pos in range(n_inputs):
        if pos in consts:
            names.append(f"c{pos}")
            inits.append(numpy_helper.from_array(consts[pos], f"c{pos}"))
        else:
            i = next(feed_iter)
            names.append(f"x{i}")
            x = runtime[i]
            shape = ["N", *x.shape[1:]] if x.ndim > 1 else list(x.shape)
            inputs.append(helper.make_tensor_value_info(f"x{i}", helper.np_dtype_to_tensor_dtype(x.dtype), shape))
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"/{op.lower()}/{op}", **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _module(model: onnx.ModelProto):
    source, weights = render_module(load_onnx(model), "ops_case", "case.onnx")
    namespace = types.ModuleType("ops_case_model")
    namespace.__file__ = "ops_case/model.py"
    exec(compile(source, "model.py", "exec"), namespace.__dict__)
    net = namespace.Model()
    net.load_state_dict(safetensors_torch.load(weights))
    return net.eval()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_lowering_matches_onnxruntime(case):
    _, op, attrs, runtime, consts, opset, n_out = case
    model = _model(op, attrs, runtime, consts, opset, n_out)
    net = _module(model)
    session = ort.InferenceSession(model.SerializeToString())
    variants = [runtime]
    if all(x.ndim > 1 and x.shape[0] == runtime[0].shape[0] for x in runtime):
        variants.append([np.concatenate([x, x[:1]]) for x in runtime])  # another batch size
    for xs in variants:
        expected = session.run(None, {f"x{i}": x for i, x in enumerate(xs)})
        with torch.no_grad():
            got = net(*(torch.from_numpy(x) for x in xs))
        got = got if isinstance(got, tuple) else (got,)
        for g, e in zip(got, expected):
            assert g.dtype == torch.from_numpy(np.asarray(e)).dtype
            np.testing.assert_allclose(g.numpy(), e, rtol=1e-5, atol=1e-5)
