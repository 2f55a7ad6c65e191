"""String ops and n-gram counting: StringConcat, StringNormalizer, StringSplit,
RegexFullMatch and TfIdfVectorizer.

String tensors are numpy object arrays of Python ``str``; bytes elements are decoded as
UTF-8 on the way in. RegexFullMatch uses Python's ``re`` in place of RE2, which agrees on
the common syntax.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from torsh_gen.ops.registry import FLOATS, INT, INTS, STRING, STRINGS, OpSpec, RunContext, op


def _text(s: Any) -> str:
    return s.decode("utf-8") if isinstance(s, bytes) else str(s)


def _strings(x: np.ndarray) -> np.ndarray:
    """``x`` as an object array of ``str``."""
    out = np.empty(x.shape, dtype=object)
    flat = out.reshape(-1)
    for i, s in enumerate(np.asarray(x).reshape(-1)):
        flat[i] = _text(s)
    return out


@op("StringConcat", since=20)
class StringConcat(OpSpec):
    """Elementwise concatenation of two string tensors with broadcasting."""

    def run(self, ctx: RunContext, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, b = np.broadcast_arrays(_strings(x), _strings(y))
        out = np.empty(a.shape, dtype=object)
        for idx in np.ndindex(a.shape):
            out[idx] = a[idx] + b[idx]
        return out


@op("RegexFullMatch", since=20)
class RegexFullMatch(OpSpec):
    """True where the whole string matches ``pattern``."""

    attrs = {"pattern": STRING(required=True)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        rx = re.compile(ctx.attrs.pattern)
        out = np.zeros(x.shape, dtype=bool)
        for idx in np.ndindex(x.shape):
            out[idx] = rx.fullmatch(_text(x[idx])) is not None
        return out


def _split(s: str, delim: str | None, maxsplit: int) -> list[str]:
    """``str.split``, except that an empty string has no substrings (as onnxruntime)."""
    return s.split(delim, maxsplit) if s else []


@op("StringSplit", since=20)
class StringSplit(OpSpec):
    """Split on ``delimiter`` (whitespace runs when unset or empty); pad with "" to the longest.
    An empty string yields no substrings, whatever the delimiter.

    Outputs the substrings (one more axis than the input) and their counts (int64).
    """

    attrs = {"delimiter": STRING(""), "maxsplit": INT(-1)}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        delim = ctx.attrs.delimiter or None
        maxsplit = ctx.attrs.maxsplit
        maxsplit = -1 if maxsplit is None or maxsplit < 0 else int(maxsplit)
        parts = {idx: _split(_text(x[idx]), delim, maxsplit) for idx in np.ndindex(x.shape)}
        width = max((len(p) for p in parts.values()), default=0)
        subs = np.full(x.shape + (width,), "", dtype=object)
        counts = np.zeros(x.shape, dtype=np.int64)
        for idx, p in parts.items():
            counts[idx] = len(p)
            for k, s in enumerate(p):
                subs[idx + (k,)] = s
        return subs, counts


@op("StringNormalizer", since=10)
class StringNormalizer(OpSpec):
    """Drop stop words from a [C] or [1, C] tensor, then change case (locale is ignored)."""

    attrs = {
        "case_change_action": STRING("NONE"),
        "is_case_sensitive": INT(0),
        "locale": STRING(""),
        "stopwords": STRINGS([]),
    }

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        if x.ndim == 2 and x.shape[0] != 1 or x.ndim not in (1, 2):
            raise ValueError(f"StringNormalizer takes a [C] or [1, C] tensor, got {x.shape}")
        words = [_text(s) for s in x.reshape(-1)]
        stop = a.stopwords or []
        if a.is_case_sensitive:
            stopset = set(stop)
            words = [w for w in words if w not in stopset]
        else:
            stopset = {s.lower() for s in stop}
            words = [w for w in words if w.lower() not in stopset]
        action = (a.case_change_action or "NONE").upper()
        if action == "LOWER":
            words = [w.lower() for w in words]
        elif action == "UPPER":
            words = [w.upper() for w in words]
        if not words:
            words = [""]
        out = np.empty(len(words), dtype=object)
        out[:] = words
        return out.reshape(1, -1) if x.ndim == 2 else out


def _ngram_table(pool: list[Any], counts: list[int], indexes: list[int]) -> dict[tuple, int]:
    """Map each pool n-gram (a tuple) to the position of its entry in ``ngram_indexes``."""
    table: dict[tuple, int] = {}
    entry = 0
    for level, start in enumerate(counts):
        n = level + 1
        end = counts[level + 1] if level + 1 < len(counts) else len(pool)
        for pos in range(start, end, n):
            table[tuple(pool[pos : pos + n])] = entry
            entry += 1
    if entry != len(indexes):
        raise ValueError(f"pool holds {entry} n-grams but ngram_indexes has {len(indexes)}")
    return table


@op("TfIdfVectorizer", since=9)
class TfIdfVectorizer(OpSpec):
    """Count pool n-grams (with up to ``max_skip_count`` skips) per row; TF, IDF or TFIDF."""

    attrs = {
        "max_gram_length": INT(required=True),
        "max_skip_count": INT(required=True),
        "min_gram_length": INT(required=True),
        "mode": STRING(required=True),
        "ngram_counts": INTS(required=True),
        "ngram_indexes": INTS(required=True),
        "pool_int64s": INTS(),
        "pool_strings": STRINGS(),
        "weights": FLOATS(),
    }

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        if a.pool_strings is not None:
            pool: list[Any] = list(a.pool_strings)
            rows = [[_text(s) for s in r] for r in np.atleast_2d(x)]
        else:
            pool = [int(v) for v in a.pool_int64s]
            rows = [[int(v) for v in r] for r in np.atleast_2d(x)]
        indexes = list(a.ngram_indexes)
        table = _ngram_table(pool, list(a.ngram_counts), indexes)
        width = max(indexes) + 1 if indexes else 0
        counts = np.zeros((len(rows), len(indexes)), dtype=np.float64)
        for r, row in enumerate(rows):
            for entry in self._matches(row, table, a):
                counts[r, entry] += 1
        weights = np.asarray(a.weights if a.weights else [1.0] * len(indexes), np.float64)
        mode = a.mode
        if mode == "IDF":
            counts = np.minimum(counts, 1) * weights
        elif mode == "TFIDF":
            counts = counts * weights
        out = np.zeros((len(rows), width), dtype=np.float32)
        out[:, indexes] = counts
        return out if x.ndim == 2 else out[0]

    @staticmethod
    def _matches(row: list[Any], table: dict[tuple, int], a: Any) -> list[int]:
        """Pool entries of every n-gram of ``row`` (each start and skip counted once)."""
        found = []
        for n in range(max(1, a.min_gram_length), a.max_gram_length + 1):
            skips = range(a.max_skip_count + 1) if n > 1 else range(1)
            for skip in skips:
                stride = skip + 1
                for start in range(len(row) - (n - 1) * stride):
                    entry = table.get(tuple(row[start : start + (n - 1) * stride + 1 : stride]))
                    if entry is not None:
                        found.append(entry)
        return found
