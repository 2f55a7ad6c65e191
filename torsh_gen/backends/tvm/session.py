"""A TVM build of a graph held in memory and run in this process: what the compiled ONNX
backend (``prepare(model, mode="compiled", target="tvm-cpu")``) and the conformance suite
use, without exporting a shared library per model. The generated package runs the same
executable the same way (templates/tvm/__init__.py.j2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from torsh_gen.backends.tvm.build import build, require_tvm
from torsh_gen.backends.tvm.convert import RelaxModule, to_relax
from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph


class TvmSession:
    """``graph`` converted, built for ``target`` and loaded in a Relax VM on the CPU."""

    def __init__(self, graph: Graph, target: str = "cpu") -> None:
        tvm = require_tvm()
        from tvm import relax

        self.module: RelaxModule = to_relax(graph)
        self.executable = build(self.module.mod, target)
        self.vm = relax.VirtualMachine(self.executable, tvm.cpu())
        self.params = transformed_params(self.vm, [tvm.runtime.tensor(p) for p in self.module.params])
        self.input_names = [v.name for v in self.module.inputs]
        self.output_names = [v.name for v in self.module.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, in graph order."""
        import tvm

        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)}")
        args = [tvm.runtime.tensor(np.asarray(feeds[n], order="C")) for n in self.input_names]
        outs = self.vm["main"](*args, *self.params)
        return {n: _numpy(o) for n, o in zip(self.output_names, outs)}


def transformed_params(vm: Any, params: list[Any]) -> list[Any]:
    """The weights as ``main`` takes them: ``main_transform_params`` (from
    LiftTransformParams) applied once, when the build has one."""
    try:
        fn = vm["main_transform_params"]
    except (AttributeError, KeyError, ValueError, RuntimeError):
        return params
    return list(fn(params))


def _numpy(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)
