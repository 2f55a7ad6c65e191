"""Example inputs from ``--input-shape`` specs (``x=1x3x224x224``, ``ids=1x16:int64``).

TorchScript files and state-dict checkpoints do not record input shapes, so the user
names them; torch.export then traces the module on inputs of those shapes.
"""

from __future__ import annotations

from typing import Any

from torsh_gen.errors import InputError

_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")


def parse_input_specs(specs: list[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``["x=1x3x8x8", "ids=2x5:int64"]`` → ``{"x": ((1,3,8,8), "float32"), ...}``."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        dims, _, dtype = rest.partition(":")
        dtype = dtype or "float32"
        if not sep or not name or not dims:
            raise InputError(
                f"--input-shape '{spec}': expected NAME=1x3x224x224 (optionally :int64)"
            )
        if dtype not in _DTYPES:
            raise InputError(
                f"--input-shape '{spec}': unknown dtype '{dtype}'; use one of {', '.join(_DTYPES)}"
            )
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise InputError(
                f"--input-shape '{spec}': dimensions must be integers separated by 'x'"
            ) from None
        if any(d < 0 or d > 2**31 for d in shape):
            raise InputError(f"--input-shape '{spec}': dimensions must be between 0 and 2^31")
        out[name] = (shape, dtype)
    return out


def example_tensors(
    specs: dict[str, tuple[tuple[int, ...], str]], names: list[str], where: str
) -> tuple[Any, ...]:
    """Tensors for the inputs ``names`` in order (random floats, zero integers)."""
    import torch

    missing = [n for n in names if n not in specs]
    unknown = [n for n in specs if n not in names]
    if missing or unknown:
        given = ", ".join(specs) or "none"
        raise InputError(
            f"{where}: --input-shape must name each input ({', '.join(names)}); given: {given}. "
            f"Example: --input-shape {names[0] if names else 'x'}=1x3x224x224"
        )
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in names:
        shape, dtype = specs[n]
        dt = getattr(torch, dtype)
        if dt.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dt))
        else:
            out.append(torch.zeros(shape, dtype=dt))
    return tuple(out)
