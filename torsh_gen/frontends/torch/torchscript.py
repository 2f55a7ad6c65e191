"""TorchScript ``.pt`` files: ``torch.jit.load``, then PyTorch's TorchScript → export converter.

The converter walks the module's inlined TorchScript graph and re-emits it as an
ExportedProgram, which takes the same core-ATen path as ``from_torch``. A TorchScript
file records no input shapes, so the caller names them (``--input-shape``).
"""

from __future__ import annotations

import os
from pathlib import Path

from torsh_gen.errors import InputError, ModelLoadError, UnsupportedOpError
from torsh_gen.frontends.torch._deps import quiet_torch, require_torch
from torsh_gen.frontends.torch.inputs import example_tensors
from torsh_gen.ir.graph import Graph


def input_names(module: object) -> list[str]:
    """The forward() argument names of a scripted or traced module (``x.1`` → ``x``)."""
    graph = module.graph  # type: ignore[attr-defined]
    names = [i.debugName().split(".")[0] for i in graph.inputs()]
    return names[1:]  # the first input is the module itself


def load_torchscript(path: str | os.PathLike, input_specs: dict | None = None) -> Graph:
    """Import a TorchScript file; ``input_specs`` maps each input name to (shape, dtype)."""
    torch = require_torch()
    p = Path(path)
    try:
        with quiet_torch():
            module = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(
            f"{p}: not a TorchScript file ({first}); "
            "a state-dict checkpoint needs --module pkg.module:factory"
        ) from None
    names = input_names(module)
    if not input_specs:
        example = "x=1x3x224x224" if not names else f"{names[0]}=1x3x224x224"
        raise InputError(
            f"{p}: a TorchScript file records no input shapes; give each input's shape with "
            f"--input-shape {example} (add :int64 for integer inputs), or for a command "
            f"without that option convert first: "
            f"torsh-gen convert {p.name} --input-shape {example} -o model.onnx"
        )
    args = example_tensors(input_specs, names, str(p))
    from torch._export.converter import TS2EPConverter

    try:
        with quiet_torch():
            ep = TS2EPConverter(module, args).convert()
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UnsupportedOpError(f"{p}: cannot convert the TorchScript graph: {first}") from None
    from torsh_gen.frontends.torch.export import from_exported

    graph = from_exported(ep, source=p.name)
    _name_inputs(graph, names)
    return graph


def _name_inputs(graph: Graph, names: list[str]) -> None:
    """Give graph inputs the forward() argument names the user wrote in ``--input-shape``.

    The converter renames them (``x.1`` becomes ``x_1``), yet bindings, ``--inputs`` files
    and compiled artifacts' ``run(x=...)`` should use the names the user knows.
    """
    if len(graph.inputs) != len(names):
        return
    taken = {v.name for v in graph.inputs} | {v.name for v in graph.initializers}
    taken |= {o.name for n in graph.nodes for o in n.outputs}
    for value, name in zip(graph.inputs, names):
        if value.name != name and name not in taken:
            taken.discard(value.name)
            value.name = name
            taken.add(name)
