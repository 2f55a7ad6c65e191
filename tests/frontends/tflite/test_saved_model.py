"""TensorFlow SavedModel folders: through tf2onnx with the extra, one clear line without it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.cli.test_cli import cli
from torsh_gen.errors import InputError, ModelLoadError
from torsh_gen.tools.loading import SAVED_MODEL, load_model, model_format


@pytest.fixture
def fake_saved_model(tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    (folder / "variables").mkdir()
    return folder


def test_folder_and_its_pb_pick_the_saved_model_loader(fake_saved_model):
    assert model_format(fake_saved_model) == SAVED_MODEL
    assert model_format(fake_saved_model / "saved_model.pb") == SAVED_MODEL


def test_missing_extra_is_one_line_naming_it(fake_saved_model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'torsh-gen\[tensorflow\]'"):
        load_model(fake_saved_model)
    out = fake_saved_model.parent / "out.onnx"
    code, _, err = cli(capsys, "convert", str(fake_saved_model), "-o", str(out))
    assert code == 2
    assert "torsh-gen[tensorflow]" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_folder_without_saved_model_pb(tmp_path):
    with pytest.raises(InputError, match="folder without saved_model.pb"):
        load_model(tmp_path)


@pytest.mark.slow
def test_saved_model_converts_and_matches_tensorflow(tmp_path, capsys):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    import onnxruntime as ort

    from torsh_gen.ops.execute import run_graph

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.w = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
            self.d = tf.Variable(rng.normal(0, 0.3, (8, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 16, 16, 3), tf.float32)])
        def __call__(self, x):
            y = tf.nn.relu(tf.nn.conv2d(x, self.w, 2, "SAME"))
            return tf.nn.softmax(tf.matmul(tf.reduce_mean(y, axis=[1, 2]), self.d))

    net = Net()
    folder = tmp_path / "net"
    tf.saved_model.save(net, str(folder), signatures=net.__call__)
    graph = load_model(folder)
    assert graph.meta["conversion"]["source"] == "tensorflow"
    assert graph.meta["conversion"]["mapped"].get("Conv2D") == 1
    for batch in (1, 3):
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, 16, 16, 3)).astype(np.float32)
        want = net(tf.constant(x)).numpy()
        (got,) = run_graph(graph, {graph.inputs[0].name: x})
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)
    out = tmp_path / "net.onnx"
    code, _, err = cli(capsys, "convert", str(folder), "-o", str(out))
    assert code == 0, err
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, net(tf.constant(x)).numpy(), rtol=0, atol=1e-5)
