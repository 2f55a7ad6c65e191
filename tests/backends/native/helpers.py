"""Shared helpers of the native-backend tests: lower a model, run it in-process through
LLVM's JIT (and optionally the kernel-IR interpreter), compare with onnxruntime."""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

import torsh_gen.passes.memplan  # noqa: F401  (registers plan_memory)
from tests.oracle import INTEGER_PRODUCT_OPS, integer_oracle
from torsh_gen.backends.kernel.interp import call_buffers, numpy_dtype, run_kernel
from torsh_gen.backends.kernel.lower import Schedule
from torsh_gen.backends.kernel.program import Program, build_program
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes import pipeline, run_passes

#: Ops that make onnx's reference the oracle where onnxruntime's integer products saturate
#: (a DequantizeLinear may start a QDQ group that onnxruntime fuses into one of them).
_INTEGER_ORACLE_OPS = INTEGER_PRODUCT_OPS | {"DequantizeLinear"}


def lower_model(
    model: onnx.ModelProto, level: str = "O3", lanes: int = 8, threads: bool = True, sched: Schedule | None = None
) -> Program:
    """The program of ``model`` after the level's passes and the memory plan (``sched``:
    a whole schedule instead of ``lanes`` and ``threads``)."""
    graph = load_onnx(model.SerializeToString())
    run_passes(graph, pipeline(level) + ["plan_memory"])
    infer_types(graph)
    return build_program(graph, sched or Schedule(lanes=lanes, threads=threads, parallel_min=1024))


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs, one thread."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def interpret_program(program: Program, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the program with the kernel-IR interpreter (slow: small shapes only)."""
    mem = {
        "weights": np.frombuffer(bytes(program.weights) or b"\0", dtype=np.uint8).copy(),
        "workspace": np.zeros(max(program.workspace_bytes, 1), dtype=np.uint8),
    }
    ins = [np.asarray(feeds[s.name], dtype=numpy_dtype(s.dtype), order="C") for s in program.inputs]
    outs = [np.zeros(s.shape, dtype=numpy_dtype(s.dtype)) for s in program.outputs]

    for call in program.calls:
        kernel = program.kernels[call.kernel]
        run_kernel(kernel, call_buffers(kernel, call.args, ins, outs, mem))
    return [_actual(spec, out, mem["workspace"]) for spec, out in zip(program.outputs, outs)]


def _actual(spec: Any, out: np.ndarray, workspace: np.ndarray) -> np.ndarray:
    """A data-dependent output cut to the dims its kernel wrote into the workspace."""
    if spec.extent is None:
        return out
    shape = tuple(int(d) for d in workspace[spec.extent : spec.extent + 8 * out.ndim].view(np.int64))
    return out.reshape(-1)[: int(np.prod(shape, dtype=np.int64))].reshape(shape)


def check_native(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    lanes: int = 8,
    interpret: bool = False,
    level: str = "O3",
    sched: Schedule | None = None,
) -> Program:
    """Lower, JIT-run (and interpret when asked) and compare every output with onnxruntime,
    or with onnx's reference evaluator for integer products on CPUs where onnxruntime's
    are not exact (tests/oracle.py)."""
    from torsh_gen.backends.llvm.jit import JitProgram

    onnx.checker.check_model(model)
    program = lower_model(model, level=level, lanes=lanes, sched=sched)
    integer = any(n.op_type in _INTEGER_ORACLE_OPS for n in model.graph.node)
    expected = integer_oracle(model, feeds) if integer else ort_run(model, feeds)
    got = JitProgram(program).run(feeds)
    for spec, exp in zip(program.outputs, expected):
        np.testing.assert_allclose(got[spec.name], exp, rtol=rtol, atol=atol, err_msg=f"JIT output {spec.name}")
    if interpret:
        for spec, out, exp in zip(program.outputs, interpret_program(program, feeds), expected):
            np.testing.assert_allclose(out, exp, rtol=rtol, atol=atol, err_msg=f"interpreted output {spec.name}")
    return program


def make_model(nodes: list, inputs: list, outputs: list, inits: list | None = None, opset: int = 17) -> onnx.ModelProto:
    """A one-graph model with the given opset."""
    from onnx import helper

    g = helper.make_graph(nodes, "g", inputs, outputs, inits or [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def rand(*shape: int, dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal data."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def import_package(folder: Path) -> Any:
    """Import the generated package in ``folder`` under its own name (fresh each time)."""
    spec = importlib.util.spec_from_file_location(
        folder.name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[folder.name] = module
    spec.loader.exec_module(module)
    return module


class CTensor(ctypes.Structure):
    """``<name>_tensor`` of a generated C header (for ``_run_checked`` and ``_output_info``)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("data", ctypes.c_void_p),
        ("nbytes", ctypes.c_size_t),
    ]
