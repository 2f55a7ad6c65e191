"""End-to-end imports of the test models: PyTorch vs our executor vs onnxruntime."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.frontends.torch import models  # noqa: E402
from tests.frontends.torch.helpers import check_module  # noqa: E402
from torsh_gen.tools.inspect import inspect_graph  # noqa: E402

Dim = torch.export.Dim


def _images(b: int) -> tuple:
    return (torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(b)),)


def _tokens(vocab: int) -> object:
    return lambda b: (
        torch.randint(0, vocab, (b, b + 4), generator=torch.Generator().manual_seed(b)),
    )


CASES = {
    "resnet": (models.TinyResNet, _images, {"x": {0: Dim("batch", max=64)}}),
    "mobilenetv2": (models.TinyMobileNetV2, _images, {"x": {0: Dim("batch", max=64)}}),
    "encoder": (
        models.Encoder,
        _tokens(50),
        {"ids": {0: Dim("batch", max=32), 1: Dim("seq", max=64)}},
    ),
    "gpt": (models.TinyGPT, _tokens(64), {"ids": {0: Dim("batch", max=32), 1: Dim("seq", max=32)}}),
    "mlp": (models.MLP, lambda b: (torch.randn(b, 16),), {"x": {0: Dim("batch", max=64)}}),
}


def _layer_names(tree: dict) -> set[str]:
    names = {tree["name"]}
    for child in (
        tree.get("children", [])
        if isinstance(tree.get("children"), list)
        else tree.get("children", {}).values()
    ):
        names |= _layer_names(child)
    return names


@pytest.fixture(scope="module", params=list(CASES))
def imported(request):
    cls, make_args, dyn = CASES[request.param]
    module = models.seeded(cls)
    graph = check_module(module, make_args, dyn, sizes=(2, 3))
    return request.param, module, graph


def test_matches_torch_and_onnxruntime_at_two_sizes(imported):
    # check_module already compared both executors at batch (and seq) 2 and 3
    name, _, graph = imported
    assert graph.meta["conversion"]["mapped"], name


def test_dynamic_dims_keep_their_names(imported):
    name, _, graph = imported
    dims = set(graph.inputs[0].type.shape)
    assert "batch" in dims
    if name in ("encoder", "gpt"):
        assert "seq" in dims
        assert graph.outputs[0].type.shape[:2] == ("batch", "seq")
    else:
        assert graph.outputs[0].type.shape[0] == "batch"


def test_weights_become_named_initializers(imported):
    name, module, graph = imported
    inits = {v.name for v in graph.initializers}
    for key in module.state_dict():
        if key.endswith("num_batches_tracked") or (name == "gpt" and key == "lm_head.weight"):
            continue  # unused buffer; lm_head shares wte's weight
        assert key in inits, key


def test_layer_names_follow_module_paths(imported):
    name, _, graph = imported
    expected = {
        "resnet": "layer1.0.conv1",
        "mobilenetv2": "features.1.conv.3",
        "encoder": "encoder.layers.0.linear1",
        "gpt": "h.1.attn.qkv",
        "mlp": "fc2",
    }[name]
    assert any(n.metadata.get("torch.module") == expected for n in graph.nodes)
    layers = _layer_names(inspect_graph(graph)["layers"])
    assert expected in layers


def test_nodes_keep_their_source_location(imported):
    _, _, graph = imported
    sources = [n.metadata.get("torch.source", "") for n in graph.nodes]
    assert any("models.py:" in s for s in sources)
    assert all(n.metadata.get("torch.op") for n in graph.nodes)
