"""TVM-backend converters of ops_extra: NonMaxSuppression, BitCast, DFT/STFT, Unique and
the training optimizers, each against onnxruntime or onnx's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as P
from onnx import numpy_helper

from tests.backends.tvm.helpers import check_tvm, node_model

pytest.importorskip("tvm")

F, I64 = P.FLOAT, P.INT64

BOXES = np.array(
    [
        [
            [0, 0, 1, 1],
            [0, 0.1, 1, 1.1],
            [0, -0.1, 1, 0.9],
            [0, 10, 1, 11],
            [0, 10.1, 1, 11.1],
            [0, 100, 1, 101],
        ]
    ],
    np.float32,
)
SCORES = np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3], [0.1, 0.2, 0.3, 0.3, 0.2, 0.1]]], np.float32)


def _nms(**attrs: int) -> object:
    ins = [
        ("boxes", F, [1, 6, 4]),
        ("scores", F, [1, 2, 6]),
        ("m", I64, [1]),
        ("iou", F, [1]),
        ("st", F, [1]),
    ]
    return node_model("NonMaxSuppression", ins, [("out", I64, None)], **attrs)


@pytest.mark.parametrize(
    ("max_out", "iou", "score"),
    [(3, 0.5, 0.0), (10, 0.0, 0.15), (0, 0.5, 0.0), (2, 1.0, 0.0), (6, 0.8181818, 0.0)],
)
def test_nms(max_out: int, iou: float, score: float) -> None:
    """Run-time max_output_boxes_per_class (0: nothing), thresholds; ties in the second
    class resolve to the lower index."""
    feeds = {
        "boxes": BOXES,
        "scores": SCORES,
        "m": np.array([max_out], np.int64),
        "iou": np.array([iou], np.float32),
        "st": np.array([score], np.float32),
    }
    check_tvm(_nms(), feeds)


def test_nms_iou_equal_to_threshold_keeps() -> None:
    """IoU exactly at the threshold does not suppress (strictly greater does)."""
    boxes = np.array([[[0, 0, 1, 2], [0, 1, 1, 3]]], np.float32)  # IoU = 1/3
    feeds = {
        "boxes": boxes,
        "scores": np.array([[[0.9, 0.8]]], np.float32),
        "m": np.array([5], np.int64),
        "iou": np.array([1 / 3], np.float32),
        "st": np.array([0.0], np.float32),
    }
    model = node_model(
        "NonMaxSuppression",
        [
            ("boxes", F, [1, 2, 4]),
            ("scores", F, [1, 1, 2]),
            ("m", I64, [1]),
            ("iou", F, [1]),
            ("st", F, [1]),
        ],
        [("out", I64, None)],
    )
    got = check_tvm(model, feeds, oracle="reference")
    assert got[0].shape == (2, 3)


def test_nms_center_point_box() -> None:
    centers = BOXES.copy()
    centers[..., 0], centers[..., 1] = BOXES[..., 1] + 0.5, BOXES[..., 0] + 0.5
    centers[..., 2], centers[..., 3] = 1.0, 1.0
    feeds = {"boxes": centers, "scores": SCORES, "m": np.array([3], np.int64)}
    feeds |= {"iou": np.array([0.5], np.float32), "st": np.array([0.0], np.float32)}
    check_tvm(_nms(center_point_box=1), feeds)


@pytest.mark.parametrize(
    ("src", "dst", "data"),
    [
        (F, P.INT32, np.array([1.5, -0.0, np.inf], np.float32)),
        (P.UINT16, P.INT16, np.array([[0, 65535], [32768, 7]], np.uint16)),
        (P.DOUBLE, P.INT64, np.array(-2.25, np.float64)),
        (P.BOOL, P.UINT8, np.array([True, False], np.bool_)),
    ],
)
def test_bitcast(src: int, dst: int, data: np.ndarray) -> None:
    model = node_model(
        "BitCast", [("x", src, list(data.shape))], [("y", dst, list(data.shape))], opset=26, to=dst
    )
    check_tvm(model, {"x": data}, oracle="reference")


@pytest.mark.parametrize(
    ("shape", "axis", "attrs", "length"),
    [
        ([2, 8, 3, 1], 1, {}, None),
        ([2, 8, 3, 2], 2, {"inverse": 1}, None),
        ([2, 8, 1], -2, {"onesided": 1}, 6),
        ([3, 5, 2], 1, {"inverse": 1, "onesided": 1}, 8),
        ([4, 5, 2], 0, {}, 7),
    ],
)
def test_dft(shape: list[int], axis: int, attrs: dict, length: int | None) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(axis, np.int64), "axis")]
    ins = [("x", F, shape), ("axis", I64, [])]
    names = ["x", "", "axis"]
    if length is not None:
        inits.append(numpy_helper.from_array(np.array(length, np.int64), "len"))
        ins.insert(1, ("len", I64, []))
        names[1] = "len"
    model = node_model("DFT", ins, [("y", F, None)], initializers=inits, opset=20, **attrs)
    model.graph.node[0].input[:] = names
    check_tvm(model, {"x": x}, rtol=1e-4, atol=1e-4, oracle="reference")


def test_dft_runtime_axis_same_shape() -> None:
    """A run-time axis is taken when every axis it may name gives one output shape."""
    x = np.random.default_rng(2).standard_normal([1, 6, 6, 2]).astype(np.float32)
    model = node_model(
        "DFT", [("x", F, [1, 6, 6, 2]), ("axis", I64, [])], [("y", F, [1, 6, 6, 2])], opset=20
    )
    model.graph.node[0].input[:] = ["x", "", "axis"]
    for axis in (1, -2):
        check_tvm(
            model,
            {"x": x, "axis": np.array(axis, np.int64)},
            rtol=1e-4,
            atol=1e-4,
            oracle="reference",
        )


def test_stft_constant_step() -> None:
    x = np.random.default_rng(3).standard_normal([2, 40, 1]).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(4, np.int64), "step")]
    window = np.hanning(10).astype(np.float32)
    model = node_model(
        "STFT",
        [("x", F, [2, 40, 1]), ("step", I64, []), ("w", F, [10])],
        [("y", F, None)],
        initializers=inits,
        opset=17,
    )
    check_tvm(model, {"x": x, "w": window}, rtol=1e-4, atol=1e-4, oracle="reference")


@pytest.mark.parametrize(
    ("data", "attrs"),
    [
        (np.array([2, 1, 1, 3, 4, 3], np.float32), {}),
        (np.array([2, 1, 1, 3, 4, 3], np.float32), {"sorted": 0}),
        (np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4], [0, 5, 1]], np.int64), {"axis": 0}),
        (
            np.array([[[1, 1], [0, 1], [1, 1]], [[1, 1], [0, 1], [1, 0]]], np.int32),
            {"axis": -2, "sorted": 1},
        ),
    ],
)
def test_unique(data: np.ndarray, attrs: dict) -> None:
    t = {np.float32: F, np.int64: I64, np.int32: P.INT32}[data.dtype.type]
    outs = [("y", t, None), ("idx", I64, None), ("inv", I64, None), ("cnt", I64, None)]
    check_tvm(
        node_model("Unique", [("x", t, list(data.shape))], outs, **attrs),
        {"x": data},
        oracle="reference",
    )


def _optimizer(op: str, groups: int, **attrs: object) -> tuple[object, dict]:
    rng = np.random.default_rng(4)
    ins = [("R", F, []), ("T", I64, [])]
    feeds: dict[str, np.ndarray] = {"R": np.array(0.1, np.float32), "T": np.array(3, np.int64)}
    for g in range(groups):
        for k in range(2):
            name = f"g{g}_{k}"
            ins.append((name, F, [2, 3]))
            feeds[name] = rng.random([2, 3]).astype(np.float32) + 0.1
    outs = [(f"o{k}", F, [2, 3]) for k in range((groups - 1) * 2)]
    model = node_model(op, ins, outs, domain="ai.onnx.preview.training", **attrs)
    # inputs in ONNX order: R, T, X1, X2, G1, G2, ...
    order = ["R", "T"] + [f"g{g}_{k}" for g in range(groups) for k in range(2)]
    model.graph.node[0].input[:] = order
    return model, feeds


@pytest.mark.parametrize(
    ("op", "groups", "attrs"),
    [
        ("Adagrad", 3, {"decay_factor": 0.1, "epsilon": 1e-5, "norm_coefficient": 0.01}),
        ("Momentum", 3, {"alpha": 0.9, "beta": 0.1, "mode": "standard", "norm_coefficient": 0.01}),
        ("Momentum", 3, {"alpha": 0.9, "beta": 0.1, "mode": "nesterov", "norm_coefficient": 0.0}),
        (
            "Adam",
            4,
            {
                "alpha": 0.9,
                "beta": 0.99,
                "epsilon": 1e-4,
                "norm_coefficient": 0.01,
                "norm_coefficient_post": 0.02,
            },
        ),
    ],
)
def test_optimizers(op: str, groups: int, attrs: dict) -> None:
    model, feeds = _optimizer(op, groups, **attrs)
    check_tvm(model, feeds, rtol=1e-5, atol=1e-6, oracle="reference")


@pytest.mark.parametrize(
    ("mode", "skip", "lo", "hi", "weights"),
    [
        ("TF", 0, 1, 2, None),
        ("TF", 3, 2, 2, None),
        ("IDF", 2, 1, 2, [0.5, 2, 3, 4, 5, 6, 7]),
        ("TFIDF", 1, 1, 2, [1, 2, 3, 4, 5, 6, 7]),
    ],
)
def test_tfidf(mode: str, skip: int, lo: int, hi: int, weights: list[float] | None) -> None:
    x = np.array(
        [[1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8], [8, 8, 7, 3, 5, 6, 2, 7, 8, 6, 7, 5]], np.int32
    )
    attrs = {
        "mode": mode,
        "min_gram_length": lo,
        "max_gram_length": hi,
        "max_skip_count": skip,
        "ngram_counts": [0, 4],
        "ngram_indexes": [0, 1, 2, 3, 4, 5, 6],
        "pool_int64s": [2, 3, 5, 4, 5, 6, 7, 8, 6, 7],
    }
    if weights is not None:
        attrs["weights"] = [float(w) for w in weights]
    model = node_model(
        "TfIdfVectorizer", [("x", P.INT32, [2, 12])], [("y", F, None)], opset=9, **attrs
    )
    check_tvm(model, {"x": x}, oracle="reference")


def test_array_feature_extractor() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    model = node_model(
        "ArrayFeatureExtractor",
        [("x", F, [3, 4]), ("i", I64, [3])],
        [("y", F, None)],
        domain="ai.onnx.ml",
    )
    check_tvm(model, {"x": x, "i": np.array([3, -1, 0], np.int64)}, oracle="reference")


@pytest.mark.parametrize("aggregate", [0, 1, 2, 3])
def test_tree_ensemble(aggregate: int) -> None:
    """Two trees (LEQ and set-membership splits, a NaN tracked to the true branch)."""
    from onnx import helper

    attrs = {
        "aggregate_function": aggregate,
        "n_targets": 2,
        "tree_roots": [0, 3],
        "nodes_featureids": [0, 1, 1, 1, 0],
        "nodes_modes": helper.make_tensor("m", P.UINT8, [5], [0, 3, 0, 6, 1]),
        "nodes_splits": helper.make_tensor("s", F, [5], [0.5, 1.0, 2.0, float("nan"), -1.0]),
        "nodes_truenodeids": [1, 0, 2, 4, 3],
        "nodes_trueleafs": [0, 1, 1, 0, 1],
        "nodes_falsenodeids": [2, 1, 3, 4, 4],
        "nodes_falseleafs": [0, 1, 1, 1, 1],
        "nodes_missing_value_tracks_true": [1, 0, 0, 0, 0],
        "membership_values": helper.make_tensor("mv", F, [3], [2.0, 5.0, float("nan")]),
        "leaf_targetids": [0, 1, 0, 1, 0],
        "leaf_weights": helper.make_tensor("w", F, [5], [1.0, 2.0, 3.0, 4.0, 5.0]),
    }
    x = np.array([[0.1, 2.0], [np.nan, 5.0], [3.0, 0.5], [-2.0, 1.5], [0.7, 2.0]], np.float32)
    model = node_model(
        "TreeEnsemble", [("x", F, [5, 2])], [("y", F, None)], domain="ai.onnx.ml", **attrs
    )
    model.opset_import[1].version = 5
    check_tvm(model, {"x": x}, oracle="reference")
