"""Spectral, string, random, ai.onnx.ml and training kernels against onnxruntime.

One-node models run through onnxruntime and ``torsh_gen.backend``; results must agree in
shape, dtype and value. Random ops are checked for shapes, dtypes, ranges and seeding;
the training ops (absent from onnxruntime's default build) against the spec's formulas.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.ops.onenode import check_one_node, run_one_node

RNG = np.random.default_rng(3)
ML = "ai.onnx.ml"
TRAINING = "ai.onnx.preview.training"

ours = partial(run_one_node, opset=20)
check = partial(check_one_node, opset=20, rtol=1e-5, atol=1e-5)


def _i64(v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def _strs(values: Any) -> np.ndarray:
    return np.array(values, dtype=object)


# --------------------------------------------------------------------------- spectral
@pytest.mark.parametrize("axis", [1, 2, -2, -3])
@pytest.mark.parametrize("inverse", [0, 1])
def test_dft_complex_axes(axis: int, inverse: int) -> None:
    x = RNG.standard_normal((2, 5, 6, 2)).astype(np.float32)
    check("DFT", [x, None, _i64(axis)], inverse=inverse, atol=1e-4)


@pytest.mark.parametrize("length", [4, 9])
def test_dft_length_truncates_and_pads(length: int) -> None:
    x = RNG.standard_normal((3, 7, 1)).astype(np.float32)
    check("DFT", [x, _i64(length), _i64(1)], atol=1e-4)


def test_dft_onesided_real_and_irfft() -> None:
    x = RNG.standard_normal((2, 8, 1)).astype(np.float64)
    spec = check("DFT", [x, None, _i64(1)], onesided=1)[0]
    assert spec.shape == (2, 5, 2)
    back = ours("DFT", [spec, None, _i64(1)], onesided=1, inverse=1)[0]
    np.testing.assert_allclose(back, x, atol=1e-10)


def test_dft_opset17_axis_attribute() -> None:
    x = RNG.standard_normal((2, 4, 6, 1)).astype(np.float32)
    got = check("DFT", [x], opset=17, axis=2, atol=1e-4)[0]
    ref = np.fft.fft(x[..., 0], axis=2)
    np.testing.assert_allclose(got[..., 1], ref.imag, atol=1e-4)


@pytest.mark.parametrize("onesided", [0, 1])
def test_stft_with_window(onesided: int) -> None:
    sig = RNG.standard_normal((2, 64, 1)).astype(np.float32)
    window = np.hanning(16).astype(np.float32)
    check("STFT", [sig, _i64(6), window], opset=17, onesided=onesided, atol=1e-4)


def test_stft_frame_length_without_window() -> None:
    sig = RNG.standard_normal((1, 50, 1)).astype(np.float32)
    check("STFT", [sig, _i64(8), None, _i64(10)], opset=17, atol=1e-4)


@pytest.mark.parametrize("name", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows(name: str, periodic: int) -> None:
    check(name, [np.array(12, np.int64)], opset=17, periodic=periodic)
    check(name, [np.array(7, np.int32)], opset=17, periodic=periodic,
          output_datatype=TensorProto.DOUBLE)


def test_mel_weight_matrix() -> None:
    ins = [np.array(10, np.int64), np.array(64, np.int64), np.array(16000, np.int64),
           np.array(20.0, np.float32), np.array(7000.0, np.float32)]
    got = check("MelWeightMatrix", ins, opset=17)[0]
    assert got.shape == (33, 10) and got.dtype == np.float32


# --------------------------------------------------------------------------- strings
def test_string_concat_broadcast() -> None:
    check("StringConcat", [_strs([["a", "é"], ["", "xyz"]]), _strs(["!", "?"])])
    check("StringConcat", [_strs("left"), _strs(["1", "2", ""])])


@pytest.mark.parametrize("delimiter", [None, "", ",", "ab"])
@pytest.mark.parametrize("maxsplit", [None, 0, 1])
def test_string_split(delimiter: str | None, maxsplit: int | None) -> None:
    x = _strs([["a,b,,c", "  one two  three "], ["abab", ""]])
    subs, counts = ours("StringSplit", [x], n_outputs=2, delimiter=delimiter, maxsplit=maxsplit)
    for idx in np.ndindex(x.shape):
        n = -1 if maxsplit is None else maxsplit
        want = x[idx].split(delimiter or None, n) if x[idx] else []
        assert counts[idx] == len(want)
        assert list(subs[idx]) == want + [""] * (subs.shape[-1] - len(want))
    if delimiter == ",":  # onnxruntime agrees on an ordinary delimiter
        check("StringSplit", [x], n_outputs=2, delimiter=delimiter, maxsplit=maxsplit)


def test_regex_full_match() -> None:
    x = _strs([["abc123", "abc"], ["123", "ABC123"]])
    check("RegexFullMatch", [x], pattern=r"[a-z]+\d*")


@pytest.mark.parametrize("case", ["LOWER", "UPPER", "NONE"])
@pytest.mark.parametrize("sensitive", [0, 1])
def test_string_normalizer(case: str, sensitive: int) -> None:
    x = _strs([["Monday", "tuesday", "MONDAY", "wed"]])
    got = ours("StringNormalizer", [x], opset=10, case_change_action=case,
               is_case_sensitive=sensitive, stopwords=["monday"])[0]
    kept = ["Monday", "tuesday", "MONDAY", "wed"] if sensitive else ["tuesday", "wed"]
    if sensitive:
        kept.remove("Monday".lower()) if "monday" in kept else None
    fix = {"LOWER": str.lower, "UPPER": str.upper, "NONE": str}[case]
    assert got.shape == (1, len(kept)) and got.tolist() == [[fix(w) for w in kept]]
    empty = ours("StringNormalizer", [_strs(["a", "A"])], opset=10, stopwords=["a"])[0]
    assert empty.shape == (1,) and empty.tolist() == [""]


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
def test_tfidf_int_pool(mode: str) -> None:
    x = RNG.integers(2, 9, size=(3, 12)).astype(np.int64)
    check("TfIdfVectorizer", [x], opset=9, mode=mode, min_gram_length=1, max_gram_length=3,
          max_skip_count=2, ngram_counts=[0, 4, 8], ngram_indexes=[6, 0, 1, 2, 3, 4, 8],
          pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 5, 6, 7], weights=[0.5, 1, 2, 3, 4, 5, 6])


def test_tfidf_string_pool_1d() -> None:
    x = _strs(["a", "b", "a", "c", "b", "a"])
    check("TfIdfVectorizer", [x], opset=9, mode="TF", min_gram_length=1, max_gram_length=2,
          max_skip_count=1, ngram_counts=[0, 3], ngram_indexes=[0, 1, 2, 3, 4],
          pool_strings=["a", "b", "c", "a", "b", "b", "a"])


# --------------------------------------------------------------------------- random
def test_random_shapes_dtypes_and_seed() -> None:
    u = ours("RandomUniform", [], shape=[3, 4], low=2.0, high=3.0, seed=1.5)[0]
    assert u.shape == (3, 4) and u.dtype == np.float32 and ((u >= 2) & (u < 3)).all()
    again = ours("RandomUniform", [], shape=[3, 4], low=2.0, high=3.0, seed=1.5)[0]
    np.testing.assert_array_equal(u, again)
    n = ours("RandomNormal", [], shape=[1000], mean=5.0, scale=0.1,
             dtype=TensorProto.DOUBLE)[0]
    assert n.dtype == np.float64 and abs(n.mean() - 5.0) < 0.05
    like = np.zeros((2, 5), np.float16)
    assert ours("RandomUniformLike", [like])[0].dtype == np.float16
    r = ours("RandomNormalLike", [like], dtype=TensorProto.FLOAT)[0]
    assert r.shape == (2, 5) and r.dtype == np.float32


def test_bernoulli_and_multinomial() -> None:
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    np.testing.assert_array_equal(ours("Bernoulli", [p], opset=15)[0], p)
    b = ours("Bernoulli", [p], opset=15, dtype=TensorProto.INT32)[0]
    assert b.dtype == np.int32
    logits = np.log(np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]], np.float32) + 1e-30)
    m = ours("Multinomial", [logits], opset=15, sample_size=50, seed=3.0)[0]
    assert m.shape == (2, 50) and m.dtype == np.int32
    assert (m[0] == 1).all() and set(np.unique(m[1])) <= {0, 2}


# --------------------------------------------------------------------------- ai.onnx.ml
def test_label_encoder_variants() -> None:
    x = _strs(["a", "zz", "c"])
    check("LabelEncoder", [x], domain=ML, domain_opset=2, keys_strings=["a", "b", "c"],
          values_floats=[0.5, 1.5, 2.5], default_float=9.0)
    f = np.array([1.0, np.nan, 3.0], np.float32)
    got = ours("LabelEncoder", [f], domain=ML, domain_opset=2, keys_floats=[1.0, float("nan")],
               values_strings=["one", "nan"])[0]
    assert got.tolist() == ["one", "nan", "_Unused"]
    ints = np.array([[3, 7], [1, 3]], np.int64)
    check("LabelEncoder", [ints], domain=ML, domain_opset=2, keys_int64s=[3, 1],
          values_int64s=[30, 10])


def test_tree_ensemble_regressor_matches_ort() -> None:
    x = RNG.standard_normal((6, 3)).astype(np.float32)
    attrs = dict(
        nodes_treeids=[0, 0, 0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 3, 4, 0, 1, 2],
        nodes_featureids=[0, 1, 0, 0, 0, 2, 0, 0],
        nodes_modes=["BRANCH_LEQ", "BRANCH_GT", "LEAF", "LEAF", "LEAF", "BRANCH_LT", "LEAF",
                     "LEAF"],
        nodes_values=[0.1, -0.3, 0, 0, 0, 0.5, 0, 0],
        nodes_truenodeids=[1, 2, 0, 0, 0, 1, 0, 0], nodes_falsenodeids=[4, 3, 0, 0, 0, 2, 0, 0],
        target_treeids=[0, 0, 0, 1, 1, 1], target_nodeids=[2, 3, 4, 1, 2, 2],
        target_ids=[0, 1, 0, 0, 1, 0], target_weights=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        n_targets=2, base_values=[0.25, -0.5],
    )
    for agg in ["SUM", "AVERAGE", "MIN", "MAX"]:
        check("TreeEnsembleRegressor", [x], domain=ML, domain_opset=3, aggregate_function=agg,
              **attrs)
    check("TreeEnsembleRegressor", [x], domain=ML, domain_opset=3, post_transform="LOGISTIC",
          **attrs)


def test_tree_ensemble_classifier_matches_ort() -> None:
    x = RNG.standard_normal((5, 2)).astype(np.float32)
    check("TreeEnsembleClassifier", [x], n_outputs=2, domain=ML, domain_opset=3,
          nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[1, 0, 0],
          nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_values=[0.0, 0, 0],
          nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
          class_treeids=[0, 0, 0], class_nodeids=[1, 2, 2], class_ids=[0, 1, 2],
          class_weights=[1.0, 0.4, 0.6], classlabels_int64s=[10, 20, 30],
          post_transform="SOFTMAX")


def test_tree_ensemble_v5_member_and_missing() -> None:
    f = TensorProto.FLOAT
    got = ours(
        "TreeEnsemble", [np.array([[np.nan], [2.0], [5.0]], np.float32)], domain=ML,
        domain_opset=5, n_targets=1, aggregate_function=1, tree_roots=[0],
        nodes_modes=helper.make_tensor("m", TensorProto.UINT8, (2,), [6, 3]),
        nodes_featureids=[0, 0], nodes_splits=helper.make_tensor("s", f, (2,), [0.0, 4.0]),
        nodes_truenodeids=[0, 1], nodes_trueleafs=[1, 1], nodes_falsenodeids=[1, 2],
        nodes_falseleafs=[0, 1], nodes_missing_value_tracks_true=[1, 0],
        membership_values=helper.make_tensor("mv", f, (2,), [2.0, 9.0]),
        leaf_targetids=[0, 0, 0], leaf_weights=helper.make_tensor("w", f, (3,), [1, 2, 3]),
    )[0]
    np.testing.assert_array_equal(got, np.array([[1], [1], [2]], np.float32))


def test_simple_ml_transforms() -> None:
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    check("Binarizer", [x], domain=ML, threshold=0.2)
    check("ArrayFeatureExtractor", [x, np.array([2, 0], np.int64)], domain=ML)
    check("Scaler", [x], domain=ML, offset=[0.1, 0.2, 0.3], scale=[2.0, 3.0, 4.0])
    for norm in ["MAX", "L1", "L2"]:
        check("Normalizer", [x], domain=ML, norm=norm)
    check("OneHotEncoder", [np.array([[1, 5], [3, 1]], np.int64)], domain=ML,
          cats_int64s=[1, 3, 4])
    check("OneHotEncoder", [_strs(["b", "q", "a"])], domain=ML, cats_strings=["a", "b"])
    check("LinearRegressor", [x], domain=ML, coefficients=[0.0, 1, 2, 3, 4, 5], intercepts=[1.0, -1],
          targets=2)


@pytest.mark.parametrize("transform", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_linear_classifier(transform: str) -> None:
    x = RNG.standard_normal((5, 2)).astype(np.float32)
    check("LinearClassifier", [x], n_outputs=2, domain=ML, coefficients=[1.0, -2, 0.5, 3, -1, 1],
          intercepts=[0.1, 0.2, -0.3], classlabels_ints=[4, 5, 6], post_transform=transform)
    check("LinearClassifier", [x], n_outputs=2, domain=ML, coefficients=[1.0, -2], intercepts=[0.1],
          classlabels_strings=["no", "yes"], post_transform=transform)


# --------------------------------------------------------------------------- training
def test_adam_two_tensors_bias_corrected() -> None:
    r, t = np.array(0.1, np.float32), np.array(3, np.int64)
    xs = [RNG.standard_normal(s).astype(np.float32) for s in [(2,), (2, 3)]]
    gs = [RNG.standard_normal(x.shape).astype(np.float32) for x in xs]
    vs = [RNG.standard_normal(x.shape).astype(np.float32) for x in xs]
    hs = [np.abs(RNG.standard_normal(x.shape)).astype(np.float32) for x in xs]
    got = ours("Adam", [r, t, *xs, *gs, *vs, *hs], n_outputs=6, domain=TRAINING, alpha=0.9,
               beta=0.99, epsilon=1e-6, norm_coefficient=0.01, norm_coefficient_post=0.1)
    for i in range(2):
        g = 0.01 * xs[i] + gs[i]
        v = 0.9 * vs[i] + 0.1 * g
        h = 0.99 * hs[i] + 0.01 * g * g
        rate = 0.1 * np.sqrt(1 - 0.99**3) / (1 - 0.9**3)
        x_new = 0.9 * (xs[i] - rate * v / (np.sqrt(h) + 1e-6))
        for out, want in zip(got[i::2], [x_new, v, h]):
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, want, rtol=1e-5)


def test_adagrad_and_nesterov() -> None:
    r, t = np.array(0.5, np.float32), np.array(2, np.int64)
    x, g, h = (np.array([1.0, -2.0], np.float32) for _ in range(3))
    got = ours("Adagrad", [r, t, x, g, h], n_outputs=2, domain=TRAINING, decay_factor=0.5,
               epsilon=1e-3)
    np.testing.assert_allclose(got[1], h + g * g)
    np.testing.assert_allclose(got[0], x - 0.25 * g / (np.sqrt(h + g * g) + 1e-3), rtol=1e-6)
    v = np.array([0.5, 0.5], np.float32)
    got = ours("Momentum", [r, t, x, g, v], n_outputs=2, domain=TRAINING, alpha=0.9, beta=0.1,
               mode="nesterov", norm_coefficient=0.0)
    v_new = 0.9 * v + 0.1 * g
    np.testing.assert_allclose(got[1], v_new, rtol=1e-6)
    np.testing.assert_allclose(got[0], x - 0.5 * (g + 0.9 * v_new), rtol=1e-6)


@pytest.mark.parametrize("weights", [[0.4, -0.6], [0.4, 0.6]])
@pytest.mark.parametrize("transform", ["NONE", "LOGISTIC"])
def test_tree_ensemble_classifier_binary(weights: list[float], transform: str) -> None:
    x = RNG.standard_normal((6, 2)).astype(np.float32)
    check("TreeEnsembleClassifier", [x], n_outputs=2, domain=ML, domain_opset=3,
          nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[1, 0, 0],
          nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_values=[0.0, 0, 0],
          nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
          class_treeids=[0, 0], class_nodeids=[1, 2], class_ids=[1, 1],
          class_weights=weights, classlabels_int64s=[10, 20], post_transform=transform)
