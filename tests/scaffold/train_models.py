"""ONNX models and helpers shared by the ``scaffold train`` tests.

Each builder returns a checked ModelProto with seeded weights; ``generate`` writes the
training project for it and ``import_model`` imports the generated ``model.py``.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import make_model, tensor_info
from torsh_gen.scaffold.train import scaffold_train
from torsh_gen.tools.loading import load_model


def _w(rng: np.random.Generator, shape, name: str, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def mlp() -> onnx.ModelProto:
    """MatMul+Add (→ nn.Linear), a bare MatMul (→ Linear without bias), Tanh, Gelu."""
    r = np.random.default_rng(1)
    inits = [_w(r, (64, 32), "fc1.w"), _w(r, (32,), "fc1.b"), _w(r, (32, 10), "fc2.w")]
    nodes = [
        helper.make_node("MatMul", ["x", "fc1.w"], ["h0"], name="/fc1/MatMul"),
        helper.make_node("Add", ["h0", "fc1.b"], ["h1"], name="/fc1/Add"),
        helper.make_node("Tanh", ["h1"], ["h2"], name="/act/Tanh"),
        helper.make_node("Gelu", ["h2"], ["h3"], name="/act2/Gelu", approximate="tanh", domain=""),
        helper.make_node("MatMul", ["h3", "fc2.w"], ["logits"], name="/fc2/MatMul"),
    ]
    return make_model(nodes, [tensor_info("x", ["batch", 64])], [tensor_info("logits", ["batch", 10])], inits, opset=20)


def bn_cnn() -> onnx.ModelProto:
    """Conv (strided, asymmetric pads, grouped), BatchNorm, pools, Gemm without transB, LogSoftmax."""
    r = np.random.default_rng(2)
    inits = [
        _w(r, (8, 3, 3, 3), "c1.w"),
        _w(r, (8,), "c1.b"),
        numpy_helper.from_array(r.uniform(0.5, 1.5, 8).astype(np.float32), "bn.scale"),
        _w(r, (8,), "bn.bias"),
        _w(r, (8,), "bn.mean", 0.1),
        numpy_helper.from_array(r.uniform(0.5, 1.5, 8).astype(np.float32), "bn.var"),
        _w(r, (16, 4, 3, 3), "c2.w"),
        _w(r, (16, 5), "fc.w"),
        _w(r, (5,), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["img", "c1.w", "c1.b"], ["a"], name="/features/0/Conv", strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b"], name="/features/1/BatchNormalization", epsilon=1e-3),
        helper.make_node("LeakyRelu", ["b"], ["c"], name="/features/2/LeakyRelu", alpha=0.1),
        helper.make_node("Conv", ["c", "c2.w"], ["d"], name="/features/3/Conv", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["d"], ["e"], name="/pool/AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["e"], ["f"], name="/pool2/MaxPool", kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]),
        helper.make_node("GlobalMaxPool", ["f"], ["g"], name="/gpool/GlobalMaxPool"),
        helper.make_node("Flatten", ["g"], ["h"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["h", "fc.w", "fc.b"], ["logits"], name="/classifier/Gemm"),
        helper.make_node("LogSoftmax", ["logits"], ["logp"], name="/head/LogSoftmax", axis=-1),
    ]
    return make_model(nodes, [tensor_info("img", ["n", 3, 16, 16])], [tensor_info("logp", ["n", 5])], inits, opset=17)


def sequence_model() -> onnx.ModelProto:
    """Embedding (Gather), LayerNorm, 3-d Linear, attention-style Softmax, shape ops, reductions."""
    r = np.random.default_rng(3)
    d = 8
    inits = [
        _w(r, (20, d), "embed.weight", 1.0),
        numpy_helper.from_array(r.uniform(0.5, 1.5, d).astype(np.float32), "ln.scale"),
        _w(r, (d,), "ln.bias"),
        _w(r, (d, 3 * d), "qkv.w"),
        _w(r, (3 * d,), "qkv.b"),
        numpy_helper.from_array(np.array([0, 0, 2, 4], np.int64), "heads_shape"),
        numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
        numpy_helper.from_array(np.array([1], np.int64), "axes1"),
        _w(r, (d, 4), "out.w"),
    ]
    nodes = [
        helper.make_node("Gather", ["embed.weight", "ids"], ["emb"], name="/embed/Gather"),
        helper.make_node("LayerNormalization", ["emb", "ln.scale", "ln.bias"], ["ln"], name="/ln/LayerNormalization", epsilon=1e-6),
        helper.make_node("MatMul", ["ln", "qkv.w"], ["qkv0"], name="/attn/qkv/MatMul"),
        helper.make_node("Add", ["qkv0", "qkv.b"], ["qkv"], name="/attn/qkv/Add"),
        helper.make_node("Split", ["qkv"], ["q", "k", "v"], name="/attn/Split", axis=-1, num_outputs=3),
        helper.make_node("Reshape", ["q", "heads_shape"], ["qh"], name="/attn/Reshape_q"),
        helper.make_node("Reshape", ["k", "heads_shape"], ["kh"], name="/attn/Reshape_k"),
        helper.make_node("Transpose", ["qh"], ["qt"], name="/attn/Transpose_q", perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["kh"], ["kt"], name="/attn/Transpose_k", perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["qt", "kt"], ["s0"], name="/attn/MatMul"),
        helper.make_node("Mul", ["s0", "scale"], ["s1"], name="/attn/Mul"),
        helper.make_node("Softmax", ["s1"], ["p"], name="/attn/Softmax", axis=-1),
        helper.make_node("ReduceMean", ["p", "axes1"], ["pm"], name="/attn/ReduceMean", keepdims=0),
        helper.make_node("Slice", ["v", "zero", "four", "two"], ["vs"], name="/attn/Slice"),
        helper.make_node("Concat", ["vs", "vs"], ["vc"], name="/attn/Concat", axis=-1),
        helper.make_node("Erf", ["vc"], ["ve"], name="/attn/Erf"),
        helper.make_node("Sqrt", ["pm"], ["pms"], name="/attn/Sqrt"),
        helper.make_node("Unsqueeze", ["pms", "axes1"], ["pu"], name="/attn/Unsqueeze"),
        helper.make_node("Squeeze", ["pu", "axes1"], ["psq"], name="/attn/Squeeze"),
        helper.make_node("Concat", ["psq", "psq"], ["pc"], name="/attn/Concat_1", axis=2),
        helper.make_node("Sub", ["ve", "pc"], ["z0"], name="/mix/Sub"),
        helper.make_node("Where", ["mask", "z0", "ve"], ["z1"], name="/mix/Where"),
        helper.make_node("Pow", ["z1", "two_f"], ["z2"], name="/mix/Pow"),
        helper.make_node("Div", ["z2", "three_f"], ["z3"], name="/mix/Div"),
        helper.make_node("MatMul", ["z3", "out.w"], ["y"], name="/out/MatMul"),
    ]
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([4], np.int64), "four"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two_f"),
        numpy_helper.from_array(np.array(3.0, np.float32), "three_f"),
    ]
    inputs = [tensor_info("ids", ["batch", 4], TensorProto.INT64), tensor_info("mask", ["batch", 4, 8], TensorProto.BOOL)]
    return make_model(nodes, inputs, [tensor_info("y", ["batch", 4, 4])], inits, opset=18)


def exported_style() -> onnx.ModelProto:
    """What exporters write: Shape→Gather→Unsqueeze→Concat→Reshape on a symbolic batch,
    and the ONNX Attention op (opset 23) on 3-d inputs with heads, then causal 4-d."""
    r = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "i0"),
        numpy_helper.from_array(np.array(1, np.int64), "i1"),
        numpy_helper.from_array(np.array([0], np.int64), "ax0"),
        numpy_helper.from_array(np.array([2, -1], np.int64), "heads"),
        _w(r, (8, 24), "qkv.w"),
        _w(r, (8, 3), "head.w"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "qkv.w"], ["qkv"], name="/attn/qkv/MatMul"),
        helper.make_node("Split", ["qkv"], ["q", "k", "v"], name="/attn/Split", axis=2, num_outputs=3),
        helper.make_node("Attention", ["q", "k", "v"], ["a"], name="/attn/Attention", q_num_heads=2, kv_num_heads=2),
        helper.make_node("Shape", ["a"], ["s"], name="/Shape"),
        helper.make_node("Gather", ["s", "i0"], ["b"], name="/Gather"),
        helper.make_node("Gather", ["s", "i1"], ["t"], name="/Gather_1"),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["bu"], name="/Unsqueeze"),
        helper.make_node("Unsqueeze", ["t", "ax0"], ["tu"], name="/Unsqueeze_1"),
        helper.make_node("Concat", ["bu", "heads", "tu"], ["shp"], name="/Concat", axis=0),
        helper.make_node("Transpose", ["a"], ["at"], name="/Transpose", perm=[0, 2, 1]),
        helper.make_node("Reshape", ["at", "shp"], ["a4"], name="/Reshape"),
        helper.make_node("Attention", ["a4", "a4", "a4"], ["c"], name="/self/Attention", is_causal=1, scale=0.25),
        helper.make_node("Mul", ["b", "t"], ["bt"], name="/Mul"),
        helper.make_node("Unsqueeze", ["bt", "ax0"], ["btu"], name="/Unsqueeze_2"),
        helper.make_node("Concat", ["btu", "m1"], ["flat"], name="/Concat_1", axis=0),
        helper.make_node("Transpose", ["c"], ["ct"], name="/Transpose_1", perm=[0, 3, 1, 2]),
        helper.make_node("Reshape", ["ct", "flat"], ["rows"], name="/Reshape_1"),
        helper.make_node("MatMul", ["rows", "head.w"], ["y"], name="/head/MatMul"),
    ]
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "m1"))
    return make_model(nodes, [tensor_info("x", ["batch", "seq", 8])], [tensor_info("y", [None, 3])], inits, opset=23)


HOSTILE = "x'); __import__(\"os\").system(\"echo pwned\") #\n\"\"\""


def hostile() -> onnx.ModelProto:
    """Names that are code, keywords, nn.Module attributes, duplicates and non-ASCII."""
    r = np.random.default_rng(4)
    inits = [_w(r, (6, 6), "forward"), _w(r, (6,), "self"), _w(r, (6, 3), HOSTILE), _w(r, (3,), "torch")]
    nodes = [
        helper.make_node("MatMul", ["class", "forward"], ["def"], name=HOSTILE),
        helper.make_node("Add", ["def", "self"], ["lambda"], name="state_dict"),
        helper.make_node("Relu", ["lambda"], ["x x"], name="training"),
        helper.make_node("MatMul", ["x x", HOSTILE], ["import"], name="forward"),
        helper.make_node("Add", ["import", "torch"], ["F"], name="torch/Add"),
        helper.make_node("Sigmoid", ["F"], ["é\u2028"], name="\u00e9\u2028/Sigmoid"),
    ]
    return make_model(
        nodes,
        [tensor_info("class", ["batch", 6])],
        [tensor_info("é\u2028", ["batch", 3])],
        inits,
        opset=17,
        doc_string=HOSTILE,
    )


def unsupported() -> onnx.ModelProto:
    """Ops without a torch lowering: TopK (twice), CumSum and a Slice with a negative step."""
    nodes = [
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk1", axis=-1),
        helper.make_node("TopK", ["v", "k"], ["v2", "i2"], name="topk2", axis=-1),
        helper.make_node("CumSum", ["v2", "axis"], ["c"], name="cumsum"),
        helper.make_node("Slice", ["c", "starts", "ends", "axes", "steps"], ["y"], name="rev"),
    ]
    inits = [
        numpy_helper.from_array(np.array([3], np.int64), "k"),
        numpy_helper.from_array(np.array(1, np.int64), "axis"),
        numpy_helper.from_array(np.array([-1], np.int64), "starts"),
        numpy_helper.from_array(np.array([-100], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "steps"),
    ]
    return make_model(nodes, [tensor_info("x", ["batch", 5])], [tensor_info("y", ["batch", 3])], inits, opset=18)


def generate(model: onnx.ModelProto | Path, out: Path, name: str | None = None, **kw):
    """Save ``model`` if needed and generate its training project into ``out``."""
    if isinstance(model, Path):
        path = model
    else:
        path = out.parent / f"{out.name}.onnx"
        onnx.save_model(model, path)
    return scaffold_train(load_model(path), out, name=name, source=path.name, **kw)


def import_model(project: Path, package: str):
    """Import ``project/package/model.py`` under a unique module name."""
    name = f"gen_{package}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, project / package / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
