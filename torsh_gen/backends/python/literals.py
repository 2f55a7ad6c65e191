"""Python source literals for compile-time data (attribute values, shapes, signatures).

Only plain data is written: numbers, strings (via ``repr``, so model strings stay data),
None, booleans and tuples/lists/dicts of those. Floats that ``repr`` cannot round-trip
as source (nan, inf) become ``float('nan')``-style calls.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def literal(value: Any) -> str:
    """Python source that evaluates to ``value`` (raises TypeError for anything else)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (np.bool_,)):
        return repr(bool(value))
    if isinstance(value, (int, np.integer)):
        return repr(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return "float('nan')"
        if math.isinf(f):
            return "float('inf')" if f > 0 else "float('-inf')"
        return repr(f)
    if isinstance(value, (str, bytes)):
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no source literal for {type(value).__name__}")


def index_src(parts: list[tuple[int | None, int | None, int | None]]) -> str:
    """A subscript of slices written as Python does (``:, 1:5, ::2``); one entry per axis."""
    out = []
    for start, stop, step in parts:
        s = ("" if start is None else str(start)) + ":" + ("" if stop is None else str(stop))
        if step not in (None, 1):
            s += f":{step}"
        out.append(s)
    while len(out) > 1 and out[-1] == ":":
        out.pop()
    return ", ".join(out) + ("," if len(out) == 1 else "")
