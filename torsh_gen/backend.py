"""ONNX backend API (``onnx.backend.base.Backend``) over torsh-gen.

``torsh_gen.backend.prepare(model).run(inputs)`` imports the model into the IR, checks
it, and runs it with the ops' numpy reference kernels. With ``mode="compiled"`` it
compiles the model for the CPU into a temporary folder instead and runs the generated
package. It is what the ONNX conformance suite drives, and what users can call to
execute a model.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

import torsh_gen.ops  # noqa: F401  (registers the op specs)
from torsh_gen.errors import InputError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ops.execute import Executor


class TorshGenRep(BackendRep):
    """A prepared model: the imported Graph and an executor bound to its opsets."""

    def __init__(self, graph: Graph, seed: int = 0) -> None:
        self.graph = graph
        self.executor = Executor(graph.info.opset_imports if graph.info else None, seed)
        # Positional inputs fill the inputs without a default (an initializer of the same
        # name), as the ONNX backend runner and onnxruntime do; defaults can be overridden by name.
        self.input_names = [v.name for v in graph.inputs if v.const is None]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run on a list of inputs (graph order), a dict by name, or one array."""
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) > len(self.input_names):
                raise InputError(f"got {len(inputs)} inputs, the model takes {len(self.input_names)}")
            feeds = {name: _as_value(x) for name, x in zip(self.input_names, inputs)}
        return tuple(self.executor.run(self.graph, feeds))


class CompiledRep(BackendRep):
    """A model compiled into a temporary artifact folder (removed with the rep)."""

    def __init__(self, folder: Path, module: Any) -> None:
        self.folder = folder
        self.module = module
        self.model = module.Model()
        self.input_names = [s["name"] for s in module.INPUTS if s.get("default") is None]
        self._cleanup = weakref.finalize(self, _release, folder.parent, module.__name__)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run on a list of inputs (graph order), a dict by name, or one array."""
        return tuple(self.model.run(**_named_feeds(inputs, self.input_names)).values())


def _named_feeds(inputs: Any, names: list[str]) -> dict[str, Any]:
    """A list of inputs (graph order), a dict by name or one array, as values by name."""
    if isinstance(inputs, dict):
        return {k: _as_value(v) for k, v in inputs.items()}
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    inputs = list(inputs)
    if len(inputs) > len(names):
        raise InputError(f"got {len(inputs)} inputs, the model takes {len(names)}")
    return {name: _as_value(x) for name, x in zip(names, inputs)}


_compiled = itertools.count()


def _release(tmp: Path, module_name: str) -> None:
    """Forget the artifact's modules and delete its folder."""
    import sys

    for name in [n for n in sys.modules if n == module_name or n.startswith(module_name + ".")]:
        del sys.modules[name]
    shutil.rmtree(tmp, ignore_errors=True)


class CudaHostRep(BackendRep):
    """A model compiled for the CUDA target whose plan runs on this CPU (``target=
    "cuda-host"``): the GPU schedule, launches and GEMM parameters checked without a GPU."""

    def __init__(self, model: Any, level: str) -> None:
        from torsh_gen.backends.cuda.host import host_plan
        from torsh_gen.tools.compile import optimized_graph

        self.plan = host_plan(optimized_graph(model, "cuda", level))
        self.input_names = [s.name for s in self.plan.program.inputs]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run on a list of inputs (graph order), a dict by name, or one array."""
        feeds = _named_feeds(inputs, self.input_names)
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)}")
        return tuple(self.plan.run(feeds).values())


class TvmRep(BackendRep):
    """A model built with the TVM backend for ``target`` (``target="tvm-cpu"``) and run
    in this process by TVM's Relax VM, without exporting a library."""

    def __init__(self, model: Any, level: str, target: str) -> None:
        from torsh_gen.backends.tvm.session import TvmSession
        from torsh_gen.tools.compile import optimized_graph

        self.session = TvmSession(optimized_graph(model, target, level, backend="tvm"), target)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run on a list of inputs (graph order), a dict by name, or one array."""
        return tuple(self.session.run(_named_feeds(inputs, self.session.input_names)).values())


def _compile_rep(model: Any, level: str, target: str = "cpu") -> BackendRep:
    if isinstance(model, (str, Path)) and not Path(model).exists():
        raise InputError(f"{model}: no such model file")
    if target == "cuda-host":
        return CudaHostRep(model, level)
    if target.startswith("tvm-"):
        return TvmRep(model, level, target.removeprefix("tvm-"))
    if target != "cpu":
        check_runs_in_process(target)
    from torsh_gen.tools.artifact import load_artifact
    from torsh_gen.tools.compile import compile_model

    tmp = Path(tempfile.mkdtemp(prefix="torsh-gen-backend-"))
    atexit.register(shutil.rmtree, tmp, True)
    folder = tmp / f"model_{next(_compiled)}"
    try:
        compile_model(model, folder, target=target, level=level)
        return CompiledRep(folder, load_artifact(folder))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_runs_in_process(target: str) -> None:
    """Compiled mode imports the artifact's Python package and runs it here: only native
    targets with a ctypes wrapper that this machine can execute qualify (wasm32, Android
    and aarch64 artifacts run through their own drivers, in Node or under qemu)."""
    from torsh_gen.backends.llvm.targets import load_target

    spec = load_target(target)
    if spec.packaging != "sharedlib" or not spec.runs_here:
        raise InputError(
            f"target {target}: its artifact cannot run inside this Python process; compiled mode "
            "runs cpu, x86_64-linux, x86_64-avx512-linux, host, cuda-host and tvm-cpu "
            "(run other targets' artifacts through their drivers: docs/targets.md)"
        )


def _as_value(x: Any) -> Any:
    """Convert TensorProto inputs (float8/int4 test data) to arrays; keep lists (sequences)."""
    if isinstance(x, onnx.TensorProto):
        return onnx.numpy_helper.to_array(x)
    return x


class TorshGenBackend(Backend):
    """The ONNX Backend implementation."""

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", mode: str = "reference", **kwargs: Any) -> BackendRep:
        """Import ``model`` (ModelProto, bytes or path) and return a runnable rep.

        ``mode="compiled"`` compiles it (optimization ``level``, default O3; ``target``,
        default ``cpu``, or a native target such as ``x86_64-linux`` whose artifact has the
        same Python interface) and runs the generated package; ``target="cuda-host"``
        lowers it for the CUDA target and runs that plan on this CPU. ``mode="reference"``
        runs the reference interpreter.
        """
        if not cls.supports_device(device):
            raise InputError(f"device '{device}' is not supported; torsh-gen's backends run on CPU")
        if mode == "compiled":
            return _compile_rep(model, str(kwargs.get("level", "O3")), str(kwargs.get("target", "cpu")))
        if mode != "reference":
            raise InputError(f"unknown backend mode '{mode}'; use 'reference' or 'compiled'")
        graph = load_onnx(model)
        return TorshGenRep(graph, seed=int(kwargs.get("seed", 0)))

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
        """Prepare and run in one call."""
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[Any], device: str = "CPU", outputs_info: Any = None, **kwargs: Any) -> tuple[Any, ...]:
        """Run a single node by wrapping it in a one-node model."""
        arrays = [_as_value(x) for x in inputs]
        vis = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in zip(node.input, arrays)]
        outs = [onnx.helper.make_value_info(n, onnx.TypeProto()) for n in node.output]
        g = onnx.helper.make_graph([node], "node", vis, outs)
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid(node.domain, opset)])
        return cls.run_model(model, arrays, device, **{k: v for k, v in kwargs.items() if k in ("mode", "level", "target")})

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Only the CPU."""
        return device.upper().startswith("CPU")


prepare = TorshGenBackend.prepare
run_model = TorshGenBackend.run_model
run_node = TorshGenBackend.run_node
supports_device = TorshGenBackend.supports_device
