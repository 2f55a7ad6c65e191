"""The remaining ai.onnx.ml ops → Relax: TreeEnsembleRegressor/Classifier (the legacy
tree forms), LinearClassifier, LinearRegressor, Normalizer, OneHotEncoder and LabelEncoder
with numeric keys and values.

The reference kernels in ``torsh_gen/ops/ml.py`` are the spec: the legacy trees are parsed
by the reference's own ``_LegacyTrees._forest`` (one node table, leaves included), so ids,
'LEAF' rows, missing-value tracking and vote tables mean here exactly what they mean to the
interpreter; this module only turns that table into TIR. Scores are computed in float64, as
the reference does, and cast to float32 at the end. String labels, keys and categories
decline: TVM has no string tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.convert import Ctx, Decline, as_str, converts
from torsh_gen.backends.tvm.ops_tensor import _c, _i64, _te
from torsh_gen.ir.graph import Node
from torsh_gen.ops import ml as ref
from torsh_gen.ops.registry import Attrs, lookup

I64, F64 = "int64", "float64"
#: Tree rows expanded into one kernel's nested branches at most (a DAG-shaped "tree" can
#: expand exponentially; real forests stay far below).
MAX_EXPANDED_ROWS = 1 << 16
#: Newton steps on erf after the closed-form first guess of erfinv (PROBIT): the guess is
#: within 2e-3, and each step squares the error, so four reach float64 precision.
ERFINV_NEWTON_STEPS = 4


def _attrs(node: Node) -> Attrs:
    """``node``'s attributes with the reference spec's defaults (one parser for both)."""
    return lookup(node.op_type, node.domain or "ai.onnx.ml").resolve_attrs(node)


def _transform(name: Any) -> int:
    """A post_transform attribute as its code (``ref._TRANSFORMS``)."""
    try:
        return ref._transform_code(name)
    except KeyError:
        raise Decline(f"unknown post_transform {name}") from None


def _rows(ctx: Ctx, x: Any, what: str) -> tuple[Any, int]:
    """``x`` as float64 [N, F], flattened as the reference's trees do (``x.reshape(N, -1)``:
    a 1-D input is N samples of one feature)."""
    from tvm import relax

    dims = ctx.shape_of(x)
    if not dims or not all(isinstance(d, int) for d in dims[1:]):
        raise Decline(f"{what} needs an input of rank >= 1 with static trailing dims")
    feats = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
    v = ctx.emit(relax.op.astype(x, F64))
    if len(dims) != 2:
        v = ctx.emit(relax.op.reshape(v, [dims[0], feats]))
    return v, feats


def _post_transform(ctx: Ctx, y: Any, kind: int) -> Any:
    """``ref._post_transform`` on [N, K] float64 scores (codes NONE, SOFTMAX, LOGISTIC,
    SOFTMAX_ZERO: softmax over the non-zero scores, zeros staying zero, PROBIT)."""
    from tvm import relax

    if kind == 0:
        return y
    if kind == 4:
        return _te(ctx, ctx.shape_of(y), lambda ts, *i: _probit(ts[0][i]), y, name="probit")
    if kind == 1:
        return ctx.emit(relax.op.nn.softmax(y, axis=1))
    one = ctx.scalar(1.0, F64)
    if kind == 2:
        return ctx.emit(relax.op.divide(one, relax.op.add(one, relax.op.exp(relax.op.negative(y)))))
    zero = ctx.scalar(0.0, F64)
    nz = ctx.emit(relax.op.not_equal(y, zero))
    peak = ctx.emit(
        relax.op.max(relax.op.where(nz, y, ctx.scalar(-np.inf, F64)), axis=[1], keepdims=True)
    )
    peak = ctx.emit(relax.op.where(relax.op.isfinite(peak), peak, zero))
    e = ctx.emit(relax.op.where(nz, relax.op.exp(relax.op.subtract(y, peak)), zero))
    total = ctx.emit(relax.op.sum(e, axis=[1], keepdims=True))
    positive = ctx.emit(relax.op.greater(total, zero))
    return ctx.emit(
        relax.op.where(positive, relax.op.divide(e, relax.op.where(positive, total, one)), zero)
    )


def _probit(s: Any) -> Any:
    """sqrt(2) erfinv(2 s - 1) in float64, infinite at and beyond the ends as the
    reference's: Winitzki's closed form (a = 0.147) as the first guess, then Newton's
    method on erf, as the reference iterates."""
    from tvm import tirx

    def f(v: float) -> Any:
        return tirx.const(v, F64)

    y = f(2.0) * s - f(1.0)
    ay = tirx.min(tirx.abs(y), f(float(np.nextafter(1.0, 0.0))))
    ln = tirx.log(f(1.0) - ay * ay)
    t = f(2.0 / (np.pi * 0.147)) + ln / f(2.0)
    x = tirx.sqrt(tirx.sqrt(t * t - ln / f(0.147)) - t)
    x = tirx.Select(y < f(0.0), -x, x)
    target = tirx.Var("target", F64)
    steps = [tirx.Var(f"x{k}", F64) for k in range(ERFINV_NEWTON_STEPS + 1)]
    inf = f(np.inf)
    last = steps[-1]
    out = tirx.Select(target <= f(-1.0), -inf, tirx.Select(target >= f(1.0), inf, last))
    # each step a Let, so the expression stays linear in the number of steps
    for prev, nxt in reversed(list(zip(steps, steps[1:]))):
        step = prev - (tirx.erf(prev) - target) / (f(2.0 / np.sqrt(np.pi)) * tirx.exp(-prev * prev))
        out = tirx.Let(nxt, step, out)
    return f(np.sqrt(2.0)) * tirx.Let(target, y, tirx.Let(steps[0], x, out))


def _argmax_labels(ctx: Ctx, scores: Any, labels: np.ndarray) -> Any:
    """``labels[argmax(scores, axis=1)]`` (first maximum, as numpy)."""
    from tvm import relax

    idx = ctx.emit(relax.op.argmax(scores, axis=1))
    return ctx.emit(relax.op.take(ctx.weight(labels), idx, axis=0))


def _int_labels(ints: Any, strings: Any, op: str) -> np.ndarray:
    if strings:
        raise Decline(f"{op} with string class labels (TVM has no string tensors)")
    labels = np.asarray(ints or [], np.int64)
    if labels.size == 0:
        raise Decline(f"{op} has no class labels")
    return labels


# -- the legacy tree ensembles -------------------------------------------------------------
def _forest(node: Node, n_targets: int) -> tuple[ref._Forest, Attrs]:
    """The reference's node table of a legacy tree node and its attributes."""
    a = _attrs(node)
    spec = lookup(node.op_type, "ai.onnx.ml")
    try:
        return spec._forest(a, n_targets), a
    except (KeyError, IndexError, ValueError, TypeError) as err:
        raise Decline(f"{node.op_type} has an inconsistent tree table ({err!s:.80})") from None


def _leaf_rows(ctx: Ctx, forest: ref._Forest, x: Any, feats: int) -> Any:
    """The leaf row each sample reaches in each tree: int64 [N, T], one TE kernel whose
    body branches over the trees' compile-time structure (``_Forest.leaves``: a NaN
    feature follows ``missing_true``, whatever the comparison says)."""
    from tvm import tirx

    mode, feature = forest.mode, forest.feature
    if np.any((mode != ref._LEAF) & ((feature >= feats) | (feature < -feats))):
        raise Decline("a tree node reads a feature beyond the input's")
    expanded = [0]

    def cond(v: Any, row: int) -> Any:
        m, s = int(mode[row]), tirx.const(float(forest.split[row]), F64)
        if m == 6:
            out = tirx.const(False, "bool")
            for value in forest.members.get(row, []):
                out = tirx.any(out, v == tirx.const(float(value), F64))
        elif 0 <= m <= 5:
            out = [v <= s, v < s, v >= s, v > s, v == s, v != s][m]
        else:
            out = tirx.const(False, "bool")
        missing = tirx.const(bool(forest.missing_true[row]), "bool")
        return tirx.Select(tirx.isnan(v), missing, out)

    def walk(xs: Any, b: Any, row: int, depth: int) -> Any:
        expanded[0] += 1
        if depth > len(mode) or expanded[0] > MAX_EXPANDED_ROWS:
            raise Decline("the forest has a cycle or expands past 65536 branches")
        if mode[row] == ref._LEAF:
            return _c(row)
        f = int(feature[row]) % feats
        v = tirx.Cast(F64, xs[b, f])
        yes = walk(xs, b, int(forest.true_next[row]), depth + 1)
        no = walk(xs, b, int(forest.false_next[row]), depth + 1)
        return tirx.if_then_else(cond(v, row), yes, no)

    def body(ts: Any, b: Any, t: Any) -> Any:
        trees = [walk(ts[0], b, int(r), 0) for r in forest.roots]
        out = trees[-1]
        for k in range(len(trees) - 2, -1, -1):
            out = tirx.if_then_else(t == k, trees[k], out)
        return out

    batch = ctx.shape_of(x)[0]
    return _te(ctx, [batch, len(forest.roots)], body, x, name="tree_leaves")


def _tree_scores(ctx: Ctx, forest: ref._Forest, leaf: Any, aggregate: int) -> tuple[Any, Any]:
    """``_Forest.scores`` and ``_Forest.hits`` from the leaf rows: [N, K] float64 scores
    and a [N, K] bool of whether any tree's leaf voted for the target."""
    from tvm import relax

    w = ctx.emit(relax.op.take(ctx.weight(forest.leaf_weights), leaf, axis=0))  # [N, T, K]
    h = ctx.emit(relax.op.take(ctx.weight(forest.leaf_hits.astype(np.float64)), leaf, axis=0))
    zero = ctx.scalar(0.0, F64)
    any_hit = ctx.emit(relax.op.greater(relax.op.max(h, axis=[1]), zero))
    if aggregate in (0, 1):
        total = ctx.emit(relax.op.sum(w, axis=[1]))
        if aggregate == 0:
            total = ctx.emit(relax.op.divide(total, ctx.scalar(max(1, forest.roots.size), F64)))
        return total, any_hit
    hit = ctx.emit(relax.op.greater(h, zero))
    fill = ctx.scalar(np.inf if aggregate == 2 else -np.inf, F64)
    picked = ctx.emit(relax.op.where(hit, w, fill))
    red = relax.op.min(picked, axis=[1]) if aggregate == 2 else relax.op.max(picked, axis=[1])
    return ctx.emit(relax.op.where(any_hit, red, zero)), any_hit


def _base(a: Attrs, n: int, op: str) -> np.ndarray | float:
    base = ref._LegacyTrees._base(a)
    if isinstance(base, np.ndarray) and base.size not in (1, n):
        raise Decline(f"{op}'s base_values hold {base.size} values for {n} targets")
    return base


def _forest_input(ctx: Ctx, node: Node) -> tuple[Any, int]:
    if not ctx.dtype(node.inputs[0]).startswith(("float", "int")):
        raise Decline(f"{node.op_type} needs a numeric input")
    return _rows(ctx, ctx.x(node.inputs[0]), node.op_type)


@converts("TreeEnsembleRegressor")
def tree_ensemble_regressor(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Aggregated leaf weights plus base_values, where some leaf voted for the target (0
    elsewhere, as onnxruntime), then post_transform; float32 [N, n_targets]."""
    from tvm import relax

    a = _attrs(node)
    n_targets = int(a.n_targets)
    agg = ref._AGGREGATES.get(a.aggregate_function)
    if agg is None or n_targets < 1:
        raise Decline(f"aggregate_function {a.aggregate_function} / n_targets {n_targets}")
    kind = _transform(a.post_transform)
    forest, _ = _forest(node, n_targets)
    x, feats = _forest_input(ctx, node)
    scores, any_hit = _tree_scores(ctx, forest, _leaf_rows(ctx, forest, x, feats), agg)
    base = _base(a, n_targets, node.op_type)
    if isinstance(base, np.ndarray):
        scores = ctx.emit(relax.op.add(scores, ctx.weight(base)))
    scores = ctx.emit(relax.op.where(any_hit, scores, ctx.scalar(0.0, F64)))
    return [ctx.emit(relax.op.astype(_post_transform(ctx, scores, kind), "float32"))]


@converts("TreeEnsembleClassifier")
def tree_ensemble_classifier(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Summed class votes plus base_values; labels by argmax of the transformed scores,
    or, with two labels and votes for class 1 only, by class 1's raw score passing 0.5
    (all weights non-negative) or 0, as the reference and onnxruntime do."""
    from tvm import relax

    a = _attrs(node)
    labels = _int_labels(a.classlabels_int64s, a.classlabels_strings, node.op_type)
    kind = _transform(a.post_transform)
    forest, _ = _forest(node, len(labels))
    x, feats = _forest_input(ctx, node)
    scores, _ = _tree_scores(ctx, forest, _leaf_rows(ctx, forest, x, feats), 1)
    base = _base(a, len(labels), node.op_type)
    if isinstance(base, np.ndarray):
        scores = ctx.emit(relax.op.add(scores, ctx.weight(base)))
    out = ctx.emit(relax.op.astype(_post_transform(ctx, scores, kind), "float32"))
    if len(labels) == 2 and {int(c) for c in a.class_ids or []} == {1}:
        weights = a.class_weights_as_tensor
        weights = np.asarray(a.class_weights if weights is None else weights)
        threshold = 0.5 if (weights >= 0).all() else 0.0
        s1 = ctx.emit(relax.op.strided_slice(scores, axes=[1], begin=[1], end=[2]))
        win = ctx.emit(relax.op.greater(relax.op.reshape(s1, [-1]), ctx.scalar(threshold, F64)))
        lab = relax.op.where(win, ctx.scalar(int(labels[1]), I64), ctx.scalar(int(labels[0]), I64))
        return [ctx.emit(lab), out]
    return [_argmax_labels(ctx, _post_transform(ctx, scores, kind), labels), out]


# -- LinearClassifier ------------------------------------------------------------------------
@converts("LinearClassifier")
def linear_classifier(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Scores X W^T + b in float64; labels by argmax after post_transform. One coefficient
    row with two labels is the binary case: label 1 where s > 0, scores [1 - p, p] with
    p = logistic(s) under LOGISTIC, else s (other transforms do not apply), as the
    reference and onnxruntime do."""
    from tvm import relax

    a = _attrs(node)
    labels = _int_labels(a.classlabels_ints, a.classlabels_strings, node.op_type)
    kind = _transform(a.post_transform)
    x = ctx.x(node.inputs[0])
    dims = ctx.shape_of(x)
    if len(dims) not in (1, 2) or not isinstance(dims[-1], int):
        raise Decline("LinearClassifier needs a 1-D or 2-D input with a static feature count")
    feats = dims[-1]
    coef = np.asarray(a.coefficients or [], np.float64)
    n_classes = coef.size // max(1, feats)
    if n_classes < 1 or coef.size != n_classes * feats:
        raise Decline("LinearClassifier's coefficients do not fit its input")
    binary = n_classes == 1 and len(labels) == 2
    if not binary and n_classes > len(labels):
        raise Decline(f"LinearClassifier has {n_classes} score rows but {len(labels)} labels")
    bias = np.asarray(a.intercepts or [0.0], np.float64)
    if bias.size not in (1, n_classes):
        raise Decline("LinearClassifier's intercepts do not fit its coefficients")
    rows = ctx.emit(relax.op.astype(x, F64))
    if len(dims) == 1:
        rows = ctx.emit(relax.op.reshape(rows, [1, feats]))
    w = ctx.weight(coef.reshape(n_classes, feats).T.copy())
    scores = ctx.emit(relax.op.add(relax.op.matmul(rows, w), ctx.weight(bias)))
    if binary:
        s = ctx.emit(relax.op.reshape(scores, [-1]))
        win = ctx.emit(relax.op.greater(s, ctx.scalar(0.0, F64)))
        lab = relax.op.where(win, ctx.scalar(int(labels[1]), I64), ctx.scalar(int(labels[0]), I64))
        p = _post_transform(ctx, scores, 2) if kind == 2 else scores
        both = relax.op.concat([relax.op.subtract(ctx.scalar(1.0, F64), p), p], axis=1)
        return [ctx.emit(lab), ctx.emit(relax.op.astype(both, "float32"))]
    scores = _post_transform(ctx, scores, kind)
    return [_argmax_labels(ctx, scores, labels), ctx.emit(relax.op.astype(scores, "float32"))]


# -- OneHotEncoder ---------------------------------------------------------------------------
@converts("OneHotEncoder")
def one_hot_encoder(ctx: Ctx, node: Node) -> Sequence[Any]:
    """A float32 one-hot vector per element on a new last axis; elements are matched as
    integers (floats truncated, as the reference's ``int(v)``). A category listed twice
    marks its last position only (the reference's dict). With zeros=0 an element in no
    category stops the model at run time, as the reference raises."""
    from tvm import relax, tirx

    a = _attrs(node)
    if a.cats_strings:
        raise Decline("OneHotEncoder with string categories (TVM has no string tensors)")
    cats = [int(c) for c in a.cats_int64s or []]
    if not cats:
        raise Decline("OneHotEncoder has no categories")
    if not ctx.dtype(node.inputs[0]).startswith(("float", "int", "uint")):
        raise Decline("OneHotEncoder needs a numeric input")
    last = {c: i for i, c in enumerate(cats)}
    live = np.asarray([last[c] == i for i, c in enumerate(cats)])
    x = ctx.x(node.inputs[0])
    dims = ctx.shape_of(x)
    table = ctx.weight(np.asarray(cats, np.int64))

    def body(ts: Any, *i: Any) -> Any:
        hit = tirx.all(_i64(ts[0][i[:-1]]) == ts[1][i[-1]], ts[2][i[-1]])
        return tirx.Select(hit, tirx.const(1.0, "float32"), tirx.const(0.0, "float32"))

    y = _te(ctx, [*dims, len(cats)], body, x, table, ctx.weight(live), name="one_hot_encoder")
    if not int(a.zeros):
        found = ctx.emit(relax.op.sum(y, axis=[len(dims)]))
        ok = ctx.emit(relax.op.min(found, axis=None))
        ctx.check(
            ctx.emit(relax.op.greater(ok, ctx.scalar(0.0, "float32"))),
            "OneHotEncoder: an input value is in no category and zeros=0",
        )
    return [y]


# -- LabelEncoder ----------------------------------------------------------------------------
def _first(*candidates: Any) -> Any:
    return next((c for c in candidates if c is not None), None)


def _label_table(node: Node) -> tuple[list[Any], np.ndarray]:
    """Distinct keys (``ref._key`` form; last value wins, as the reference's dict) and
    their values followed by the default, in the values' dtype."""
    a = _attrs(node)
    if a.keys_strings is not None or a.values_strings is not None:
        raise Decline("LabelEncoder with string keys or values (TVM has no string tensors)")
    keys = _first(
        a.keys_tensor,
        ref._attr_array(a.keys_int64s, np.int64),
        ref._attr_array(a.keys_floats, np.float32),
    )
    if keys is None or a.classes_strings is not None:
        raise Decline("LabelEncoder needs numeric keys and values")
    values, default = ref.LabelEncoder._values(a)
    if keys.dtype.kind not in "iuf" or values.dtype.kind not in "iuf":
        raise Decline("LabelEncoder with string keys or values (TVM has no string tensors)")
    table = {ref._key(k): v for k, v in zip(keys.reshape(-1), values.reshape(-1))}
    out = np.asarray([*table.values(), default]).astype(values.dtype)
    return list(table), out


@converts("LabelEncoder")
def label_encoder(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Each element's position among the keys (NaN matches a NaN key; integers and floats
    compare by value, as Python's dict does), then that position's value or the default."""
    from tvm import relax, te, tirx

    keys, values = _label_table(node)
    dt = ctx.dtype(node.inputs[0])
    if not dt.startswith(("float", "int", "uint")):
        raise Decline("LabelEncoder needs a numeric input")
    n = len(keys)
    if n == 0:
        raise Decline("LabelEncoder has no keys")
    nan_at = keys.index("__nan__") if "__nan__" in keys else n
    int_input = not dt.startswith("float")
    if int_input:  # exact: an integer equals a float key only if the key is integral
        cmp = [int(k) if not isinstance(k, str) and float(k).is_integer() else None for k in keys]
        kdt = I64
    else:
        cmp = [None if isinstance(k, str) else float(k) for k in keys]
        kdt = F64
    live = np.asarray([c is not None for c in cmp])
    karr = np.asarray([0 if c is None else c for c in cmp], np.int64 if int_input else np.float64)
    x = ctx.x(node.inputs[0])
    dims = ctx.shape_of(x)

    def fn(xs: Any, ks: Any, ok: Any) -> Any:
        def body(*i: Any) -> Any:
            r = te.reduce_axis((0, n), "k")
            v = tirx.Cast(kdt, xs[i])
            pos = tirx.Select(tirx.all(ok[r], v == ks[r]), _i64(r), _c(n))
            return te.min(pos, axis=r)

        return te.compute(dims, body, name="label_encoder_pos")

    pos = ctx.emit_te(fn, x, ctx.weight(karr), ctx.weight(live))
    if not int_input and nan_at < n:
        pos = _te(
            ctx,
            dims,
            lambda ts, *i: tirx.Select(tirx.isnan(ts[0][i]), _c(nan_at), ts[1][i]),
            x,
            pos,
            name="label_encoder_nan",
        )
    y = ctx.emit(relax.op.take(ctx.weight(values), pos, axis=0))
    want = ctx.dtype(node.outputs[0])
    return [y if str(values.dtype) == want else ctx.emit(relax.op.astype(y, want))]


# -- LinearRegressor, Normalizer (ai.onnx.ml) ------------------------------------------------
@converts("LinearRegressor")
def linear_regressor(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Y = X W^T + b in float64 (W of ``targets`` coefficient rows), post_transform (any
    the reference takes), float32 out; 1-D X is one row."""
    from tvm import relax

    x = ctx.x(node.inputs[0])
    dims = ctx.shape_of(x)
    if len(dims) not in (1, 2) or not isinstance(dims[-1], int):
        raise Decline("LinearRegressor needs a 1-D or 2-D input with a static feature count")
    targets = int(node.attr("targets", 1))
    coef = np.asarray(node.attr("coefficients") or [], np.float64)
    if targets < 1 or coef.size != targets * dims[-1]:
        raise Decline("LinearRegressor's coefficients do not fit its input and targets")
    rows = ctx.emit(relax.op.astype(x, "float64"))
    if len(dims) == 1:
        rows = ctx.emit(relax.op.reshape(rows, [1, dims[0]]))
    y = ctx.emit(relax.op.matmul(rows, ctx.weight(coef.reshape(targets, -1).T.copy())))
    bias = node.attr("intercepts")
    if bias:
        y = ctx.emit(relax.op.add(y, ctx.weight(np.asarray(bias, np.float64))))
    y = _post_transform(ctx, y, _transform(as_str(node.attr("post_transform", "NONE"))))
    return [ctx.emit(relax.op.astype(y, "float32"))]


@converts("Normalizer")
def normalizer(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Each row divided by its MAX, L1 or L2 norm in float64 (rows whose divisor is 0 stay
    as they are), float32 out; 1-D X is one row."""
    from tvm import relax

    x = ctx.x(node.inputs[0])
    dims = ctx.shape_of(x)
    if len(dims) not in (1, 2):
        raise Decline("Normalizer needs a 1-D or 2-D input")
    v = ctx.emit(relax.op.astype(x, "float64"))
    if len(dims) == 1:
        v = ctx.emit(relax.op.reshape(v, [1, dims[0]]))
    norm = as_str(node.attr("norm", "MAX"))
    if norm == "MAX":
        d = relax.op.max(v, axis=[1], keepdims=True)
    elif norm == "L1":
        d = relax.op.sum(relax.op.abs(v), axis=[1], keepdims=True)
    elif norm == "L2":
        d = relax.op.sqrt(relax.op.sum(relax.op.multiply(v, v), axis=[1], keepdims=True))
    else:
        raise Decline(f"Normalizer norm {norm}")
    d = ctx.emit(d)
    zero = ctx.emit(relax.op.equal(d, ctx.scalar(0.0, "float64")))
    y = ctx.emit(relax.op.divide(v, relax.op.where(zero, ctx.scalar(1.0, "float64"), d)))
    y = ctx.emit(relax.op.astype(y, "float32"))
    return [ctx.emit(relax.op.reshape(y, dims)) if len(dims) == 1 else y]
