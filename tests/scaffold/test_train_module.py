"""The generated nn.Module reproduces the source model (onnxruntime) within 1e-5.

Also: hostile names stay data, unsupported ops are listed in one message, an existing
output folder is refused without --force, and the output is deterministic.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import EXAMPLE
from tests.scaffold import train_models as tm
from torsh_gen.errors import InputError, UnsupportedOpError

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

MODELS = {
    "tiny_cnn": lambda: EXAMPLE,
    "mlp": tm.mlp,
    "bn_cnn": tm.bn_cnn,
    "sequence": tm.sequence_model,
    "hostile": tm.hostile,
    "exported_style": tm.exported_style,
}


def _feeds(model: onnx.ModelProto, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for vi in model.graph.input:
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if dtype == np.float32:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[vi.name] = rng.integers(0, 20, shape).astype(dtype)
    return feeds


@pytest.mark.parametrize("key", sorted(MODELS))
def test_module_matches_onnxruntime(tmp_path: Path, key: str):
    source = MODELS[key]()
    model = onnx.load(source) if isinstance(source, Path) else source
    report = tm.generate(source, tmp_path / key, name=key)
    gen = tm.import_model(tmp_path / key, report.package)
    net = gen.load_pretrained().eval()
    session = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(11)
    for batch in (1, 3):
        feeds = _feeds(model, batch, rng)
        expected = session.run(None, feeds)
        with torch.no_grad():
            got = net(*(torch.from_numpy(feeds[vi.name]) for vi in model.graph.input))
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g.numpy(), e, rtol=1e-5, atol=1e-5)


def test_layers_named_after_graph_layers(tmp_path: Path):
    report = tm.generate(EXAMPLE, tmp_path / "p", name="tiny")
    assert report.layers == ["conv1", "bn1", "conv2", "fc"]
    source = (tmp_path / "p" / "tiny" / "model.py").read_text()
    assert "nn.Conv2d(1, 8, kernel_size=3, padding=1)" in source
    assert "nn.BatchNorm2d(8)" in source and "nn.Linear(16, 10)" in source
    gen = tm.import_model(tmp_path / "p", "tiny")
    logits = gen.load_pretrained(output_logits=True).eval()
    probs = gen.load_pretrained().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(logits(x), dim=1), probs(x))


def test_standard_layers_for_mlp_and_sequence(tmp_path: Path):
    tm.generate(tm.mlp(), tmp_path / "m", name="mlp")
    src = (tmp_path / "m" / "mlp" / "model.py").read_text()
    assert "self.fc1 = nn.Linear(64, 32)" in src and "self.fc2 = nn.Linear(32, 10, bias=False)" in src
    tm.generate(tm.sequence_model(), tmp_path / "s", name="seq")
    src = (tmp_path / "s" / "seq" / "model.py").read_text()
    assert "nn.Embedding(20, 8)" in src and "nn.LayerNorm(8, eps=1e-06)" in src
    assert "self.attn_qkv = nn.Linear(8, 24)" in src


def test_hostile_names_stay_data(tmp_path: Path):
    model_file = tmp_path / "m\'\"\"\"\n.onnx"
    onnx.save_model(tm.hostile(), model_file)
    tm.generate(model_file, tmp_path / "h", name="hostile")
    for path in (tmp_path / "h").rglob("*.py"):
        text = path.read_text()
        ast.parse(text)  # valid Python
        # the hostile text only ever appears inside comments and string literals
        names = {t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NAME}
        assert "__import__" not in names and "system" not in names and "pwned" not in names, path
    readme = (tmp_path / "h" / "README.md").read_text()
    assert "pwned\")" not in readme.replace("\\", "")
    gen = tm.import_model(tmp_path / "h", "hostile")
    assert list(gen.INPUTS) == ["class_"]
    assert gen.OUTPUTS == ["\u00e9\u2028"]
    names = dict(gen.load_pretrained().named_modules())
    assert "forward" not in names and "state_dict" not in names


def test_unsupported_ops_listed_in_one_line(tmp_path: Path):
    with pytest.raises(UnsupportedOpError) as info:
        tm.generate(tm.unsupported(), tmp_path / "u")
    message = str(info.value)
    assert "\n" not in message
    assert "CumSum" in message and "TopK x2" in message and "Slice (negative steps" in message
    assert not (tmp_path / "u").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".u.tmp")]


def test_existing_folder_needs_force(tmp_path: Path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        tm.generate(EXAMPLE, out)
    assert (out / "keep.txt").read_text() == "mine"
    tm.generate(EXAMPLE, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "train.py").is_file()


def test_output_is_deterministic(tmp_path: Path):
    for d in ("a", "b"):
        tm.generate(EXAMPLE, tmp_path / d, name="tiny")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
