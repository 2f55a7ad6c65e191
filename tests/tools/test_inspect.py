"""inspect: parameter counts, MACs, peak memory, layers."""

from __future__ import annotations

import numpy as np

from tests.conftest import EXAMPLE, ONNX_DATA
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.tools.inspect import inspect_graph, layer_path, parse_input_shapes


def test_light_resnet50_numbers():
    report = inspect_graph(load_onnx(ONNX_DATA / "light" / "light_resnet50.onnx"))
    assert abs(report["parameters"] - 25.6e6) / 25.6e6 < 0.01
    assert abs(report["macs"] - 4.09e9) / 4.09e9 < 0.02
    assert report["flops"] >= 2 * report["macs"]
    assert report["ops"]["Conv"] == 53
    assert report["peak_activation_exact"]
    # the largest live set holds at least the 1x64x112x112 float stem output
    assert report["peak_activation_bytes"] >= 64 * 112 * 112 * 4
    for key in ("parameters", "macs", "flops", "weight_bytes", "peak_activation_bytes", "inputs", "outputs", "ops", "layers"):
        assert key in report


def test_tiny_cnn_exact_counts():
    report = inspect_graph(load_onnx(EXAMPLE), parse_input_shapes(["batch=2"]))
    params = 8 * 9 + 8 + 4 * 8 + 16 * 8 * 9 + 16 + 160 + 10
    assert report["parameters"] == params
    assert report["weight_bytes"] == params * 4
    conv1 = 2 * 8 * 28 * 28 * 9
    conv2 = 2 * 16 * 14 * 14 * 72
    fc = 2 * 16 * 10
    assert report["macs"] == conv1 + conv2 + fc
    assert report["inputs"][0]["shape"] == [2, 1, 28, 28]
    shapes = {v["name"]: v["shape"] for v in report["values"]}
    assert shapes["p1"] == [2, 8, 14, 14]
    assert shapes["probs"] == [2, 10]
    layers = {c["name"] for c in report["layers"]["children"]}
    assert {"conv1", "bn1", "fc", "softmax"} <= layers


def test_symbolic_dims_stay_symbolic_without_binding():
    report = inspect_graph(load_onnx(EXAMPLE))
    assert report["inputs"][0]["shape"] == ["batch", 1, 28, 28]
    shapes = {v["name"]: v["shape"] for v in report["values"]}
    assert shapes["probs"] == ["batch", 10]


def test_layer_path_from_pytorch_style_names():
    from torsh_gen.ir.graph import Node, Value

    n = Node("Conv", [], [Value("x")], name="/layer1/layer1.0/conv1/Conv")
    assert layer_path(n) == ["layer1", "layer1.0", "conv1"]
    assert np.isscalar(parse_input_shapes(["batch=4"])["batch"])
    assert parse_input_shapes(["x=1x3x8x8"])["x"] == (1, 3, 8, 8)
