"""Pass registration, reporting and pipelines.

A pass is a plain function ``(Graph) -> bool`` ("changed?") registered with
``@register_pass(name, requires=..., ensures=...)``. ``run_passes`` runs a list of them,
measures what each changed (node counts per op, weight bytes, time), optionally verifies
the graph after each, and returns the reports. Passes add details with ``note(...)``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.verify import verify

PassFn = Callable[[Graph], bool]


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: what it needs before it runs and what it guarantees after."""

    name: str
    fn: PassFn
    requires: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    custom_ops: bool = False  # True when the pass introduces ops of the ai.torsh domain
    doc: str = ""


@dataclass
class PassReport:
    """What one pass did."""

    name: str
    changed: bool
    seconds: float
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    weight_bytes_before: int
    weight_bytes_after: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain data for JSON/YAML output."""
        return {
            "pass": self.name,
            "changed": self.changed,
            "seconds": round(self.seconds, 4),
            "nodes": [self.nodes_before, self.nodes_after],
            "weight_bytes": [self.weight_bytes_before, self.weight_bytes_after],
            "notes": self.notes,
        }


_PASSES: dict[str, PassInfo] = {}
_NOTES: ContextVar[list[str] | None] = ContextVar("torsh_gen_pass_notes", default=None)


def register_pass(
    name: str, requires: Sequence[str] = (), ensures: Sequence[str] = (), custom_ops: bool = False
) -> Callable[[PassFn], PassFn]:
    """Decorator registering a ``(Graph) -> bool`` function as pass ``name``."""

    def deco(fn: PassFn) -> PassFn:
        if name in _PASSES:
            raise ValueError(f"pass '{name}' registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _PASSES[name] = PassInfo(name, fn, tuple(requires), tuple(ensures), custom_ops, doc)
        return fn

    return deco


def note(message: str) -> None:
    """Record a detail of what the running pass changed (shown in the report)."""
    notes = _NOTES.get()
    if notes is not None:
        notes.append(message)


def get_pass(name: str) -> PassInfo:
    """The registered pass ``name``; InputError listing the known ones otherwise."""
    _load_all()
    try:
        return _PASSES[name]
    except KeyError:
        raise InputError(f"unknown pass '{name}'; known passes: {', '.join(sorted(_PASSES))}") from None


def registered_passes() -> list[PassInfo]:
    """Every registered pass, by name."""
    _load_all()
    return [_PASSES[k] for k in sorted(_PASSES)]


def _load_all() -> None:
    import torsh_gen.passes  # noqa: F401  (the package imports every pass module)


def _stats(graph: Graph) -> tuple[int, Counter[str], int]:
    ops: Counter[str] = Counter(n.qualified_op for _, n in graph.walk())
    wbytes = sum(v.const.nbytes for v in graph.initializers)
    for _, n in graph.walk():
        for sg in n.subgraphs():
            wbytes += sum(v.const.nbytes for v in sg.initializers)
    return sum(ops.values()), ops, wbytes


def run_passes(graph: Graph, names: Sequence[str], *, check: bool = False, allow_custom_ops: bool = True) -> list[PassReport]:
    """Run passes in order; with ``check`` the verifier runs after each one."""
    reports = []
    for name in names:
        info = get_pass(name)
        if info.custom_ops and not allow_custom_ops:
            continue
        reports.append(run_measured(name, graph, info.fn, check=check))
    return reports


def run_measured(name: str, graph: Graph, fn: PassFn, *, check: bool = False) -> PassReport:
    """Run ``fn`` over ``graph`` as the pass ``name`` (registered or not) and report it:
    nodes, ops and weight bytes before and after, time, whether it changed anything (its
    return value) and the notes it left with ``note``; with ``check`` the verifier runs
    after it."""
    n0, ops0, w0 = _stats(graph)
    notes: list[str] = []
    token = _NOTES.set(notes)
    start = time.perf_counter()
    try:
        changed = bool(fn(graph))
    finally:
        _NOTES.reset(token)
    seconds = time.perf_counter() - start
    if check:
        verify(graph)
    n1, ops1, w1 = _stats(graph)
    return PassReport(name, changed, seconds, n0, n1, dict(ops0), dict(ops1), w0, w1, notes)
