"""``from_torch`` and ``.pt2`` files: torch.export, core-ATen decomposition, lowering.

Dims the user marks dynamic with ``torch.export.Dim`` keep their names in the IR's
shapes (``batch`` rather than PyTorch's internal ``s0``), so ``--input-shape batch=8``
and the generated code speak the user's words.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from torsh_gen.errors import InputError, ModelLoadError
from torsh_gen.frontends.torch._deps import quiet_torch, require_torch
from torsh_gen.ir.graph import Graph


def from_torch(module: Any, example_inputs: Any, dynamic_shapes: Any = None) -> Graph:
    """Import an ``nn.Module`` called on ``example_inputs`` (a tuple) as an IR Graph."""
    torch = require_torch()
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    try:
        with quiet_torch():
            ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
    except Exception as e:  # torch raises many types; the message is what users need
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"torch.export failed on {type(module).__name__}: {first}") from None
    return from_exported(ep, _dim_names(ep, dynamic_shapes), source=type(module).__name__)


def from_exported(ep: Any, symbols: dict[str, str] | None = None, source: str = "") -> Graph:
    """Import a ``torch.export.ExportedProgram`` (decomposed here to the core ATen set)."""
    from torsh_gen.frontends.torch.lower import lower_program

    with quiet_torch():
        try:
            ep = ep.run_decompositions()
        except Exception as e:
            raise InputError(
                f"{source or 'program'}: decomposition to core ATen failed: {e}"
            ) from None
    return lower_program(ep, symbols, source)


def load_pt2(path: str | os.PathLike) -> Graph:
    """Load a program saved with ``torch.export.save`` (``.pt2``)."""
    torch = require_torch()
    p = Path(path)
    if not zipfile.is_zipfile(p):
        raise ModelLoadError(f"{p}: not a program saved by torch.export.save (not a zip archive)")
    try:
        with quiet_torch():  # torch logs a traceback before raising; we report one line
            ep = torch.export.load(str(p))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"{p}: not a program saved by torch.export.save ({first})") from None
    return from_exported(ep, source=p.name)


def _dim_names(ep: Any, dynamic_shapes: Any) -> dict[str, str]:
    """Map PyTorch's shape symbols (``s0``) to the names of the user's ``Dim`` objects."""
    if dynamic_shapes is None:
        return {}
    user = [s for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    if isinstance(dynamic_shapes, dict):
        names = [s.arg.name for s in user]
        specs = [dynamic_shapes.get(n) for n in names]
        if not any(s is not None for s in specs):
            specs = list(dynamic_shapes.values())
    else:
        specs = list(dynamic_shapes)
    specs = [leaf for spec in specs for leaf in _per_input(spec)]
    out: dict[str, str] = {}
    for spec, inp in zip(specs, user):
        val = nodes[inp.arg.name].meta.get("val") if inp.arg.name in nodes else None
        if spec is None or val is None or not hasattr(val, "shape"):
            continue
        items = spec.items() if isinstance(spec, dict) else enumerate(spec)
        for axis, dim in items:
            name = getattr(dim, "__name__", None)
            if name is None or axis >= len(val.shape):
                continue
            size = val.shape[axis]
            expr = getattr(getattr(size, "node", None), "expr", None)
            if expr is not None and getattr(expr, "is_Symbol", False):
                out[str(expr)] = name
    return out


def _per_input(spec: Any) -> list[Any]:
    """Flatten containers of per-input specs (``*args`` give a tuple of them)."""
    if isinstance(spec, list | tuple) and any(isinstance(s, dict | list | tuple) for s in spec):
        return [leaf for s in spec for leaf in _per_input(s)]
    return [spec]
