"""Numeric ops of the ``ai.onnx.ml`` domain (Binarizer, ArrayFeatureExtractor, LabelEncoder,
TreeEnsemble and the older TreeEnsembleRegressor/Classifier) and TfIdfVectorizer.

Everything an ML op reads from its attributes becomes a compile-time table (a weight):
the tree node table of ``torsh_gen.ops.ml`` (the reference's own parsing, so both agree on
node numbering, leaves and membership sets), LabelEncoder's sorted keys, TfIdfVectorizer's
n-gram pool. Run-time values only ever index those tables after a clamp, so no input can
make a kernel read outside a buffer. String tensors have no kernel-IR type: ops on strings
are declined.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Bin,
    Cast,
    Const,
    Expr,
    Select,
    Un,
    idx,
    logical_and,
    minimum,
)
from torsh_gen.backends.kernel.lower import (
    LowerCtx,
    LoweringDeclined,
    lowers,
    prod,
    row_major_strides,
)
from torsh_gen.backends.kernel.lower.elementwise import elementwise_nest
from torsh_gen.backends.kernel.lower.indexing import safe_index
from torsh_gen.ops import ml as ref
from torsh_gen.ops import text as ref_text

_TRANSFORMS = {"NONE": 0, "SOFTMAX": 1, "LOGISTIC": 2, "SOFTMAX_ZERO": 3, "PROBIT": 4}
_AGGREGATES = {"AVERAGE": 0, "SUM": 1, "MIN": 2, "MAX": 3}
_LEAF = 7


# --------------------------------------------------------------------------- simple ops
@lowers("Binarizer")
def lower_binarizer(ctx: LowerCtx) -> None:
    """1 where x > threshold else 0, in x's type (integers compare in float64)."""
    shape = ctx.out_shape(0)
    x, y = ctx.x(0), ctx.y(0)
    thr = float(ctx.attrs.threshold)

    def body(index: list[Expr]) -> None:
        v = x[index[1]]
        hit = (
            v > Const(thr, v.dtype)
            if v.dtype in ("f32", "f64")
            else Cast(v, "f64") > Const(thr, "f64")
        )
        y[index[0]] = Select(hit, Const(1, y.dtype), Const(0, y.dtype))

    st = row_major_strides(shape)
    elementwise_nest(ctx, shape, [st, st], body)


@lowers("ArrayFeatureExtractor")
def lower_array_feature_extractor(ctx: LowerCtx) -> None:
    """Gather along the last axis; run-time indices count negatives from the end and are
    clamped into the axis."""
    shape = ctx.in_shape(0)
    feats = shape[-1] if shape else 1
    rows = prod(shape[:-1]) if len(shape) > 1 else 1
    k = prod(ctx.in_shape(1))
    if feats == 0 or rows * k == 0:
        if prod(ctx.out_shape(0)):
            raise LoweringDeclined("ArrayFeatureExtractor from an empty axis")
        return
    kb, x, ix, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    with kb.loop(rows, kind=ctx.outer_kind(rows * k)) as r:
        with kb.loop(k) as j:
            y[r * k + j] = x[r * feats + safe_index(kb, ix[j], feats)]


# --------------------------------------------------------------------------- LabelEncoder
def _numeric(values: Any, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind in "SU":
        raise LoweringDeclined(
            f"LabelEncoder with string {what}: string tensors are not representable natively"
        )
    return arr.reshape(-1)


def _first_numeric(what: str, *candidates: Any) -> np.ndarray | None:
    """The first given attribute among ``candidates`` as a flat numeric array (every one
    is checked, so a string attribute is declined even after a numeric one)."""
    arrays = [_numeric(c, what) for c in candidates]
    return next((arr for arr in arrays if arr is not None), None)


def _label_table(a: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """Keys, values and the default of a LabelEncoder (numeric only)."""
    if a.keys_strings is not None or a.values_strings is not None:
        raise LoweringDeclined(
            "LabelEncoder with string keys or values: string tensors are not representable natively"
        )
    keys = _first_numeric("keys", a.keys_tensor, a.keys_int64s, a.keys_floats)
    values = _first_numeric("values", a.values_tensor, a.values_int64s, a.values_floats)
    if keys is None or values is None or keys.size != values.size:
        raise LoweringDeclined("LabelEncoder without matching keys and values")
    if a.default_tensor is not None:
        default = _numeric(a.default_tensor, "default")[0]
    else:
        default = a.default_int64 if values.dtype.kind in "iu" else a.default_float
    return keys, values, default


@lowers("LabelEncoder")
def lower_label_encoder(ctx: LowerCtx) -> None:
    """A binary search of the element in the sorted keys (a compile-time table; the last of
    duplicate keys wins, as in a dict); NaN keys match NaN elements."""
    if ctx.attrs.get("classes_strings") is not None:
        raise LoweringDeclined(
            "LabelEncoder-1 maps strings: string tensors are not representable natively"
        )
    keys, values, default = _label_table(ctx.attrs)
    x, y = ctx.x(0), ctx.y(0)
    table: dict[Any, Any] = {}
    nan_value = None
    for k, v in zip(keys.tolist(), values.tolist()):
        if isinstance(k, float) and math.isnan(k):
            nan_value = v
        else:
            table[k] = v
    order = sorted(table)
    n = len(order)
    kb = ctx.kb
    key_buf = ctx.weight(np.asarray(order or [0]), x.dtype)
    val_buf = ctx.weight(np.asarray([table[k] for k in order] or [default]), y.dtype)
    steps = max(1, n.bit_length())

    def body(index: list[Expr]) -> None:
        v = kb.let(x[index[1]], "lk")
        lo, hi = kb.local("i64", idx(0), "lo"), kb.local("i64", idx(n), "hi")
        with kb.loop(steps, kind="rolled"):
            mid = kb.let(Bin("shr", lo + hi, idx(1)), "mid")
            active = kb.let(lo < hi, "act")
            less = kb.let(key_buf[minimum(mid, idx(max(n - 1, 0)))] < v, "less")
            kb.assign(lo, Select(logical_and(active, less), mid + 1, lo))
            kb.assign(hi, Select(logical_and(active, Un("not", less)), mid, hi))
        pos = kb.let(minimum(lo, idx(max(n - 1, 0))), "pos")
        found = Bin("eq", key_buf[pos], v) if n else Const(False, "bool")
        out = Select(found, val_buf[pos], Const(default, y.dtype))
        if nan_value is not None:
            out = Select(Bin("ne", v, v), Const(nan_value, y.dtype), out)
        y[index[0]] = out

    shape = ctx.out_shape(0)
    st = row_major_strides(shape)
    elementwise_nest(ctx, shape, [st, st], body)


# --------------------------------------------------------------------------- trees
def _forest(ctx: LowerCtx) -> tuple[Any, int, int, np.ndarray | float]:
    """The node table, the number of targets, the aggregate code and the base values."""
    a, op = ctx.attrs, ctx.node.op_type
    if op == "TreeEnsemble":
        if a.nodes_modes is not None and np.asarray(a.nodes_modes).dtype.kind in "SUO":
            raise LoweringDeclined("TreeEnsemble node modes must be a numeric tensor")
        return ref._forest_v5(a), int(a.n_targets), int(a.aggregate_function), 0.0
    if op == "TreeEnsembleRegressor":
        spec = ref.TreeEnsembleRegressor()
        return (
            spec._forest(a, int(a.n_targets)),
            int(a.n_targets),
            _AGGREGATES[a.aggregate_function],
            spec._base(a),
        )
    if a.classlabels_strings:
        raise LoweringDeclined(
            "TreeEnsembleClassifier with string labels: strings are not representable natively"
        )
    spec = ref.TreeEnsembleClassifier()
    n = len(a.classlabels_int64s or [])
    return spec._forest(a, n), n, 1, spec._base(a)


def _depth(forest: Any) -> int:
    """The most steps any root needs to reach a leaf (declines cycles)."""
    best = 0
    memo: dict[int, int] = {}

    def walk(row: int, seen: frozenset) -> int:
        if forest.mode[row] == _LEAF:
            return 0
        if row in seen:
            raise LoweringDeclined("tree ensemble has a cycle")
        if row in memo:
            return memo[row]
        seen = seen | {row}
        d = 1 + max(walk(int(forest.true_next[row]), seen), walk(int(forest.false_next[row]), seen))
        memo[row] = d
        return d

    for r in forest.roots:
        best = max(best, walk(int(r), frozenset()))
    return best


def _post_kind(ctx: LowerCtx) -> int:
    p = ctx.attrs.post_transform
    kind = _TRANSFORMS[p] if isinstance(p, str) else int(p or 0)
    if kind == 4:
        raise LoweringDeclined(
            "post_transform PROBIT (no inverse error function in the kernel math)"
        )
    return kind


@lowers("TreeEnsemble", "TreeEnsembleRegressor", "TreeEnsembleClassifier")
def lower_trees(ctx: LowerCtx) -> None:
    """Every row walks every tree through the node table (a fixed number of steps: the
    deepest path; a leaf stays put), adds its leaf's votes, then aggregates, adds base
    values and applies post_transform; the classifier also picks the label."""
    forest, n_targets, aggregate, base = _forest(ctx)
    kind = _post_kind(ctx)
    shape = ctx.in_shape(0)
    n_rows = shape[0] if len(shape) > 1 else 1
    feats = prod(shape) // max(n_rows, 1)
    if forest.feature.size and int(forest.feature.max()) >= max(feats, 1):
        raise LoweringDeclined(f"a tree node reads feature {int(forest.feature.max())} of {feats}")
    if n_targets < 1 or n_rows == 0:
        raise LoweringDeclined("tree ensemble without targets or rows")
    tables = _TreeTables(ctx, forest)
    kb = ctx.kb
    acc = ctx.scratch("f64", n_rows * n_targets)
    hits = ctx.scratch("i32", n_rows * n_targets)
    base_arr = np.broadcast_to(np.asarray(base, np.float64), (n_targets,))
    steps = _depth(forest)
    work = n_rows * len(forest.roots) * max(steps, 1)
    with kb.loop(n_rows, kind=ctx.outer_kind(work), hint="n") as n:
        row = kb.let(n * n_targets, "row")
        with kb.loop(n_targets) as k:
            acc[row + k] = Const(0.0, "f64")
            hits[row + k] = Const(0, "i32")
        with kb.loop(len(forest.roots), kind="rolled", hint="t") as t:
            leaf = tables.walk(kb, ctx.x(0), n * feats, tables.roots[t], steps)
            tables.vote(kb, leaf, acc, hits, row, aggregate)
        with kb.loop(n_targets) as k:
            s = acc[row + k]
            if aggregate == 0:
                s = s * (1.0 / max(1, len(forest.roots)))
            if ctx.node.op_type == "TreeEnsembleRegressor":
                s = Select(hits[row + k] > 0, s + _base(ctx, base_arr, k), Const(0.0, "f64"))
            elif ctx.node.op_type == "TreeEnsembleClassifier":
                s = s + _base(ctx, base_arr, k)
            acc[row + k] = s
        winner = (
            _binary_winner(ctx, kb, acc, row)
            if ctx.node.op_type == "TreeEnsembleClassifier"
            else None
        )
        _transform(kb, acc, row, n_targets, kind)
        scores = ctx.y(1) if ctx.node.op_type == "TreeEnsembleClassifier" else ctx.y(0)
        with kb.loop(n_targets) as k:
            scores[row + k] = Cast(acc[row + k], scores.dtype)
        if ctx.node.op_type == "TreeEnsembleClassifier":
            _write_label(ctx, kb, acc, row, n, n_targets, winner)


def _base(ctx: LowerCtx, base: np.ndarray, k: Expr) -> Expr:
    """Base value of target ``k`` (a table lookup unless all are equal)."""
    if np.all(base == base[0]):
        return Const(float(base[0]), "f64")
    return ctx.weight(base, "f64")[k]


class _TreeTables:
    """The forest as kernel buffers: per-row columns, membership sets and leaf votes (CSR)."""

    def __init__(self, ctx: LowerCtx, f: Any) -> None:
        self.ctx = ctx
        self.feature = ctx.weight(f.feature.astype(np.int64), "i64")
        self.split = ctx.weight(f.split.astype(np.float64), "f64")
        self.mode = ctx.weight(f.mode.astype(np.int32), "i32")
        self.true_next = ctx.weight(f.true_next.astype(np.int64), "i64")
        self.false_next = ctx.weight(f.false_next.astype(np.int64), "i64")
        self.missing = ctx.weight(f.missing_true.astype(np.uint8), "u8")
        self.roots = ctx.weight(np.asarray(f.roots, np.int64), "i64")
        self.modes_used = {int(m) for m in np.unique(f.mode)}
        self.members = None
        if f.members:
            start = np.zeros(len(f.mode) + 1, np.int64)
            values: list[float] = []
            for r in range(len(f.mode)):
                start[r] = len(values)
                values.extend(f.members.get(r, []))
            start[-1] = len(values)
            self.members = (
                ctx.weight(start, "i64"),
                ctx.weight(np.asarray(values or [0.0], np.float64), "f64"),
            )
        rows, targets = np.nonzero(f.leaf_hits)
        vstart = np.searchsorted(rows, np.arange(len(f.mode) + 1)).astype(np.int64)
        self.vstart = ctx.weight(vstart, "i64")
        self.vtarget = ctx.weight(
            targets.astype(np.int64) if targets.size else np.zeros(1, np.int64), "i64"
        )
        w = f.leaf_weights[rows, targets] if targets.size else np.zeros(1)
        self.vweight = ctx.weight(w.astype(np.float64), "f64")

    def walk(self, kb: KernelBuilder, x: BufferRef, base: Expr, root: Expr, steps: int) -> Expr:
        """The leaf row reached from ``root`` by the sample at ``base``."""
        cur = kb.local("i64", root, "cur")
        with kb.loop(steps, kind="rolled", hint="d"):
            m = kb.let(self.mode[cur], "m")
            v = kb.let(Cast(x[base + self.feature[cur]], "f64"), "fv")
            cond = self._compare(kb, m, v, cur)
            cond = Select(Bin("ne", v, v), Bin("ne", self.missing[cur], Const(0, "u8")), cond)
            nxt = Select(cond, self.true_next[cur], self.false_next[cur])
            kb.assign(cur, Select(Bin("eq", m, Const(_LEAF, "i32")), cur, nxt))
        return cur

    def _compare(self, kb: KernelBuilder, m: Expr, v: Expr, cur: Expr) -> Expr:
        s = kb.let(self.split[cur], "sp")
        tests = {0: v <= s, 1: v < s, 2: v >= s, 3: v > s, 4: Bin("eq", v, s), 5: Bin("ne", v, s)}
        if self.members is not None:
            start, vals = self.members
            found = kb.local("bool", Const(False, "bool"), "in")
            with kb.loop(start[cur + 1], start=start[cur], kind="rolled") as j:
                kb.assign(found, Bin("or", found, Bin("eq", vals[j], v)))
            tests[6] = found
        cond: Expr = Const(False, "bool")
        for code, test in tests.items():
            if code in self.modes_used:
                cond = Select(Bin("eq", m, Const(code, "i32")), test, cond)
        return kb.let(cond, "cond")

    def vote(
        self,
        kb: KernelBuilder,
        leaf: Expr,
        acc: BufferRef,
        hits: BufferRef,
        row: Expr,
        aggregate: int,
    ) -> None:
        """Add the leaf's votes to the row's targets (sum, or min/max from the first vote)."""
        with kb.loop(self.vstart[leaf + 1], start=self.vstart[leaf], kind="rolled") as j:
            at = kb.let(row + self.vtarget[j], "at")
            w = kb.let(self.vweight[j], "w")
            old = kb.let(acc[at], "old")
            if aggregate in (0, 1):
                new = old + w
            else:
                best = Bin("min" if aggregate == 2 else "max", old, w)
                new = Select(Bin("eq", hits[at], Const(0, "i32")), w, best)
            acc[at] = new
            hits[at] = hits[at] + Const(1, "i32")


def _exp64(kb: KernelBuilder, v: Expr) -> Expr:
    return Cast(km.exp(kb, Cast(v, "f32")), "f64")


def _transform(kb: KernelBuilder, acc: BufferRef, row: Expr, n: int, kind: int) -> None:
    """post_transform of one row of scores, in place (transcendentals in float32)."""
    if kind == 0:
        return
    if kind == 2:
        with kb.loop(n) as k:
            acc[row + k] = Cast(km.sigmoid(kb, Cast(acc[row + k], "f32")), "f64")
        return
    zero_aware = kind == 3
    peak = kb.local("f64", Const(-math.inf, "f64"), "pk")
    with kb.loop(n) as k:
        v = acc[row + k]
        take = Bin("ne", v, Const(0.0, "f64")) if zero_aware else Const(True, "bool")
        kb.assign(peak, Select(logical_and(take, v > peak), v, peak))
    shift = kb.let(Select(Bin("eq", peak, Const(-math.inf, "f64")), Const(0.0, "f64"), peak), "sh")
    total = kb.local("f64", Const(0.0, "f64"), "tot")
    with kb.loop(n) as k:
        v = kb.let(acc[row + k], "v")
        e = _exp64(kb, v - shift)
        e = Select(Bin("ne", v, Const(0.0, "f64")), e, Const(0.0, "f64")) if zero_aware else e
        e = kb.let(e, "e")
        acc[row + k] = e
        kb.assign(total, total + e)
    safe = kb.let(Select(total > 0.0, total, Const(1.0, "f64")), "den")
    with kb.loop(n) as k:
        acc[row + k] = acc[row + k] / safe


def _binary_winner(ctx: LowerCtx, kb: KernelBuilder, acc: BufferRef, row: Expr) -> Expr | None:
    """The label index of the two-label case where only class 1 gets votes (decided on the
    raw score, as onnxruntime does), else None."""
    a = ctx.attrs
    if len(a.classlabels_int64s or []) != 2 or {int(c) for c in a.class_ids or []} != {1}:
        return None
    w = a.class_weights_as_tensor
    w = np.asarray(a.class_weights if w is None else w)
    threshold = 0.5 if (w >= 0).all() else 0.0
    return kb.let(Select(acc[row + 1] > threshold, idx(1), idx(0)), "win")


def _write_label(
    ctx: LowerCtx,
    kb: KernelBuilder,
    acc: BufferRef,
    row: Expr,
    n: Expr,
    k: int,
    winner: Expr | None,
) -> None:
    """Output 0: the label of the winning (first highest) score."""
    labels = ctx.weight(np.asarray(ctx.attrs.classlabels_int64s, np.int64), "i64")
    if winner is None:
        best = kb.local("i64", idx(0), "arg")
        with kb.loop(k, start=1) as j:
            kb.assign(best, Select(acc[row + j] > acc[row + best], j, best))
        winner = best
    ctx.y(0)[n] = Cast(labels[winner], ctx.y(0).dtype)


# --------------------------------------------------------------------------- TfIdfVectorizer
def _pool_by_length(a: Any) -> dict[int, list[tuple[tuple[int, ...], int]]]:
    """Pool n-grams grouped by length: (tokens, output column) pairs."""
    if a.pool_strings is not None:
        raise LoweringDeclined(
            "TfIdfVectorizer over strings: string tensors are not representable natively"
        )
    pool = [int(v) for v in a.pool_int64s or []]
    indexes = list(a.ngram_indexes)
    table = ref_text._ngram_table(pool, list(a.ngram_counts), indexes)
    grams: dict[int, list[tuple[tuple[int, ...], int]]] = {}
    for gram, entry in table.items():
        grams.setdefault(len(gram), []).append((gram, int(indexes[entry])))
    return grams


@lowers("TfIdfVectorizer")
def lower_tfidf(ctx: LowerCtx) -> None:
    """Count every pool n-gram at every start and skip (the pool of each length is a table
    compared token by token), then weight the counts by mode."""
    a = ctx.attrs
    x, y = ctx.x(0), ctx.y(0)
    if x.dtype not in ("i32", "i64"):
        raise LoweringDeclined(f"TfIdfVectorizer input of type {x.dtype}")
    shape = ctx.in_shape(0)
    rows, length = (shape[0], shape[1]) if len(shape) == 2 else (1, prod(shape))
    width = prod(ctx.out_shape(0)) // max(rows, 1)
    grams = _pool_by_length(a)
    kb = ctx.kb
    with kb.loop(rows * width, kind="vector", width=ctx.vector_width(rows * width)) as i:
        y[i] = Const(0.0, "f32")
    with kb.loop(rows, kind=ctx.outer_kind(rows * length * max(len(grams), 1)), hint="r") as r:
        for n in range(max(1, int(a.min_gram_length)), int(a.max_gram_length) + 1):
            if n in grams:
                _count(ctx, kb, r * length, r * width, length, n, grams[n])
    _weigh(ctx, kb, rows, width)


def _count(
    ctx: LowerCtx, kb: KernelBuilder, xbase: Expr, ybase: Expr, length: int, n: int, grams: list
) -> None:
    """Add one to the column of each pool n-gram of length ``n`` that appears."""
    x, y = ctx.x(0), ctx.y(0)
    toks = ctx.weight(np.asarray([t for g, _ in grams for t in g], np.int64), "i64")
    cols = ctx.weight(np.asarray([c for _, c in grams], np.int64), "i64")
    skips = int(ctx.attrs.max_skip_count) + 1 if n > 1 else 1
    for skip in range(skips):
        stride = skip + 1
        starts = length - (n - 1) * stride
        if starts <= 0:
            continue
        with kb.loop(starts, hint="s") as s:
            with kb.loop(len(grams), kind="rolled", hint="g") as g:
                match: Expr = Const(True, "bool")
                for j in range(n):
                    tok = Cast(x[xbase + s + j * stride], "i64")
                    match = logical_and(match, Bin("eq", tok, toks[g * n + j]))
                with kb.if_(match):
                    at = kb.let(ybase + cols[g], "col")
                    y[at] = y[at] + Const(1.0, "f32")


def _weigh(ctx: LowerCtx, kb: KernelBuilder, rows: int, width: int) -> None:
    """TF keeps counts; IDF is min(count, 1) * weight; TFIDF count * weight."""
    a = ctx.attrs
    mode = a.mode
    if mode == "TF":
        return
    if mode not in ("IDF", "TFIDF"):
        raise LoweringDeclined(f"TfIdfVectorizer mode {mode}")
    indexes = list(a.ngram_indexes)
    w = np.ones(width, np.float32)
    if a.weights:
        w[indexes] = np.asarray(a.weights, np.float32)
    wbuf = ctx.weight(w, "f32")
    y = ctx.y(0)
    with kb.loop(rows) as r:
        with kb.loop(width, kind="vector", width=ctx.vector_width(width)) as c:
            v = y[r * width + c]
            v = minimum(v, Const(1.0, "f32")) if mode == "IDF" else v
            y[r * width + c] = v * wbuf[c]
