"""The table of ATen lowerings: op overload name → function(Lowering, fx.Node) → IR value(s).

Each ``ops_*`` module registers its lowerings with ``@lowers("aten.add.Tensor", ...)``
where it defines them; ``lower.py`` imports those modules so the table is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Overload name (``aten.add.Tensor``) or packet name (``aten.add``, every overload) → lowering.
LOWERINGS: dict[str, Callable[..., Any]] = {}

#: Ops that only assert or constrain shapes at run time: nothing to emit.
IGNORED = frozenset(
    {
        "aten._assert_scalar.default",
        "aten._assert_async.msg",
        "aten._assert_tensor_metadata.default",
        "aten.sym_constrain_range.default",
        "aten.sym_constrain_range_for_size.default",
        "_assert_scalar",
    }
)


def lowers(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the lowering of each named ATen op."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            LOWERINGS[name] = fn
        return fn

    return register


def find(name: str) -> Callable[..., Any] | None:
    """The lowering of an op overload, by its full name or its packet (``aten.add``)."""
    if name in LOWERINGS:
        return LOWERINGS[name]
    packet = name.rsplit(".", 1)[0]
    return LOWERINGS.get(packet) if packet.startswith("aten.") else None
