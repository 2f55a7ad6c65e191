"""Every TFLite fixture imported and run, compared with the LiteRT interpreter and onnxruntime.

float32 models (and float16-weight models, whose arithmetic is float32) agree within
1e-5. Int8 models are compared on their integer outputs: TFLite requantizes with
fixed-point multipliers and lookup tables, the imported graph with float32 arithmetic
between QuantizeLinear/DequantizeLinear, so a value on a rounding boundary may land one
quantization step away; everything else matches exactly (checked: most values equal).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.frontends.tflite.helpers import (
    ALL_MODELS,
    FLOAT_MODELS,
    fixture,
    litert_run,
    output_steps,
    random_feeds,
)

pytest.importorskip("ai_edge_litert")

from torsh_gen.frontends.onnx import to_onnx  # noqa: E402
from torsh_gen.frontends.tflite import load_tflite  # noqa: E402
from torsh_gen.ir.verify import verify  # noqa: E402
from torsh_gen.ops.execute import run_graph  # noqa: E402
from torsh_gen.tools.compare import run_onnxruntime  # noqa: E402


def _ours(graph, feeds):
    return [
        np.asarray(o) for o in run_graph(graph, {v.name: x for v, x in zip(graph.inputs, feeds)})
    ]


def _ort(graph, feeds):
    out = run_onnxruntime(graph, {v.name: x for v, x in zip(graph.inputs, feeds)})
    return [np.asarray(out[v.name]) for v in graph.outputs]


def _assert_close(name, got, want):
    assert len(got) == len(want)
    steps = None if name in FLOAT_MODELS else output_steps(fixture(name))
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype
        if steps is None:
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
        else:
            _assert_within_one_step(name, steps[k], g, w)


def _assert_within_one_step(name, writer_step, got, want):
    """Quantized outputs: at most one quantization step apart, and mostly identical."""
    writer, step = writer_step
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    if step == 0.0:
        np.testing.assert_allclose(diff, 0.0, atol=1e-6, err_msg=f"{name}: {writer} output")
        return
    steps = diff / step
    assert (
        steps.max() <= 1 + 1e-4
    ), f"{name}: {writer} output {steps.max()} quantization steps apart"
    assert (
        steps < 0.5
    ).mean() >= 0.8, f"{name}: only {(steps < 0.5).mean():.0%} of {writer} outputs identical"


@pytest.fixture(scope="module", params=ALL_MODELS)
def imported(request):
    name = request.param
    graph = load_tflite(fixture(name))
    verify(graph)
    return name, graph


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_executor_matches_litert(imported, seed):
    name, graph = imported
    feeds = random_feeds(fixture(name), seed)
    _assert_close(name, _ours(graph, feeds), litert_run(fixture(name), feeds))


def test_onnx_export_matches_litert_in_onnxruntime(imported):
    name, graph = imported
    feeds = random_feeds(fixture(name), seed=7)
    _assert_close(name, _ort(graph, feeds), litert_run(fixture(name), feeds))


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_mlp(batch):
    path = fixture("mlp")
    graph = load_tflite(path)
    assert graph.inputs[0].type.shape == ("batch", 16)
    assert graph.outputs[0].type.shape == ("batch", 5)
    feeds = random_feeds(path, seed=batch, batch=batch)
    want = litert_run(path, feeds)
    np.testing.assert_allclose(_ours(graph, feeds)[0], want[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(_ort(graph, feeds)[0], want[0], rtol=0, atol=1e-5)


def test_boundary_keeps_the_models_layout_and_names():
    graph = load_tflite(fixture("mobilenet_float"))
    assert [str(v.type) for v in graph.inputs] == ["float[1,24,24,3]"]
    assert [str(v.type) for v in graph.outputs] == ["float[1,10]"]
    assert graph.inputs[0].name == "serving_default_image:0"
    assert graph.info.opset("") >= 20
    assert any(n.op_type == "Conv" for n in graph.nodes)
    assert all(n.metadata.get("tflite_op") for n in graph.nodes)


def test_int8_model_keeps_integer_tensors_and_per_channel_weights():
    graph = load_tflite(fixture("mobilenet_int8"))
    assert [str(v.type) for v in graph.inputs] == ["int8[1,24,24,3]"]
    assert [str(v.type) for v in graph.outputs] == ["int8[1,10]"]
    per_channel = [
        n
        for n in graph.nodes
        if n.op_type == "DequantizeLinear"
        and n.inputs[1].const is not None
        and n.inputs[1].const.ndim == 1
    ]
    assert per_channel, "conv weights should be dequantized per output channel"
    assert all(
        n.inputs[0].const.dtype == np.int8 or n.inputs[0].const.dtype == np.int32
        for n in per_channel
    )
    # max pooling moves integers: no QDQ around it
    pool = next(n for n in graph.nodes if n.op_type == "MaxPool")
    assert pool.inputs[0].type.dtype.name == "INT8"


def test_conversion_report():
    meta = load_tflite(fixture("mobilenet_float")).meta["conversion"]
    assert meta["source"] == "tflite"
    assert meta["mapped"]["CONV_2D"] == 3 and meta["mapped"]["DEPTHWISE_CONV_2D"] == 2
    assert meta["mapped"]["FULLY_CONNECTED"] == 3
    assert meta["compositions"]["CONV_2D"] == ["Conv", "Clip"]  # fused RELU6
    assert meta["precision"] == []
    block = load_tflite(fixture("transformer_block")).meta["conversion"]
    assert block["compositions"]["RSQRT"] == ["Sqrt", "Reciprocal"]
    assert block["compositions"]["SQUARED_DIFFERENCE"] == ["Sub", "Mul"]
    assert block["mapped"]["BATCH_MATMUL"] == 2 and block["mapped"]["GELU"] == 1
    int8 = load_tflite(fixture("mobilenet_int8")).meta["conversion"]
    assert any("quantization step" in p for p in int8["precision"])
    fp16 = load_tflite(fixture("mobilenet_fp16")).meta["conversion"]
    assert any("float16" in p for p in fp16["precision"])
    assert fp16["mapped"]["DEQUANTIZE"] == 17


@pytest.mark.parametrize("name", ["mobilenet_int8", "mobilenet_int8_float_io"])
def test_int8_networks_within_one_step_on_many_inputs(name):
    """A whole int8 network stays within one output step of LiteRT on every input tried."""
    graph = load_tflite(fixture(name))
    for seed in range(10, 16):
        feeds = random_feeds(fixture(name), seed)
        _assert_close(name, _ours(graph, feeds), litert_run(fixture(name), feeds))


def test_each_int8_op_matches_litert():
    """Every quantized op, fed the model's int8 inputs directly, equals LiteRT's integers.

    The one exception is RESIZE_BILINEAR, whose TFLite kernel interpolates with 10-bit
    fixed-point weights: there a value may land one step away.
    """
    path = fixture("int8_ops")
    graph = load_tflite(path)
    writers = [w for w, _ in output_steps(path)]
    assert len(set(writers) - {"RESHAPE"}) >= 17
    for seed in range(4):
        feeds = random_feeds(path, seed)
        for writer, g, w in zip(writers, _ours(graph, feeds), litert_run(path, feeds)):
            diff = (
                np.abs(g.astype(np.int64) - w.astype(np.int64))
                if g.dtype == np.int8
                else np.abs(g - w)
            )
            limit = 1 if writer == "RESIZE_BILINEAR" else 0
            assert diff.max() <= limit, f"{writer}: {diff.max()} steps from LiteRT"


def test_graph_exports_to_valid_onnx():
    import onnx

    for name in ALL_MODELS:
        onnx.checker.check_model(to_onnx(load_tflite(fixture(name))), full_check=True)


@pytest.mark.parametrize("batch", [1, 4])
def test_dynamic_range_weights(batch):
    """Hybrid models: int8 weights dequantized, float activations; LiteRT also rounds the
    activations to int8 on the fly, so the two agree to about 1% of the output range."""
    graph = load_tflite(fixture("mlp_dynamic_range"))
    meta = graph.meta["conversion"]
    assert any("dynamic-range" in p for p in meta["precision"])
    weights = [v for v in graph.initializers if v.const.dtype == np.int8]
    assert len(weights) == 2  # the converter leaves layers under 1024 weights in float
    for seed in range(3):
        feeds = random_feeds(fixture("mlp"), seed, batch=batch)
        (want,) = litert_run(fixture("mlp_dynamic_range"), feeds)
        (got,) = _ours(graph, feeds)
        assert got.shape == want.shape == (batch, 5)
        assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
