"""The op → emitter table of the Python backend.

An emitter is ``(ctx: NodeCtx) -> bool``: it writes the code for one node through ``ctx``
and returns True, or returns False (before writing anything that matters: lines of a
declined node are discarded) when it does not handle this node's attributes or types;
the node then runs through its vendored reference kernel, so every op the registry
supports compiles. Emitters register themselves with ``@emits`` in the family modules
imported below; a later registration for the same op overrides an earlier one, so a
variant backend can replace a few entries.
"""

from __future__ import annotations

from collections.abc import Callable

Emitter = Callable[..., bool]

_TABLE: dict[tuple[str, str], Emitter] = {}


def emits(*op_types: str, domain: str = "") -> Callable[[Emitter], Emitter]:
    """Register the decorated function as the emitter of ``op_types`` in ``domain``."""

    def register(fn: Emitter) -> Emitter:
        for op_type in op_types:
            _TABLE[(domain, op_type)] = fn
        return fn

    return register


def emitter_for(op_type: str, domain: str = "") -> Emitter | None:
    """The emitter registered for ``domain::op_type``, or None."""
    _load()
    return _TABLE.get(("" if domain == "ai.onnx" else domain, op_type))


def emitter_table() -> dict[tuple[str, str], Emitter]:
    """A copy of the whole table (domain, op) → emitter."""
    _load()
    return dict(_TABLE)


def _load() -> None:
    from torsh_gen.backends.python.emitters import (  # noqa: F401  (registrations)
        control,
        conv,
        elementwise,
        fused,
        linalg,
        norm,
        quant,
        reduce,
        shape,
    )
