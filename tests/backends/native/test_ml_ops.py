"""ai.onnx.ml ops (Binarizer, ArrayFeatureExtractor, LabelEncoder, tree ensembles) and
TfIdfVectorizer through the JIT and the kernel-IR interpreter, against onnxruntime. The
interpreter raises on any access outside a buffer, so the clamping of run-time indices is
checked by running it on out-of-range indices."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.backends.native.helpers import check_native, interpret_program, lower_model
from torsh_gen.errors import UnsupportedOpError

ML = "ai.onnx.ml"


def model(
    node: onnx.NodeProto,
    feeds: dict[str, np.ndarray],
    outs: list[tuple[str, int, list]],
    ml: int = 3,
    opset: int = 21,
):
    """A one-node model over ``feeds`` with typed outputs (name, elem type, shape)."""
    ins = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    o = [helper.make_tensor_value_info(n, t, s) for n, t, s in outs]
    g = helper.make_graph([node], "g", ins, o)
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ML, ml)]
    )


def ml_node(op: str, ins: list[str], outs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, ins, outs, domain=ML, **attrs)


# --------------------------------------------------------------------------- simple ops
def against_reference(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """JIT and interpreter against onnx's reference evaluator (where onnxruntime lacks a type)."""
    from torsh_gen.backends.llvm.jit import JitProgram

    expected = ReferenceEvaluator(m).run(None, feeds)
    program = lower_model(m)
    got = JitProgram(program).run(feeds)
    for spec, out, exp in zip(program.outputs, interpret_program(program, feeds), expected):
        np.testing.assert_allclose(got[spec.name], exp, rtol=1e-6)
        np.testing.assert_allclose(out, exp, rtol=1e-6)


def against_cpu_reference(
    m: onnx.ModelProto, feeds: dict[str, np.ndarray], tol: float = 1e-6
) -> None:
    """JIT and interpreter against torsh-gen's cpu reference (where onnxruntime differs)."""
    from torsh_gen.backend import prepare
    from torsh_gen.backends.llvm.jit import JitProgram

    expected = prepare(m, mode="reference").run(list(feeds.values()))
    program = lower_model(m)
    got = JitProgram(program).run(feeds)
    for spec, out, exp in zip(program.outputs, interpret_program(program, feeds), expected):
        np.testing.assert_allclose(got[spec.name], exp, rtol=tol, atol=tol)
        np.testing.assert_allclose(out, exp, rtol=tol, atol=tol)


def test_binarizer():
    x = (np.random.default_rng(0).standard_normal((3, 5)) * 3).astype(np.float32)
    x[0, 0] = 0.5
    m = model(
        ml_node("Binarizer", ["x"], ["y"], threshold=0.5),
        {"x": x},
        [("y", TensorProto.FLOAT, [3, 5])],
        ml=1,
    )
    check_native(m, {"x": x}, interpret=True)


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_binarizer_other_types(dtype):
    x = (np.random.default_rng(0).standard_normal((3, 5)) * 3).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    m = model(
        ml_node("Binarizer", ["x"], ["y"], threshold=0.5), {"x": x}, [("y", elem, [3, 5])], ml=1
    )
    against_reference(m, {"x": x})


def test_array_feature_extractor():
    x = np.random.default_rng(1).standard_normal((2, 3, 6)).astype(np.float32)
    ix = np.array([5, 0, 2, 2], np.int64)
    m = model(
        ml_node("ArrayFeatureExtractor", ["x", "i"], ["y"]),
        {"x": x, "i": ix},
        [("y", TensorProto.FLOAT, [2, 3, 4])],
        ml=1,
    )
    check_native(m, {"x": x, "i": ix}, interpret=True)


def test_array_feature_extractor_clamps_indices():
    """Out-of-range run-time indices read the nearest element, never outside the buffer
    (onnxruntime raises instead); negative ones count from the end."""
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    ix = np.array([-1, 99, -100, 3], np.int64)
    m = model(
        ml_node("ArrayFeatureExtractor", ["x", "i"], ["y"]),
        {"x": x, "i": ix},
        [("y", TensorProto.FLOAT, [2, 4])],
        ml=1,
    )
    out = interpret_program(lower_model(m), {"x": x, "i": ix})[0]
    np.testing.assert_array_equal(out, x[:, [5, 5, 0, 3]])


# --------------------------------------------------------------------------- LabelEncoder
def test_label_encoder_int_to_float():
    x = np.array([[3, 7, -1], [7, 100, 0]], np.int64)
    node = ml_node(
        "LabelEncoder",
        ["x"],
        ["y"],
        keys_int64s=[7, 3, 0, 5, 9],
        values_floats=[0.5, 1.5, 2.5, 3.5, 4.5],
        default_float=-9.0,
    )
    m = model(node, {"x": x}, [("y", TensorProto.FLOAT, [2, 3])], ml=2)
    check_native(m, {"x": x}, interpret=True)


def test_label_encoder_float_to_int_with_nan_key():
    x = np.array([0.25, np.nan, -1.0, 2.0, 3.0, -0.0], np.float32)
    node = ml_node(
        "LabelEncoder",
        ["x"],
        ["y"],
        keys_floats=[2.0, np.nan, 0.0, 0.25],
        values_int64s=[20, 99, 10, 5],
        default_int64=-7,
    )
    m = model(node, {"x": x}, [("y", TensorProto.INT64, [6])], ml=4)
    against_cpu_reference(m, {"x": x})
    out = interpret_program(lower_model(m), {"x": x})[0]
    np.testing.assert_array_equal(out, [5, 99, -7, 20, -7, 10])


def test_label_encoder_tensor_attrs():
    x = np.array([1.5, 2.5, 4.0, 1.5], np.float64)
    keys = numpy_helper.from_array(np.array([4.0, 1.5, 8.0], np.float64), "keys")
    vals = numpy_helper.from_array(np.array([40, 15, 80], np.int16), "vals")
    default = numpy_helper.from_array(np.array([-3], np.int16), "d")
    node = ml_node(
        "LabelEncoder", ["x"], ["y"], keys_tensor=keys, values_tensor=vals, default_tensor=default
    )
    m = model(node, {"x": x}, [("y", TensorProto.INT16, [4])], ml=4)
    against_reference(m, {"x": x})


# --------------------------------------------------------------------------- trees
def _v5_forest(post: int = 0, aggregate: int = 1, membership: bool = True) -> dict:
    """Two trees over 3 features, 3 targets; tree 0 has a set-membership node."""
    modes = [6 if membership else 0, 1, 3, 0]  # MEMBER/LEQ, LT, GT, LEQ
    return dict(
        n_targets=3,
        aggregate_function=aggregate,
        post_transform=post,
        tree_roots=[0, 2],
        nodes_featureids=[0, 1, 2, 1],
        nodes_modes=numpy_helper.from_array(np.array(modes, np.uint8), "modes"),
        nodes_splits=numpy_helper.from_array(np.array([0.0, 0.5, -0.2, 1.0], np.float32), "splits"),
        nodes_truenodeids=[1, 0, 3, 2],
        nodes_trueleafs=[0, 1, 0, 1],
        nodes_falsenodeids=[1, 1, 4, 3],
        nodes_falseleafs=[1, 1, 1, 1],
        nodes_missing_value_tracks_true=[1, 0, 0, 1],
        membership_values=numpy_helper.from_array(np.array([1.0, 2.0, -1.0], np.float32), "mv")
        if membership
        else None,
        leaf_targetids=[0, 1, 2, 0, 1],
        leaf_weights=numpy_helper.from_array(
            np.array([1.0, -2.0, 0.5, 3.0, 0.25], np.float32), "lw"
        ),
    )


def _tree_feeds() -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((6, 3)).astype(np.float32)
    x[0, 0], x[1, 0], x[2, 1], x[3, 2] = 2.0, -1.0, np.nan, np.nan
    return x


@pytest.mark.parametrize("aggregate", [0, 1, 2, 3])
def test_tree_ensemble_v5(aggregate):
    x = _tree_feeds()
    attrs = {k: v for k, v in _v5_forest(0, aggregate).items() if v is not None}
    m = model(
        ml_node("TreeEnsemble", ["x"], ["y"], **attrs),
        {"x": x},
        [("y", TensorProto.FLOAT, [6, 3])],
        ml=5,
    )
    check_native(m, {"x": x}, interpret=True, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("post", [1, 2, 3])
def test_tree_ensemble_v5_post_transform(post):
    """post_transform codes as the spec numbers them (1 SOFTMAX, 2 LOGISTIC, 3 SOFTMAX_ZERO),
    against the cpu reference: onnxruntime 1.32 swaps 1 and 2 for this op."""
    x = _tree_feeds()
    attrs = {k: v for k, v in _v5_forest(post, 1, membership=False).items() if v is not None}
    m = model(
        ml_node("TreeEnsemble", ["x"], ["y"], **attrs),
        {"x": x},
        [("y", TensorProto.FLOAT, [6, 3])],
        ml=5,
    )
    against_cpu_reference(m, {"x": x}, tol=1e-5)


def _legacy(prefix: str) -> dict:
    """Two trees (ids 0, 1) of the older format, each listed root first (onnxruntime takes
    a tree's first node as its root)."""
    return dict(
        nodes_treeids=[0, 0, 0, 1, 1, 1, 1, 1],
        nodes_nodeids=[0, 1, 2, 0, 1, 2, 3, 4],
        nodes_featureids=[1, 0, 0, 0, 0, 2, 0, 0],
        nodes_modes=[
            "BRANCH_LEQ",
            "LEAF",
            "LEAF",
            "BRANCH_LT",
            "LEAF",
            "BRANCH_GTE",
            "LEAF",
            "LEAF",
        ],
        nodes_values=[0.1, 0, 0, 0.7, 0, -0.3, 0, 0],
        nodes_truenodeids=[1, 0, 0, 1, 0, 3, 0, 0],
        nodes_falsenodeids=[2, 0, 0, 2, 0, 4, 0, 0],
        nodes_missing_value_tracks_true=[0, 0, 0, 1, 0, 0, 0, 0],
        **{
            f"{prefix}_treeids": [0, 0, 1, 1, 1],
            f"{prefix}_nodeids": [1, 2, 1, 3, 4],
            f"{prefix}_ids": [0, 1, 1, 0, 1],
            f"{prefix}_weights": [0.5, 1.5, -0.75, 2.0, 0.25],
        },
    )


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
def test_tree_ensemble_regressor(aggregate):
    x = _tree_feeds()
    attrs = _legacy("target") | dict(
        n_targets=2, aggregate_function=aggregate, base_values=[0.5, -1.0]
    )
    m = model(
        ml_node("TreeEnsembleRegressor", ["x"], ["y"], **attrs),
        {"x": x},
        [("y", TensorProto.FLOAT, [6, 2])],
    )
    check_native(m, {"x": x}, interpret=True)


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_tree_ensemble_classifier(post):
    """Three labels (onnxruntime scores two-label ensembles its own way, beyond the spec)."""
    x = _tree_feeds()
    attrs = _legacy("class") | dict(
        classlabels_int64s=[10, 20, 30], post_transform=post, base_values=[0.1, 0.2, -0.1]
    )
    attrs["class_ids"] = [0, 2, 1, 0, 2]
    outs = [("label", TensorProto.INT64, [6]), ("scores", TensorProto.FLOAT, [6, 3])]
    m = model(
        ml_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], **attrs), {"x": x}, outs
    )
    check_native(m, {"x": x}, interpret=True)


def test_tree_ensemble_classifier_binary_votes():
    """Two labels, votes for class 1 only: onnxruntime's thresholded binary case."""
    x = _tree_feeds()
    attrs = _legacy("class") | dict(classlabels_int64s=[0, 1])
    attrs["class_ids"] = [1, 1, 1, 1, 1]
    attrs["class_weights"] = [0.2, 0.9, 0.1, 0.4, 0.7]
    outs = [("label", TensorProto.INT64, [6]), ("scores", TensorProto.FLOAT, [6, 2])]
    m = model(
        ml_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], **attrs), {"x": x}, outs
    )
    check_native(m, {"x": x}, interpret=True)


def test_probit_is_declined():
    x = _tree_feeds()
    attrs = {k: v for k, v in _v5_forest(post=4).items() if v is not None}
    m = model(
        ml_node("TreeEnsemble", ["x"], ["y"], **attrs),
        {"x": x},
        [("y", TensorProto.FLOAT, [6, 3])],
        ml=5,
    )
    with pytest.raises(UnsupportedOpError, match="PROBIT"):
        lower_model(m)


# --------------------------------------------------------------------------- TfIdfVectorizer
def _tfidf_attrs(mode: str, lo: int, hi: int, skip: int, weights: bool) -> dict:
    a = dict(
        mode=mode,
        min_gram_length=lo,
        max_gram_length=hi,
        max_skip_count=skip,
        ngram_counts=[0, 4],
        ngram_indexes=[0, 1, 2, 3, 4, 5, 6, 7],
        pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7, 2, 3],
    )
    if weights:
        a["weights"] = [0.5, 1.0, 2.0, 0.25, 1.5, 3.0, 0.75, 1.25]
    return a


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("lo,hi,skip", [(1, 1, 0), (2, 2, 0), (1, 2, 3), (2, 2, 5)])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_tfidf(mode, lo, hi, skip, dtype):
    x = np.array([[1, 1, 3, 3, 3, 7, 8, 6, 7, 5], [2, 3, 5, 4, 6, 7, 8, 6, 2, 3]], dtype)
    node = helper.make_node(
        "TfIdfVectorizer", ["x"], ["y"], **_tfidf_attrs(mode, lo, hi, skip, mode != "TF")
    )
    m = model(node, {"x": x}, [("y", TensorProto.FLOAT, [2, 8])])
    check_native(m, {"x": x}, interpret=True)


def test_tfidf_1d_short_row():
    """A 1-D input shorter than some n-grams' span: those starts simply do not exist."""
    x = np.array([5, 6, 7], np.int64)
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], **_tfidf_attrs("TF", 1, 2, 5, False))
    m = model(node, {"x": x}, [("y", TensorProto.FLOAT, [8])])
    check_native(m, {"x": x}, interpret=True)
