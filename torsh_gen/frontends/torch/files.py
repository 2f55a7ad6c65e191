"""Pick the PyTorch loader for a file and the options given with it (used by ``convert``)."""

from __future__ import annotations

import os
from pathlib import Path

from torsh_gen.errors import InputError
from torsh_gen.frontends.torch.checkpoint import (
    CHECKPOINT_SUFFIXES,
    load_checkpoint,
    refuse_bare_checkpoint,
)
from torsh_gen.frontends.torch.export import load_pt2
from torsh_gen.frontends.torch.inputs import parse_input_specs
from torsh_gen.frontends.torch.torchscript import load_torchscript
from torsh_gen.ir.graph import Graph

#: Extensions this frontend reads (a checkpoint needs --module).
TORCH_SUFFIXES = (".pt2", ".pt", *CHECKPOINT_SUFFIXES)


def load_torch_file(
    path: str | os.PathLike, module: str | None = None, input_shapes: list[str] | None = None
) -> Graph:
    """A ``.pt2`` program, a TorchScript ``.pt`` or a checkpoint with its module factory."""
    p = Path(path)
    specs = parse_input_specs(input_shapes or [])
    suffix = p.suffix.lower()
    if module:
        if not specs:
            raise InputError(
                f"{p}: --module needs --input-shape for each forward() input, e.g. x=1x3x224x224"
            )
        return load_checkpoint(p, module, specs)
    if suffix == ".pt2":
        return load_pt2(p)
    if suffix == ".pt":
        return load_torchscript(p, specs)
    return refuse_bare_checkpoint(p)
