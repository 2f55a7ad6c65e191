"""Classical ML ops of the ``ai.onnx.ml`` domain: LabelEncoder, TreeEnsemble (and the older
TreeEnsembleRegressor/Classifier), ArrayFeatureExtractor, Binarizer, Normalizer, Scaler,
OneHotEncoder, LinearRegressor and LinearClassifier.

All tree ops share one evaluator (``_Forest``): every tree node, interior or leaf, is a row
of a node table, and all rows of the batch walk all trees at once with numpy indexing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torsh_gen.ops.registry import (
    FLOAT,
    FLOATS,
    INT,
    INTS,
    STRING,
    STRINGS,
    TENSOR,
    OpSpec,
    RunContext,
    op,
)

_ML = "ai.onnx.ml"
_LEAF = 7  # node mode code for a leaf in the shared node table
_MODE_CODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3,
               "BRANCH_EQ": 4, "BRANCH_NEQ": 5, "BRANCH_MEMBER": 6, "LEAF": _LEAF}
_AGGREGATES = {"AVERAGE": 0, "SUM": 1, "MIN": 2, "MAX": 3}
_TRANSFORMS = {"NONE": 0, "SOFTMAX": 1, "LOGISTIC": 2, "SOFTMAX_ZERO": 3, "PROBIT": 4}


# --------------------------------------------------------------------------- post transforms
def _erfinv(y: np.ndarray) -> np.ndarray:
    """Inverse error function by Newton's method on math.erf (numpy has none)."""

    def one(v: float) -> float:
        if v <= -1.0:
            return -math.inf
        if v >= 1.0:
            return math.inf
        x = 0.0
        for _ in range(60):
            step = (math.erf(x) - v) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
            x -= step
            if abs(step) < 1e-15:
                break
        return x

    return np.vectorize(one, otypes=[np.float64])(y)


def _post_transform(scores: np.ndarray, kind: int) -> np.ndarray:
    """Apply post_transform ``kind`` (a _TRANSFORMS code) to [N, K] float64 scores."""
    if kind == 1:
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == 2:
        return 1.0 / (1.0 + np.exp(-scores))
    if kind == 3:  # softmax over the non-zero scores; zeros stay zero
        nz = scores != 0
        peak = np.where(nz, scores, -np.inf).max(axis=1, keepdims=True)
        e = np.where(nz, np.exp(scores - np.where(np.isfinite(peak), peak, 0)), 0.0)
        total = e.sum(axis=1, keepdims=True)
        return np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    if kind == 4:
        return math.sqrt(2.0) * _erfinv(2.0 * scores - 1.0)
    return scores


def _transform_code(value: Any) -> int:
    return _TRANSFORMS[value] if isinstance(value, str) else int(value or 0)


# --------------------------------------------------------------------------- tree evaluator
@dataclass
class _Forest:
    """A node table (interior nodes and leaves) and the weights each leaf adds per target."""

    feature: np.ndarray  # int64 [M]
    split: np.ndarray  # float64 [M]
    mode: np.ndarray  # int64 [M], _MODE_CODES values
    true_next: np.ndarray  # int64 [M], row of the true child
    false_next: np.ndarray  # int64 [M]
    missing_true: np.ndarray  # bool [M]
    roots: np.ndarray  # int64 [T]
    leaf_weights: np.ndarray  # float64 [M, n_targets]; zero rows for interior nodes
    leaf_hits: np.ndarray  # bool [M, n_targets]; where a leaf contributes
    members: dict[int, np.ndarray] = field(default_factory=dict)  # row -> set values

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf row reached by each sample in each tree: int64 [N, T]."""
        x = x.reshape(x.shape[0], -1).astype(np.float64)
        cur = np.broadcast_to(self.roots, (x.shape[0], self.roots.size)).copy()
        rows = np.arange(x.shape[0])[:, None]
        for _ in range(len(self.mode) + 1):
            active = self.mode[cur] != _LEAF
            if not active.any():
                return cur
            value = x[rows, self.feature[cur]]
            cond = self._compare(value, cur)
            cond = np.where(np.isnan(value), self.missing_true[cur], cond)
            nxt = np.where(cond, self.true_next[cur], self.false_next[cur])
            cur = np.where(active, nxt, cur)
        raise ValueError("tree ensemble has a cycle")

    def _compare(self, v: np.ndarray, cur: np.ndarray) -> np.ndarray:
        s, m = self.split[cur], self.mode[cur]
        with np.errstate(invalid="ignore"):
            cond = np.select(
                [m == 0, m == 1, m == 2, m == 3, m == 4, m == 5],
                [v <= s, v < s, v >= s, v > s, v == s, v != s],
                default=False,
            )
        for row, values in self.members.items():
            hit = cur == row
            if hit.any():
                cond[hit] = np.isin(v[hit], values)
        return cond

    def hits(self, x: np.ndarray) -> np.ndarray:
        """Whether any tree's leaf voted for each target: bool [N, n_targets]."""
        return self.leaf_hits[self.leaves(x)].any(axis=1)

    def scores(self, x: np.ndarray, aggregate: int) -> np.ndarray:
        """Aggregated target scores [N, n_targets] (float64) before any base values."""
        leaf = self.leaves(x)  # [N, T]
        w, hit = self.leaf_weights[leaf], self.leaf_hits[leaf]  # [N, T, K]
        if aggregate in (0, 1):
            total = w.sum(axis=1)
            return total / max(1, self.roots.size) if aggregate == 0 else total
        fill = np.inf if aggregate == 2 else -np.inf
        picked = np.where(hit, w, fill)
        out = picked.min(axis=1) if aggregate == 2 else picked.max(axis=1)
        return np.where(hit.any(axis=1), out, 0.0)


def _leaf_table(n_rows: int, n_targets: int, rows: Any, targets: Any, weights: Any) -> tuple:
    """Per-row [M, K] leaf weights (summed) and hit flags from parallel vote lists."""
    w = np.zeros((n_rows, n_targets), dtype=np.float64)
    hit = np.zeros((n_rows, n_targets), dtype=bool)
    for r, t, v in zip(rows, targets, weights):
        w[int(r), int(t)] += float(v)
        hit[int(r), int(t)] = True
    return w, hit


def _forest_v5(a: Any) -> _Forest:
    """The node table of a TreeEnsemble (ai.onnx.ml 5) node: interior rows, then leaves."""
    n_nodes, n_leaves = len(a.nodes_featureids), len(a.leaf_targetids)
    n_rows = n_nodes + n_leaves
    modes = np.full(n_rows, _LEAF, dtype=np.int64)
    modes[:n_nodes] = np.asarray(a.nodes_modes, dtype=np.int64).reshape(-1)
    pad = np.zeros(n_leaves, dtype=np.int64)

    def child(ids: Any, is_leaf: Any) -> np.ndarray:
        ids = np.asarray(ids, np.int64) + n_nodes * np.asarray(is_leaf, np.int64)
        return np.concatenate([ids, pad])

    missing = np.zeros(n_rows, dtype=bool)
    if a.nodes_missing_value_tracks_true is not None:
        missing[:n_nodes] = np.asarray(a.nodes_missing_value_tracks_true, bool)
    splits = np.zeros(n_rows, dtype=np.float64)
    splits[:n_nodes] = np.asarray(a.nodes_splits, np.float64).reshape(-1)
    members: dict[int, np.ndarray] = {}
    if a.membership_values is not None:
        sets = _split_on_nan(np.asarray(a.membership_values, np.float64).reshape(-1))
        for row, values in zip(np.flatnonzero(modes == 6), sets):
            members[int(row)] = values
    leaf_rows = np.arange(n_leaves) + n_nodes
    w, hit = _leaf_table(n_rows, int(a.n_targets), leaf_rows, a.leaf_targetids,
                         np.asarray(a.leaf_weights, np.float64).reshape(-1))
    return _Forest(
        feature=np.concatenate([np.asarray(a.nodes_featureids, np.int64), pad]),
        split=splits, mode=modes,
        true_next=child(a.nodes_truenodeids, a.nodes_trueleafs),
        false_next=child(a.nodes_falsenodeids, a.nodes_falseleafs),
        missing_true=missing, roots=np.asarray(a.tree_roots, np.int64),
        leaf_weights=w, leaf_hits=hit, members=members,
    )


def _split_on_nan(values: np.ndarray) -> list[np.ndarray]:
    """[1, 2, nan, 3, nan] -> [[1, 2], [3]]."""
    sets, current = [], []
    for v in values:
        if np.isnan(v):
            sets.append(np.asarray(current, np.float64))
            current = []
        else:
            current.append(v)
    if current:
        sets.append(np.asarray(current, np.float64))
    return sets


@op("TreeEnsemble", since=5, domain=_ML)
class TreeEnsemble(OpSpec):
    """Tree ensemble over [N, F] inputs: leaves add weights to targets, then aggregate."""

    attrs = {
        "aggregate_function": INT(1), "leaf_targetids": INTS(required=True),
        "leaf_weights": TENSOR(required=True), "membership_values": TENSOR(),
        "n_targets": INT(), "nodes_falseleafs": INTS(required=True),
        "nodes_falsenodeids": INTS(required=True), "nodes_featureids": INTS(required=True),
        "nodes_hitrates": TENSOR(), "nodes_missing_value_tracks_true": INTS(),
        "nodes_modes": TENSOR(required=True), "nodes_splits": TENSOR(required=True),
        "nodes_trueleafs": INTS(required=True), "nodes_truenodeids": INTS(required=True),
        "post_transform": INT(0), "tree_roots": INTS(required=True),
    }
    flops_per_element = 16

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        scores = _forest_v5(a).scores(x, int(a.aggregate_function))
        return _post_transform(scores, int(a.post_transform)).astype(x.dtype)


class _LegacyTrees(OpSpec):
    """Shared parsing of TreeEnsembleRegressor/Classifier (ids per tree, 'LEAF' nodes)."""

    vote_prefix = "target"  # "class" for the classifier
    flops_per_element = 16

    def _forest(self, a: Any, n_targets: int) -> _Forest:
        trees, ids = list(a.nodes_treeids), list(a.nodes_nodeids)
        row_of = {(int(t), int(i)): r for r, (t, i) in enumerate(zip(trees, ids))}
        n = len(ids)
        modes = np.asarray([_MODE_CODES[m] for m in a.nodes_modes], dtype=np.int64)

        def child(kids: Any) -> np.ndarray:
            return np.asarray([row_of.get((int(t), int(k)), r) if modes[r] != _LEAF else r
                               for r, (t, k) in enumerate(zip(trees, kids))], np.int64)

        values = a.nodes_values_as_tensor if a.nodes_values_as_tensor is not None else (
            a.nodes_values or [0.0] * n)
        missing = np.zeros(n, dtype=bool)
        if a.nodes_missing_value_tracks_true:
            missing[:] = np.asarray(a.nodes_missing_value_tracks_true, bool)
        p = self.vote_prefix
        weights = getattr(a, f"{p}_weights_as_tensor")
        if weights is None:
            weights = getattr(a, f"{p}_weights")
        vote_rows = [row_of[(int(t), int(i))] for t, i in
                     zip(getattr(a, f"{p}_treeids"), getattr(a, f"{p}_nodeids"))]
        w, hit = _leaf_table(n, n_targets, vote_rows, getattr(a, f"{p}_ids"),
                             np.asarray(weights, np.float64).reshape(-1))
        first: dict[int, int] = {}
        for r, t in enumerate(trees):
            first.setdefault(int(t), row_of.get((int(t), 0), r))
        return _Forest(
            feature=np.asarray(a.nodes_featureids, np.int64),
            split=np.asarray(values, np.float64).reshape(-1), mode=modes,
            true_next=child(a.nodes_truenodeids), false_next=child(a.nodes_falsenodeids),
            missing_true=missing, roots=np.asarray([first[t] for t in sorted(first)], np.int64),
            leaf_weights=w, leaf_hits=hit,
        )

    @staticmethod
    def _base(a: Any) -> np.ndarray | float:
        base = a.base_values_as_tensor if a.base_values_as_tensor is not None else a.base_values
        return 0.0 if base is None or len(base) == 0 else np.asarray(base, np.float64).reshape(-1)


_LEGACY_TREE_ATTRS = {
    "base_values": FLOATS(), "base_values_as_tensor": TENSOR(),
    "nodes_falsenodeids": INTS(), "nodes_featureids": INTS(), "nodes_hitrates": FLOATS(),
    "nodes_hitrates_as_tensor": TENSOR(), "nodes_missing_value_tracks_true": INTS(),
    "nodes_modes": STRINGS(), "nodes_nodeids": INTS(), "nodes_treeids": INTS(),
    "nodes_truenodeids": INTS(), "nodes_values": FLOATS(), "nodes_values_as_tensor": TENSOR(),
    "post_transform": STRING("NONE"),
}


@op("TreeEnsembleRegressor", since=1, domain=_ML)
class TreeEnsembleRegressor(_LegacyTrees):
    """Deprecated regressor form; output float32 [N, n_targets]."""

    attrs = {**_LEGACY_TREE_ATTRS, "aggregate_function": STRING("SUM"), "n_targets": INT(1),
             "target_ids": INTS(), "target_nodeids": INTS(), "target_treeids": INTS(),
             "target_weights": FLOATS(), "target_weights_as_tensor": TENSOR()}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        forest = self._forest(a, int(a.n_targets))
        scores = forest.scores(x, _AGGREGATES[a.aggregate_function])
        # As onnxruntime: a target no leaf voted for stays 0, without its base value.
        scores = np.where(forest.hits(x), scores + self._base(a), 0.0)
        return _post_transform(scores, _transform_code(a.post_transform)).astype(np.float32)


@op("TreeEnsembleClassifier", since=1, domain=_ML)
class TreeEnsembleClassifier(_LegacyTrees):
    """Deprecated classifier form: summed class votes, labels by argmax. With two labels and
    votes for class 1 only, the label is class 1 where its score passes 0.5 (all weights
    non-negative) or 0 (otherwise), as in onnxruntime."""

    vote_prefix = "class"
    attrs = {**_LEGACY_TREE_ATTRS, "class_ids": INTS(), "class_nodeids": INTS(),
             "class_treeids": INTS(), "class_weights": FLOATS(),
             "class_weights_as_tensor": TENSOR(), "classlabels_int64s": INTS(),
             "classlabels_strings": STRINGS()}

    def run(self, ctx: RunContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = ctx.attrs
        labels = _labels(a.classlabels_strings, a.classlabels_int64s)
        scores = self._forest(a, len(labels)).scores(x, 1) + self._base(a)
        kind = _transform_code(a.post_transform)
        if len(labels) == 2 and {int(c) for c in a.class_ids} == {1}:
            weights = a.class_weights_as_tensor
            weights = np.asarray(a.class_weights if weights is None else weights)
            threshold = 0.5 if (weights >= 0).all() else 0.0
            winner = (scores[:, 1] > threshold).astype(np.int64)
            return labels[winner], _post_transform(scores, kind).astype(np.float32)
        scores = _post_transform(scores, kind)
        return labels[np.argmax(scores, axis=1)], scores.astype(np.float32)


def _labels(strings: Any, ints: Any) -> np.ndarray:
    if strings:
        out = np.empty(len(strings), dtype=object)
        out[:] = list(strings)
        return out
    return np.asarray(ints or [], dtype=np.int64)


# --------------------------------------------------------------------------- encoders
def _key(v: Any) -> Any:
    """A dict key for one element: str for strings, float (NaN as one key) or int."""
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, str):
        return v
    if isinstance(v, (float, np.floating)):
        return "__nan__" if math.isnan(v) else float(v)
    return int(v)


def _attr_array(values: Any, dtype: Any) -> np.ndarray | None:
    if values is None:
        return None
    if dtype is object:
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out
    return np.asarray(values, dtype=dtype)


@op("LabelEncoder", since=2, domain=_ML)
class LabelEncoder(OpSpec):
    """Map each element through keys_* -> values_* (lists or 1-D tensors); else default_*."""

    attrs = {
        "default_float": FLOAT(-0.0), "default_int64": INT(-1), "default_string": STRING("_Unused"),
        "default_tensor": TENSOR(), "keys_floats": FLOATS(), "keys_int64s": INTS(),
        "keys_strings": STRINGS(), "keys_tensor": TENSOR(), "values_floats": FLOATS(),
        "values_int64s": INTS(), "values_strings": STRINGS(), "values_tensor": TENSOR(),
    }
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        keys = next(k for k in (a.keys_tensor, _attr_array(a.keys_strings, object),
                                _attr_array(a.keys_int64s, np.int64),
                                _attr_array(a.keys_floats, np.float32)) if k is not None)
        values, default = self._values(a)
        table = {_key(k): v for k, v in zip(keys.reshape(-1), values.reshape(-1))}
        out = np.empty(x.shape, dtype=values.dtype)
        flat = out.reshape(-1)
        for i, v in enumerate(x.reshape(-1)):
            flat[i] = table.get(_key(v), default)
        return out

    @staticmethod
    def _values(a: Any) -> tuple[np.ndarray, Any]:
        if a.values_tensor is not None:
            values = a.values_tensor
        elif a.values_strings is not None:
            values = _attr_array(a.values_strings, object)
        elif a.values_int64s is not None:
            values = _attr_array(a.values_int64s, np.int64)
        else:
            values = _attr_array(a.values_floats, np.float32)
        if a.default_tensor is not None:
            return values, a.default_tensor.reshape(-1)[0]
        if values.dtype == object:
            return values, a.default_string
        if values.dtype.kind in "iu":
            return values, a.default_int64
        return values, a.default_float


@op("LabelEncoder", since=1, domain=_ML)
class LabelEncoder1(OpSpec):
    """First LabelEncoder: strings <-> their positions in ``classes_strings``."""

    attrs = {"classes_strings": STRINGS([]), "default_int64": INT(-1),
             "default_string": STRING("_Unused")}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        classes = list(a.classes_strings)
        if x.dtype == object:
            pos = {c: i for i, c in enumerate(classes)}
            flat = [pos.get(_key(v), a.default_int64) for v in x.reshape(-1)]
            return np.asarray(flat, dtype=np.int64).reshape(x.shape)
        out = np.empty(x.shape, dtype=object)
        flat_out = out.reshape(-1)
        for i, v in enumerate(x.reshape(-1)):
            flat_out[i] = classes[int(v)] if 0 <= int(v) < len(classes) else a.default_string
        return out


@op("OneHotEncoder", since=1, domain=_ML)
class OneHotEncoder(OpSpec):
    """One float32 one-hot vector per element over ``cats_*``, on a new last axis."""

    attrs = {"cats_int64s": INTS(), "cats_strings": STRINGS(), "zeros": INT(1)}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        cats = list(a.cats_strings) if a.cats_strings else [int(c) for c in a.cats_int64s or []]
        pos = {c: i for i, c in enumerate(cats)}
        out = np.zeros(x.shape + (len(cats),), dtype=np.float32)
        for idx in np.ndindex(x.shape):
            v = x[idx]
            k = _key(v) if x.dtype == object else int(v)
            if k in pos:
                out[idx + (pos[k],)] = 1.0
            elif not a.zeros:
                raise ValueError(f"OneHotEncoder: category {v!r} not found")
        return out


# --------------------------------------------------------------------------- simple transforms
@op("ArrayFeatureExtractor", since=1, domain=_ML)
class ArrayFeatureExtractor(OpSpec):
    """Gather along the last axis; a 1-D input gives a [1, len(Y)] output."""

    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        idx = indices.reshape(-1).astype(np.int64)
        if x.ndim == 1:
            return x[idx].reshape(1, -1)
        return np.take(x, idx, axis=-1)


@op("Binarizer", since=1, domain=_ML)
class Binarizer(OpSpec):
    """1 where x > threshold, else 0, in the input's type."""

    attrs = {"threshold": FLOAT(0.0)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        return (x > ctx.attrs.threshold).astype(x.dtype)


@op("Scaler", since=1, domain=_ML)
class Scaler(OpSpec):
    """(x - offset) * scale, as float32; offset/scale per feature or one for all."""

    attrs = {"offset": FLOATS(), "scale": FLOATS()}
    flops_per_element = 2

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        offset = np.asarray(ctx.attrs.offset or [0.0], np.float32)
        scale = np.asarray(ctx.attrs.scale or [1.0], np.float32)
        return ((x.astype(np.float32) - offset) * scale).astype(np.float32)


@op("Normalizer", since=1, domain=_ML)
class Normalizer(OpSpec):
    """Row-wise MAX, L1 or L2 normalisation to float32; zero divisors leave rows unchanged."""

    attrs = {"norm": STRING("MAX")}
    flops_per_element = 3

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        v = x.astype(np.float64)
        v2 = v.reshape(1, -1) if v.ndim == 1 else v
        norm = ctx.attrs.norm
        if norm == "MAX":
            d = v2.max(axis=1, keepdims=True)
        elif norm == "L1":
            d = np.abs(v2).sum(axis=1, keepdims=True)
        else:
            d = np.sqrt((v2 * v2).sum(axis=1, keepdims=True))
        out = np.divide(v2, d, out=v2.copy(), where=d != 0)
        return out.reshape(x.shape).astype(np.float32)


def _linear(x: np.ndarray, coefficients: Any, intercepts: Any, n_out: int) -> np.ndarray:
    """x [N, F] @ W.T + b with W of shape [n_out, F] (float64)."""
    v = x.astype(np.float64).reshape(x.shape[0] if x.ndim > 1 else 1, -1)
    w = np.asarray(coefficients, np.float64).reshape(n_out, -1)
    b = np.asarray(intercepts, np.float64) if intercepts else np.zeros(n_out)
    return v @ w.T + b


@op("LinearRegressor", since=1, domain=_ML)
class LinearRegressor(OpSpec):
    """Y = X W^T + b with ``targets`` rows of coefficients, then post_transform; float32."""

    attrs = {"coefficients": FLOATS(), "intercepts": FLOATS(),
             "post_transform": STRING("NONE"), "targets": INT(1)}
    flops_per_element = 2

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        y = _linear(x, a.coefficients, a.intercepts, int(a.targets))
        return _post_transform(y, _transform_code(a.post_transform)).astype(np.float32)


@op("LinearClassifier", since=1, domain=_ML)
class LinearClassifier(OpSpec):
    """Per-class linear scores and argmax labels; one coefficient row with two labels is the
    binary case, scored as onnxruntime does: [1 - s, s] (with LOGISTIC, s = logistic(s))."""

    attrs = {"classlabels_ints": INTS(), "classlabels_strings": STRINGS(),
             "coefficients": FLOATS(required=True), "intercepts": FLOATS(),
             "multi_class": INT(0), "post_transform": STRING("NONE")}
    flops_per_element = 2

    def run(self, ctx: RunContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = ctx.attrs
        labels = _labels(a.classlabels_strings, a.classlabels_ints)
        n_rows = x.shape[1] if x.ndim > 1 else x.size
        n_classes = len(a.coefficients) // max(1, n_rows)
        scores = _linear(x, a.coefficients, a.intercepts, n_classes)
        kind = _transform_code(a.post_transform)
        if n_classes == 1 and len(labels) == 2:
            s = scores[:, 0]
            winner = (s > 0).astype(np.int64)
            p = 1.0 / (1.0 + np.exp(-s)) if kind == 2 else s
            return labels[winner], np.stack([1 - p, p], axis=1).astype(np.float32)
        scores = _post_transform(scores, kind)
        return labels[np.argmax(scores, axis=1)], scores.astype(np.float32)
