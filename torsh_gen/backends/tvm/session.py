"""A TVM build of a graph held in memory and run in this process: what the compiled ONNX
backend (``prepare(model, mode="compiled", target="tvm-cpu")``) and the conformance suite
use, without exporting a shared library per model. The generated package runs the same
executable the same way (templates/tvm/__init__.py.j2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from torsh_gen.backends.tvm.build import build, require_tvm
from torsh_gen.backends.tvm.convert import RelaxModule, to_relax
from torsh_gen.backends.tvm.narrow import from_storage, is_narrow, to_storage
from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph, Value
from torsh_gen.ir.types import DType, TensorType


class TvmSession:
    """``graph`` converted, built for ``target`` and loaded in a Relax VM on the CPU."""

    def __init__(self, graph: Graph, target: str = "cpu") -> None:
        tvm = require_tvm()
        from tvm import relax

        self.module: RelaxModule = to_relax(graph)
        self.executable = build(self.module.mod, target)
        self.vm = relax.VirtualMachine(self.executable, tvm.cpu())
        weights = [tvm.runtime.tensor(to_storage(p)) for p in self.module.params]
        self.params = transformed_params(self.vm, weights)
        self.input_names = [v.name for v in self.module.inputs]
        self.output_names = [v.name for v in self.module.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, in graph order."""
        import tvm

        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)}")
        args = [tvm.runtime.tensor(_stored(v, feeds[v.name])) for v in self.module.inputs]
        outs = self.vm["main"](*args, *self.params)
        return {
            v.name: from_storage(_numpy(o), _dtype(v)) for v, o in zip(self.module.outputs, outs)
        }


def _stored(value: Value, array: Any) -> np.ndarray:
    """A feed as ``main`` takes it: a narrow type (float8, int4...) given as its ml_dtypes
    dtype and passed as its bytes (uint8); InputError when it has another dtype."""
    arr = np.asarray(array, order="C")
    dtype = _dtype(value)
    if not is_narrow(dtype):
        return arr
    if arr.dtype != dtype.numpy:
        raise InputError(f"input '{value.name}': dtype {arr.dtype}, expected {dtype.numpy.name}")
    return to_storage(arr)


def _dtype(value: Value) -> DType:
    t = value.type
    return t.dtype if isinstance(t, TensorType) else DType.UNDEFINED


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
