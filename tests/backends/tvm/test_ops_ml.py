"""TVM-backend converters of ops_ml (TreeEnsembleRegressor/Classifier, LinearClassifier,
OneHotEncoder, LabelEncoder) against onnxruntime, which implements ai.onnx.ml."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as P
from onnx import helper

from tests.backends.tvm.helpers import check_tvm, tvm_session
from torsh_gen.errors import TorshGenError

pytest.importorskip("tvm")

F, D, I64 = P.FLOAT, P.DOUBLE, P.INT64
ML = "ai.onnx.ml"
#: Comparison modes. On a NaN feature of a node with missing_value_tracks_true=0 the spec
#: (and our reference) takes the false branch; onnxruntime takes the true one for
#: BRANCH_NEQ (NaN != s), so trees fed NaNs leave NEQ out and NEQ is tested without NaNs.
MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ"]


def _model(
    op: str, x: tuple[int, list[Any]], outs: list[tuple[str, int]], ml: int = 3, **attrs: Any
) -> onnx.ModelProto:
    """A one-node ai.onnx.ml model over input ``x`` (elem type, shape)."""
    node = helper.make_node(op, ["x"], [n for n, _ in outs], domain=ML, **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", x[0], x[1])],
        [helper.make_tensor_value_info(n, t, None) for n, t in outs],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ML, ml)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _trees(
    rng: np.random.Generator,
    n_trees: int,
    depth: int,
    feats: int,
    n_out: int,
    prefix: str,
    modes: list[str] = MODES,
) -> dict[str, Any]:
    """Random full trees in the legacy attribute layout: node ids other than the root's 0
    shuffled within each tree (so ids are looked up, not assumed in order), splits drawn
    from ``modes``, leaves voting for one or two targets with signed weights."""
    a: dict[str, list[Any]] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_modes",
            "nodes_values",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            f"{prefix}_treeids",
            f"{prefix}_nodeids",
            f"{prefix}_ids",
            f"{prefix}_weights",
        )
    }
    for t in range(n_trees):
        size = 2 ** (depth + 1) - 1
        ids = np.concatenate([[0], 1 + rng.permutation(size - 1)])  # the root is node 0
        for k in range(size):
            leaf = k >= size // 2
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(int(ids[k]))
            a["nodes_featureids"].append(0 if leaf else int(rng.integers(feats)))
            a["nodes_modes"].append("LEAF" if leaf else modes[int(rng.integers(len(modes)))])
            a["nodes_values"].append(0.0 if leaf else float(rng.integers(-2, 3)) / 2)
            a["nodes_truenodeids"].append(0 if leaf else int(ids[2 * k + 1]))
            a["nodes_falsenodeids"].append(0 if leaf else int(ids[2 * k + 2]))
            a["nodes_missing_value_tracks_true"].append(int(rng.integers(2)))
            if leaf:
                for target in rng.choice(n_out, size=min(n_out, 2), replace=False):
                    a[f"{prefix}_treeids"].append(t)
                    a[f"{prefix}_nodeids"].append(int(ids[k]))
                    a[f"{prefix}_ids"].append(int(target))
                    a[f"{prefix}_weights"].append(float(rng.normal()))
    return a


def _features(rng: np.random.Generator, n: int, feats: int, nan: bool = True) -> np.ndarray:
    """Values on the splits' half-step grid (so EQ/NEQ and ties matter), with NaNs."""
    x = (rng.integers(-3, 4, size=(n, feats)) / 2).astype(np.float32)
    if nan:
        x[rng.random((n, feats)) < 0.1] = np.nan
    return x


@pytest.mark.parametrize(
    "aggregate",
    [
        "SUM",
        "MAX",
        pytest.param("AVERAGE", marks=pytest.mark.slow),
        pytest.param("MIN", marks=pytest.mark.slow),
    ],
)
def test_tree_ensemble_regressor(aggregate: str) -> None:
    """Random trees over three targets: each aggregate, base_values, NaN tracking."""
    rng = np.random.default_rng(1)
    a = _trees(rng, 3, 3, 4, 3, "target")
    model = _model(
        "TreeEnsembleRegressor",
        (F, [None, 4]),
        [("y", F)],
        n_targets=3,
        aggregate_function=aggregate,
        base_values=[0.5, -1.0, 2.0],
        **a,
    )
    check_tvm(model, {"x": _features(rng, 40, 4)}, rtol=1e-5, atol=1e-5)


def test_tree_ensemble_regressor_neq() -> None:
    """BRANCH_NEQ among the modes, without NaNs (see MODES)."""
    rng = np.random.default_rng(5)
    a = _trees(rng, 2, 3, 2, 2, "target", [*MODES, "BRANCH_NEQ"])
    model = _model("TreeEnsembleRegressor", (F, [None, 2]), [("y", F)], n_targets=2, **a)
    check_tvm(model, {"x": _features(rng, 30, 2, nan=False)})


def test_tree_ensemble_regressor_probit() -> None:
    """PROBIT (sqrt(2) erfinv(2 s - 1)) of averaged scores in (0, 1): against onnxruntime,
    whose erfinv is an approximation, and tightly against the reference interpreter; and
    of linear scores beyond (0, 1), where it is infinite, against the reference (there
    onnxruntime's approximation gives NaN)."""
    from torsh_gen.ops.execute import run_graph
    from torsh_gen.tools.compile import optimized_graph

    rng = np.random.default_rng(7)
    a = _trees(rng, 2, 2, 3, 1, "target")
    a["target_weights"] = [float(v) for v in rng.uniform(0.01, 0.99, len(a["target_weights"]))]
    model = _model(
        "TreeEnsembleRegressor",
        (F, [None, 3]),
        [("y", F)],
        n_targets=1,
        aggregate_function="AVERAGE",
        post_transform="PROBIT",
        **a,
    )
    x = _features(rng, 30, 3)
    got = check_tvm(model, {"x": x}, rtol=1e-3, atol=1e-3)[0]
    graph = optimized_graph(model.SerializeToString(), "cpu", "O0", backend="tvm")
    np.testing.assert_allclose(got, run_graph(graph, {"x": x})[0], rtol=1e-6, atol=1e-6)
    assert np.ptp(got) > 1.0
    # linear scores run past (0, 1): PROBIT is infinite there, and labels still agree
    model = _model(
        "LinearClassifier",
        (F, [None, 3]),
        [("label", I64), ("p", F)],
        coefficients=[float(v) for v in rng.normal(scale=0.4, size=9)],
        intercepts=[0.5, 0.4, 0.6],
        classlabels_ints=[1, 2, 3],
        post_transform="PROBIT",
    )
    x = rng.normal(size=(30, 3)).astype(np.float32)
    got = tvm_session(model).run({"x": x})
    graph = optimized_graph(model.SerializeToString(), "cpu", "O0", backend="tvm")
    want = run_graph(graph, {"x": x})
    np.testing.assert_array_equal(got["label"], want[0])
    np.testing.assert_allclose(got["p"], want[1], rtol=1e-6, atol=1e-6)
    assert np.isinf(want[1]).any() and np.isfinite(want[1]).any()


@pytest.mark.parametrize(
    "post", ["NONE", "SOFTMAX", "SOFTMAX_ZERO", pytest.param("LOGISTIC", marks=pytest.mark.slow)]
)
def test_tree_ensemble_classifier(post: str) -> None:
    """Four int64 labels, one or four trees over a double input, base_values, each
    buildable post_transform."""
    rng = np.random.default_rng(2)
    a = _trees(rng, 1 if post == "NONE" else 4, 2, 3, 4, "class")
    base = [0.0, 0.0, 0.0, 0.0] if post == "SOFTMAX_ZERO" else [0.1, -0.2, 0.3, 0.0]
    model = _model(
        "TreeEnsembleClassifier",
        (D, [None, 3]),
        [("label", I64), ("p", F)],
        classlabels_int64s=[7, -3, 11, 0],
        post_transform=post,
        base_values=base,
        **a,
    )
    check_tvm(model, {"x": _features(rng, 30, 3).astype(np.float64)})


@pytest.mark.parametrize("signed", [False, True])
def test_tree_ensemble_classifier_binary(signed: bool) -> None:
    """Two labels and votes for class 1 only: the label comes from class 1's raw score
    against 0.5 (non-negative weights) or 0 (some negative), as onnxruntime."""
    rng = np.random.default_rng(3)
    a = _trees(rng, 2, 2, 2, 1, "class")
    a["class_ids"] = [1] * len(a["class_ids"])
    w = np.asarray(a["class_weights"])
    a["class_weights"] = [float(v) for v in (w if signed else np.abs(w) / 4)]
    model = _model(
        "TreeEnsembleClassifier",
        (F, [None, 2]),
        [("label", I64), ("p", F)],
        classlabels_int64s=[4, 9],
        **a,
    )
    got = check_tvm(model, {"x": _features(rng, 30, 2)})
    assert set(got[0].tolist()) == {4, 9}  # both sides of the threshold are exercised


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC"])
@pytest.mark.parametrize("classes", [1, 3])
def test_linear_classifier(classes: int, post: str) -> None:
    """Multi-class scores and labels; one coefficient row with two labels is the binary
    [1 - p, p] case."""
    rng = np.random.default_rng(4)
    labels = [5, 2] if classes == 1 else [10, 20, 30]
    model = _model(
        "LinearClassifier",
        (F, [None, 4]),
        [("label", I64), ("p", F)],
        coefficients=[float(v) for v in rng.normal(size=classes * 4)],
        intercepts=[float(v) for v in rng.normal(size=classes)],
        classlabels_ints=labels,
        post_transform=post,
    )
    got = check_tvm(model, {"x": rng.normal(size=(25, 4)).astype(np.float32)})
    assert len(set(got[0].tolist())) > 1


def test_one_hot_encoder() -> None:
    """int64 and float inputs (floats truncated to the category), unknown values all-zero,
    a category listed twice marking its last position only."""
    x = np.array([[3, 1, 8], [-4, 3, 0]], np.int64)
    model = _model("OneHotEncoder", (I64, [2, 3]), [("y", F)], cats_int64s=[1, 3, -4, 1])
    check_tvm(model, {"x": x})
    model = _model("OneHotEncoder", (D, [2, 3]), [("y", F)], cats_int64s=[1, 3, -4])
    check_tvm(model, {"x": np.array([[3.0, 1.5, 8.0], [-4.0, 3.0, 0.0]])})


def test_one_hot_encoder_zeros_0_stops_on_unknown() -> None:
    """zeros=0: known values encode as with zeros=1; an unknown one stops the run."""
    model = _model("OneHotEncoder", (I64, [4]), [("y", F)], cats_int64s=[1, 3, 5], zeros=0)
    check_tvm(model, {"x": np.array([5, 1, 3, 1], np.int64)})
    with pytest.raises(Exception, match="in no category and zeros=0"):
        tvm_session(model).run({"x": np.array([5, 2, 3, 1], np.int64)})


def test_label_encoder_numeric() -> None:
    """int64 -> float (unknown keys get default_float) and float -> int64 (default_int64),
    opset 2's list attributes."""
    model = _model(
        "LabelEncoder",
        (I64, [2, 3]),
        [("y", F)],
        ml=2,
        keys_int64s=[3, -1, 7],
        values_floats=[0.5, -2.0, 9.0],
        default_float=4.25,
    )
    check_tvm(model, {"x": np.array([[7, 3, 0], [-1, 7, 100]], np.int64)})
    model = _model(
        "LabelEncoder",
        (F, [5]),
        [("y", I64)],
        ml=2,
        keys_floats=[1.5, -2.0, 0.25],
        values_int64s=[1, 3, 4],
        default_int64=-9,
    )
    check_tvm(model, {"x": np.array([1.5, np.nan, -2.0, 0.0, 0.25], np.float32)})


def test_label_encoder_nan_key_and_duplicates_follow_the_reference() -> None:
    """Our reference matches a NaN element to a NaN key and lets a repeated key's last
    value win (a dict); onnxruntime matches no NaN and keeps the first value, so the
    oracle here is the reference interpreter."""
    from torsh_gen.ops.execute import run_graph
    from torsh_gen.tools.compile import optimized_graph

    model = _model(
        "LabelEncoder",
        (F, [5]),
        [("y", I64)],
        ml=2,
        keys_floats=[1.5, float("nan"), -2.0, 1.5],
        values_int64s=[1, 2, 3, 4],
        default_int64=-9,
    )
    x = np.array([1.5, np.nan, -2.0, 0.0, 3.0], np.float32)
    got = tvm_session(model).run({"x": x})["y"]
    graph = optimized_graph(model.SerializeToString(), "cpu", "O0", backend="tvm")
    np.testing.assert_array_equal(got, run_graph(graph, {"x": x})[0])
    assert got.tolist() == [4, 2, 3, -9, -9]


def test_label_encoder_tensor_attributes() -> None:
    """ai.onnx.ml 4's keys_tensor/values_tensor/default_tensor (int64 -> double)."""
    model = _model(
        "LabelEncoder",
        (I64, [4]),
        [("y", D)],
        ml=4,
        keys_tensor=helper.make_tensor("k", I64, [3], [10, 20, 30]),
        values_tensor=helper.make_tensor("v", D, [3], [0.25, 0.5, 0.75]),
        default_tensor=helper.make_tensor("d", D, [1], [-1.0]),
    )
    check_tvm(model, {"x": np.array([30, 10, 15, 20], np.int64)})


@pytest.mark.parametrize(
    ("op", "attrs", "reason"),
    [
        (
            "LinearClassifier",
            {"coefficients": [1.0, 2.0], "classlabels_strings": ["a", "b"]},
            "LinearClassifier with string class labels",
        ),
        ("OneHotEncoder", {"cats_strings": ["a", "b"]}, "OneHotEncoder with string categories"),
        (
            "TreeEnsembleClassifier",
            {
                **{f"nodes_{k}": [0] for k in ("treeids", "nodeids", "featureids")},
                **{f"nodes_{k}": [0] for k in ("truenodeids", "falsenodeids")},
                **{f"class_{k}": [0] for k in ("treeids", "nodeids", "ids")},
                "nodes_modes": ["LEAF"],
                "nodes_values": [0.0],
                "class_weights": [1.0],
                "classlabels_strings": ["a", "b"],
            },
            "TreeEnsembleClassifier with string class labels",
        ),
        (
            "LabelEncoder",
            {"keys_floats": [1.0], "values_strings": ["a"]},
            "LabelEncoder with string keys or values",
        ),
    ],
)
def test_declined_with_one_line(op: str, attrs: dict[str, Any], reason: str) -> None:
    """String labels, categories or values are refused with the reason, in one line."""
    model = _model(
        op, (F, [3, 2]), [("y", I64), ("p", F)] if "Classifier" in op else [("y", F)], **attrs
    )
    with pytest.raises(TorshGenError, match=reason) as err:
        tvm_session(model)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_tree_ensemble_larger_forests() -> None:
    """A regressor of 30 depth-6 trees over 12 features and 5 targets, and a classifier of
    the same shape over 6 labels, on 500 rows."""
    rng = np.random.default_rng(6)
    a = _trees(rng, 30, 6, 12, 5, "target")
    model = _model(
        "TreeEnsembleRegressor",
        (F, [None, 12]),
        [("y", F)],
        n_targets=5,
        aggregate_function="AVERAGE",
        **a,
    )
    check_tvm(model, {"x": _features(rng, 500, 12)}, rtol=1e-5, atol=1e-5)
    a = _trees(rng, 30, 6, 12, 6, "class")
    model = _model(
        "TreeEnsembleClassifier",
        (F, [None, 12]),
        [("label", I64), ("p", F)],
        classlabels_int64s=list(range(6)),
        post_transform="SOFTMAX",
        **a,
    )
    check_tvm(model, {"x": _features(rng, 500, 12)})


def test_linear_regressor_takes_every_post_transform() -> None:
    """LinearRegressor shares the trees' post_transform (it declined SOFTMAX_ZERO and
    PROBIT before): SOFTMAX_ZERO against onnxruntime; PROBIT against the reference
    interpreter (onnxruntime's erfinv is an approximation, NaN outside (0, 1))."""
    from torsh_gen.ops.execute import run_graph
    from torsh_gen.tools.compile import optimized_graph

    rng = np.random.default_rng(9)
    attrs = {"coefficients": [float(v) for v in rng.normal(scale=0.1, size=12)], "intercepts": [0.1, 0.0, 0.3], "targets": 3}
    x = rng.uniform(0.0, 0.5, (5, 4)).astype(np.float32)
    x[1, :] = 0.0  # the middle target's score is then exactly 0: SOFTMAX_ZERO keeps it 0
    check_tvm(_model("LinearRegressor", (F, [None, 4]), [("y", F)], post_transform="SOFTMAX_ZERO", **attrs), {"x": x})
    model = _model("LinearRegressor", (F, [None, 4]), [("y", F)], post_transform="PROBIT", **attrs)
    got = tvm_session(model).run({"x": x})["y"]
    graph = optimized_graph(model.SerializeToString(), "cpu", "O0", backend="tvm")
    np.testing.assert_allclose(got, run_graph(graph, {"x": x})[0], rtol=1e-6, atol=1e-6)
    assert np.isinf(got).any() and np.isfinite(got).any()
