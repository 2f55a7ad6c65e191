"""Calibration data: the accepted forms, splitting into feeds, and refusals before any work."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from PIL import Image

from torsh_gen.errors import InputError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.tools.calibration import ImagePreprocess, load_calibration


def _graph(batch="N", shape=(1, 8, 8), name="image"):
    node = helper.make_node("Relu", [name], ["y"])
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, *shape])],
    )
    return load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_npz_split_by_batch_size(tmp_path):
    x = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "c.npz", image=x)
    data = load_calibration(tmp_path / "c.npz", _graph(), batch_size=4)
    assert [f["image"].shape[0] for f in data] == [4, 4, 2]
    assert data.samples == 10
    np.testing.assert_array_equal(np.concatenate([f["image"] for f in data]), x)


def test_fixed_batch_dim_cuts_stacked_samples_and_limit(tmp_path):
    x = np.zeros((6, 1, 8, 8), np.float32)
    np.save(tmp_path / "c.npy", x)
    data = load_calibration(tmp_path / "c.npy", _graph(batch=1), limit=4)
    assert len(data) == 4 and data.samples == 4


def test_folder_of_npz_in_name_order(tmp_path):
    for i in (2, 0, 1):
        np.savez(tmp_path / f"s{i}.npz", image=np.full((1, 1, 8, 8), i, np.float32))
    data = load_calibration(tmp_path, _graph())
    assert [float(f["image"][0, 0, 0, 0]) for f in data] == [0.0, 1.0, 2.0]


def test_image_folder_with_preprocessing(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 51 * i, np.uint8)).save(tmp_path / f"{i}.png")
    g = _graph(batch="N", shape=(3, 8, 8), name="pixels")
    data = load_calibration(tmp_path, g, preprocess="mean=0.5,0.5,0.5;std=0.5,0.5,0.5")
    (feed,) = data
    assert feed["pixels"].shape == (3, 3, 8, 8)
    np.testing.assert_allclose(feed["pixels"][1], (0.2 - 0.5) / 0.5, rtol=1e-5)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"other": np.zeros((1, 1, 8, 8), np.float32)}, "unknown input name"),
        ({"image": np.zeros((1, 1, 8, 8), np.float64)}, "must be float"),
        ({"image": np.zeros((1, 1, 4, 4), np.float32)}, "must have shape"),
        ({"image": np.full((1, 1, 8, 8), np.nan, np.float32)}, "NaN or infinity"),
        ({"image": np.zeros((0, 1, 8, 8), np.float32)}, "no samples"),
    ],
)
def test_bad_data_is_refused_with_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(InputError, match=message):
        load_calibration(tmp_path / "c.npz", _graph())


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(InputError, match="no such calibration data"):
        load_calibration(tmp_path / "nope.npz", _graph())
    with pytest.raises(InputError, match="no .npz, .npy or image files"):
        load_calibration(tmp_path, _graph())


def test_bad_preprocessing_spec():
    with pytest.raises(InputError, match="bad preprocessing item 'size=big'"):
        ImagePreprocess.parse("size=big")
    assert ImagePreprocess.parse("size=4,5;layout=NHWC").layout == "nhwc"


def test_random_inputs_are_arrays_for_every_rank_and_type():
    """Scalar (0-d) inputs come back as arrays, which onnxruntime and our packages take."""
    from torsh_gen.tools.run import random_inputs

    specs = [("b", TensorProto.BOOL), ("f", TensorProto.FLOAT), ("i", TensorProto.INT64)]
    ins = [helper.make_tensor_value_info(n, t, []) for n, t in specs]
    nodes = [helper.make_node("Identity", [n], [n + "_out"]) for n, _ in specs]
    outs = [helper.make_tensor_value_info(n + "_out", t, []) for n, t in specs]
    g = helper.make_graph(nodes, "scalars", ins, outs)
    graph = load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    feeds = random_inputs(graph)
    assert all(isinstance(a, np.ndarray) and a.shape == () for a in feeds.values())
    assert feeds["b"].dtype == np.bool_ and feeds["f"].dtype == np.float32
