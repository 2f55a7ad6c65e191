"""``scaffold train``: decomposed self-attention becomes one ``nn.MultiheadAttention``.

Each model is built with onnx.helper in the form exporters write (projections, Reshape to
heads, Transpose, Q·Kᵀ, scale, optional mask, Softmax, ·V, back, output projection) on a
symbolic batch and sequence; the generated module must use the standard layer where the
pattern is exact, fall back to functional code where it is not, and match onnxruntime
within 1e-5 either way.
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import make_model, tensor_info
from tests.scaffold import train_models as tm

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def attention_model(
    *,
    embed: int = 16,
    heads: int = 4,
    bias: tuple[bool, bool, bool, bool] = (True, True, True, True),
    scale: str = "div",
    scale_value: float | None = None,
    mask: str | None = None,
    split_kt: bool = False,
    cross: bool = False,
    kv_dim: int | None = None,
    mask_first: bool = False,
    residual: bool = True,
) -> onnx.ModelProto:
    """A decomposed attention block; ``bias`` says which of Q, K, V, out have a bias Add.

    ``scale`` is ``div`` (by √d) or ``mul`` (by 1/√d) unless ``scale_value`` overrides the
    constant; ``mask`` is None, ``"2d"`` ([seq, seq] input) or ``"4d"`` ([batch, 1, 1, seq]);
    ``split_kt`` spells Kᵀ as two Transposes; ``cross`` takes K/V from a second input
    (of width ``kv_dim``, default ``embed``); ``mask_first`` adds the mask before the scale.
    """
    r = np.random.default_rng(embed * 31 + heads)
    d = embed // heads
    inits = [numpy_helper.from_array(np.array([0, 0, heads, d], np.int64), "heads_shape")]
    inits.append(numpy_helper.from_array(np.array([0, 0, embed], np.int64), "merge_shape"))
    nodes = []
    kv_src = "mem" if cross else "x"
    for i, (tag, src) in enumerate((("q", "x"), ("k", kv_src), ("v", kv_src))):
        width = kv_dim if cross and kv_dim and tag != "q" else embed
        inits.append(tm._w(r, (width, embed), f"{tag}_proj.weight"))
        mm_out = f"{tag}1" if not bias[i] else f"{tag}0"
        nodes.append(
            helper.make_node(
                "MatMul", [src, f"{tag}_proj.weight"], [mm_out], name=f"/attn/{tag}_proj/MatMul"
            )
        )
        if bias[i]:
            inits.append(tm._w(r, (embed,), f"{tag}_proj.bias"))
            nodes.append(
                helper.make_node(
                    "Add",
                    [f"{tag}0", f"{tag}_proj.bias"],
                    [f"{tag}1"],
                    name=f"/attn/{tag}_proj/Add",
                )
            )
        nodes.append(
            helper.make_node(
                "Reshape", [f"{tag}1", "heads_shape"], [f"{tag}h"], name=f"/attn/Reshape_{tag}"
            )
        )
    nodes.append(
        helper.make_node("Transpose", ["qh"], ["qt"], name="/attn/Transpose_q", perm=[0, 2, 1, 3])
    )
    nodes.append(
        helper.make_node("Transpose", ["vh"], ["vt"], name="/attn/Transpose_v", perm=[0, 2, 1, 3])
    )
    if split_kt:
        nodes.append(
            helper.make_node(
                "Transpose", ["kh"], ["kt0"], name="/attn/Transpose_k", perm=[0, 2, 1, 3]
            )
        )
        nodes.append(
            helper.make_node(
                "Transpose", ["kt0"], ["kt"], name="/attn/Transpose_kt", perm=[0, 1, 3, 2]
            )
        )
    else:
        nodes.append(
            helper.make_node(
                "Transpose", ["kh"], ["kt"], name="/attn/Transpose_k", perm=[0, 2, 3, 1]
            )
        )
    nodes.append(helper.make_node("MatMul", ["qt", "kt"], ["s0"], name="/attn/MatMul"))
    if scale_value is None:
        scale_value = float(np.sqrt(d)) if scale == "div" else float(1 / np.sqrt(d))
    inits.append(numpy_helper.from_array(np.array(scale_value, np.float32), "scale"))
    op = "Div" if scale == "div" else "Mul"
    if mask is not None and mask_first:
        nodes.append(helper.make_node("Add", ["s0", "mask"], ["s0m"], name="/attn/Add_mask"))
        nodes.append(helper.make_node(op, ["s0m", "scale"], ["s2"], name=f"/attn/{op}"))
        scores = "s2"
    else:
        nodes.append(helper.make_node(op, ["s0", "scale"], ["s1"], name=f"/attn/{op}"))
        scores = "s1"
    if mask is not None and not mask_first:
        nodes.append(helper.make_node("Add", ["s1", "mask"], ["s2"], name="/attn/Add_mask"))
        scores = "s2"
    nodes.append(helper.make_node("Softmax", [scores], ["p"], name="/attn/Softmax", axis=-1))
    nodes.append(helper.make_node("MatMul", ["p", "vt"], ["o0"], name="/attn/MatMul_1"))
    nodes.append(
        helper.make_node("Transpose", ["o0"], ["o1"], name="/attn/Transpose_o", perm=[0, 2, 1, 3])
    )
    nodes.append(helper.make_node("Reshape", ["o1", "merge_shape"], ["o2"], name="/attn/Reshape_o"))
    inits.append(tm._w(r, (embed, embed), "out_proj.weight"))
    out = "o3" if residual or bias[3] else "y"
    nodes.append(
        helper.make_node("MatMul", ["o2", "out_proj.weight"], [out], name="/attn/out_proj/MatMul")
    )
    if bias[3]:
        inits.append(tm._w(r, (embed,), "out_proj.bias"))
        out_b = "o4" if residual else "y"
        nodes.append(
            helper.make_node("Add", [out, "out_proj.bias"], [out_b], name="/attn/out_proj/Add")
        )
        out = out_b
    if residual:  # the block's input is also used outside it
        nodes.append(helper.make_node("Add", [out, "x"], ["y"], name="/residual/Add"))
    inputs = [tensor_info("x", ["batch", "seq", embed])]
    if cross:
        inputs.append(tensor_info("mem", ["batch", "mseq", kv_dim or embed]))
    kv_len = "mseq" if cross else "seq"
    if mask == "2d":
        inputs.append(tensor_info("mask", ["seq", kv_len]))
    elif mask == "4d":
        inputs.append(tensor_info("mask", ["batch", 1, 1, kv_len]))
    return make_model(nodes, inputs, [tensor_info("y", ["batch", "seq", embed])], inits, opset=17)


def _feeds(
    model: onnx.ModelProto, batch: int, seq: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    sizes = {"batch": batch, "seq": seq, "mseq": seq + 2}
    feeds = {}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else sizes[d.dim_param] for d in dims]
        if vi.name == "mask":  # additive: zeros and large negatives, never a fully masked row
            m = np.where(rng.random(shape) < 0.3, -1e4, 0.0).astype(np.float32)
            m[..., 0] = 0.0
            feeds[vi.name] = m
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _check(model: onnx.ModelProto, tmp_path: Path, key: str) -> str:
    """Generate, compare with onnxruntime at two batch/sequence sizes, return model.py."""
    report = tm.generate(model, tmp_path / key, name=key)
    gen = tm.import_model(tmp_path / key, report.package)
    net = gen.load_pretrained().eval()
    session = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(7)
    for batch, seq in ((1, 3), (3, 6)):
        feeds = _feeds(model, batch, seq, rng)
        (expected,) = session.run(None, feeds)
        with torch.no_grad():
            got = net(*(torch.from_numpy(feeds[vi.name]) for vi in model.graph.input))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    # gradients flow through the module (it is a training project)
    net.train()
    x = [torch.from_numpy(v) for v in _feeds(model, 2, 4, rng).values()]
    net(*x).sum().backward()
    return (tmp_path / key / report.package / "model.py").read_text()


MATCHING = {
    "single_head": dict(embed=8, heads=1),
    "multi_head": dict(embed=16, heads=4),
    "no_bias_mul_scale": dict(embed=16, heads=2, bias=(False, False, False, False), scale="mul"),
    "partial_bias_split_kt": dict(
        embed=12, heads=3, bias=(True, False, True, False), split_kt=True
    ),
    "mask_2d": dict(embed=16, heads=4, mask="2d"),
    "mask_4d": dict(embed=16, heads=4, mask="4d", residual=False),
    "cross": dict(embed=16, heads=2, cross=True, mask="4d"),
}


@pytest.mark.parametrize("key", sorted(MATCHING))
def test_attention_block_becomes_multihead_attention(tmp_path: Path, key: str):
    src = _check(attention_model(**MATCHING[key]), tmp_path, key)
    kw = MATCHING[key]
    assert src.count("nn.MultiheadAttention(") == 1, src
    embed, heads = kw["embed"], kw["heads"]
    no_bias = ",bias=False" if not any(kw.get("bias", (True,))) else ""
    flat = "".join(src.split())  # black may wrap the constructor call
    assert f"nn.MultiheadAttention({embed},{heads}{no_bias},batch_first=True)" in flat
    # the block is one call; no projection layers or softmax are left behind
    assert "nn.Linear(" not in src and "torch.softmax" not in src, src
    assert "need_weights=False" in src
    assert ("attn_mask=" in src) == ("mask" in kw)


def test_layer_named_after_block_and_weights_in_torch_layout(tmp_path: Path):
    model = attention_model(embed=8, heads=2)
    report = tm.generate(model, tmp_path / "p", name="p")
    gen = tm.import_model(tmp_path / "p", report.package)
    net = gen.load_pretrained()
    assert isinstance(net.attn, torch.nn.MultiheadAttention)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    expected = np.concatenate([weights[f"{t}_proj.weight"].T for t in "qkv"])
    np.testing.assert_array_equal(net.attn.in_proj_weight.detach().numpy(), expected)
    np.testing.assert_array_equal(
        net.attn.out_proj.weight.detach().numpy(), weights["out_proj.weight"].T
    )
    np.testing.assert_array_equal(net.attn.out_proj.bias.detach().numpy(), weights["out_proj.bias"])


FALLBACK = {
    "scale_0_3": dict(embed=16, heads=4, scale="mul", scale_value=0.3),
    "scale_div_by_d": dict(embed=16, heads=4, scale="div", scale_value=4.0 * 4.0),
    "kv_other_width": dict(embed=16, heads=2, cross=True, kv_dim=12),
    "mask_before_scale": dict(embed=16, heads=4, mask="4d", mask_first=True),
}


@pytest.mark.parametrize("key", sorted(FALLBACK))
def test_inexact_variants_fall_back_to_functional_code(tmp_path: Path, key: str):
    src = _check(attention_model(**FALLBACK[key]), tmp_path, key)
    assert "MultiheadAttention" not in src
    assert "nn.Linear(" in src and "torch.softmax" in src


def test_projection_used_outside_block_falls_back(tmp_path: Path):
    model = attention_model(embed=8, heads=2, residual=False)
    g = model.graph
    # the value projection also feeds the output: the block cannot absorb it
    g.node.append(helper.make_node("Add", ["y", "v1"], ["y2"], name="/extra/Add"))
    g.output[0].name = "y2"
    onnx.checker.check_model(model)
    src = _check(model, tmp_path, "leak")
    assert "MultiheadAttention" not in src


def test_generation_is_deterministic(tmp_path: Path):
    path = tmp_path / "m.onnx"
    onnx.save_model(attention_model(embed=16, heads=4, mask="4d"), path)
    texts = []
    for i in range(2):
        report = tm.generate(path, tmp_path / f"d{i}", name="d")
        texts.append((tmp_path / f"d{i}" / report.package / "model.py").read_text())
    assert texts[0] == texts[1]


class _TorchSelfAttention(torch.nn.Module):
    """BERT-style self-attention written with nn.Linear, view/permute, matmul and softmax.

    ``hf`` spells the head split as Hugging Face models do (``t.size()[:-1] + (h, d)``), which
    exports as ``Shape`` nodes reading the projections themselves.
    """

    def __init__(self, embed: int = 16, heads: int = 4, hf: bool = False):
        super().__init__()
        self.h, self.d, self.hf = heads, embed // heads, hf
        self.query, self.key, self.value = (torch.nn.Linear(embed, embed) for _ in range(3))
        self.out = torch.nn.Linear(embed, embed)

    def _split(self, t, b, s):
        if self.hf:
            return t.view(t.size()[:-1] + (self.h, self.d)).permute(0, 2, 1, 3)
        return t.view(b, s, self.h, self.d).transpose(1, 2)

    def forward(self, x, mask):
        b, s, _ = x.shape
        q, k, v = (self._split(f(x), b, s) for f in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d) + mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        if self.hf:
            ctx = ctx.view(ctx.size()[:-2] + (self.h * self.d,))
        else:
            ctx = ctx.reshape(b, s, -1)
        return self.out(ctx) + x


class _TwoLayers(torch.nn.Module):
    """Two blocks with a LayerNorm between: the IR's shapes of the second block's input are
    ``[?, ?, E]`` (the first block's reshapes are computed), which the matcher must handle."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([_TorchSelfAttention(), _TorchSelfAttention(hf=True)])
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x, mask):
        for layer in self.layers:
            x = self.norm(layer(x, mask))
        return x


@pytest.mark.parametrize("variant", ["view", "hf_size", "two_layers"])
def test_torch_onnx_export_of_self_attention(tmp_path: Path, variant: str):
    torch.manual_seed(0)
    if variant == "two_layers":
        module = _TwoLayers().eval()
    else:
        module = _TorchSelfAttention(hf=variant == "hf_size").eval()
    path = tmp_path / "exported.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(2, 5, 16), torch.zeros(2, 1, 1, 5)),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x", "mask"],
            output_names=["y"],
            dynamic_axes={
                "x": {0: "batch", 1: "seq"},
                "mask": {0: "batch", 3: "seq"},
                "y": {0: "batch", 1: "seq"},
            },
        )
    model = onnx.load(path)
    assert any(n.op_type == "Softmax" for n in model.graph.node)  # decomposed, not fused
    src = _check(model, tmp_path, "exported")
    assert src.count("nn.MultiheadAttention(") == (2 if variant == "two_layers" else 1)
    assert "torch.softmax" not in src and "nn.Linear(" not in src


def test_project_trains_with_qat_and_exports_attention(tmp_path: Path):
    """The generated project's QAT set-up and ONNX export handle nn.MultiheadAttention."""
    model = attention_model(embed=16, heads=4, mask="4d")
    package = "attn_project"
    tm.generate(model, tmp_path / "proj", name=package)
    sys.path.insert(0, str(tmp_path / "proj"))
    try:
        train = importlib.import_module(f"{package}.train")
        export = importlib.import_module(f"{package}.export")
        rng = np.random.default_rng(3)
        feeds = _feeds(model, 2, 5, rng)
        args = [torch.from_numpy(v) for v in feeds.values()]
        qat = train.build_model(train.Config(qat=True))
        assert isinstance(qat.attn, torch.nn.MultiheadAttention)  # kept float: no QAT form
        qat(*args).square().mean().backward()
        net = train.build_model(train.Config()).eval()
        path = export.export_onnx(net, tmp_path / "re.onnx")
        session = ort.InferenceSession(str(path))
        feeds = _feeds(model, 3, 6, rng)
        names = [i.name for i in session.get_inputs()]
        (got,) = session.run(None, dict(zip(names, feeds.values())))
        with torch.no_grad():
            expected = net(*(torch.from_numpy(v) for v in feeds.values()))
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)
    finally:
        sys.path.remove(str(tmp_path / "proj"))
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]
