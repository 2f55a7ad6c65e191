"""Run kernels in this process through LLVM's JIT: how tests check the emitter on the host.

``JitKernels(kernels)`` compiles the kernels for the host CPU (or a given spec of this
machine's architecture) with a serial ``tg_parallel_for`` and calls them on numpy arrays.
"""

from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir

from torsh_gen.backends.kernel.ir import Kernel
from torsh_gen.backends.kernel.program import IOSpec
from torsh_gen.backends.llvm.emit import emit_kernel
from torsh_gen.backends.llvm.machine import optimize
from torsh_gen.backends.llvm.runtime_ir import define_serial_parallel_for
from torsh_gen.backends.llvm.targets import TargetSpec, host_target


def _compile(module: ir.Module, spec: TargetSpec):
    """An MCJIT engine holding ``module`` optimized for ``spec`` (this machine's CPU)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    parsed, tm = optimize(module, spec)
    engine = llvm.create_mcjit_compiler(parsed, tm)
    engine.finalize_object()
    engine.run_static_constructors()
    return engine


def aligned_copy(data: bytes | np.ndarray, align: int = 64) -> np.ndarray:
    """A copy of ``data`` whose first element sits on an ``align``-byte boundary.

    numpy takes large arrays from malloc, which returns 16-byte aligned memory: 64-byte
    vector loads from such a copy of the weights or workspace split cache lines, which made
    kernels timed in process up to 40 % slower than in the library (its weights file is
    mapped and its workspace aligned)."""
    src = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    raw = np.empty(src.nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    out = raw[start : start + src.nbytes].view(src.dtype).reshape(src.shape)
    out[...] = src
    return out


class JitKernels:
    """Kernels compiled in memory; ``run(name, buffers, dims)`` calls one."""

    def __init__(self, kernels: list[Kernel], spec: TargetSpec | None = None) -> None:
        self.spec = spec or host_target()
        module = ir.Module(name="jit")
        define_serial_parallel_for(module)
        self.kernels = {k.name: k for k in kernels}
        for k in kernels:
            emit_kernel(module, k).linkage = "external"
        self.llvm_ir = str(module)
        self._engine = _compile(module, self.spec)
        self._fns = {}
        for k in kernels:
            addr = self._engine.get_function_address(k.name)
            argtypes = [ctypes.c_void_p] * (1 + len(k.buffers)) + [ctypes.c_int64] * len(k.dims)
            self._fns[k.name] = ctypes.CFUNCTYPE(None, *argtypes)(addr)

    def run(self, name: str, buffers: dict[str, np.ndarray], dims: dict[str, int] | None = None) -> None:
        """Call kernel ``name`` on flat contiguous arrays (written in place)."""
        k = self.kernels[name]
        args: list = [None]
        for b in k.buffers:
            arr = buffers[b.name]
            if not arr.flags.c_contiguous:
                raise ValueError(f"buffer {b.name} must be contiguous")
            args.append(arr.ctypes.data)
        args += [int((dims or {})[d]) for d in k.dims]
        self._fns[name](*args)


class JitProgram:
    """A whole ``Program`` compiled in memory (serial): ``run(inputs) -> outputs``, outputs
    whose size depends on the data cut to the shape the run gave them."""

    def __init__(self, program, spec: TargetSpec | None = None) -> None:
        from torsh_gen.backends.llvm.program import emit_program, graph_run_name

        self.program = program
        self.spec = spec or host_target()
        module = ir.Module(name="jitprog")
        define_serial_parallel_for(module)
        emit_program(program, "m", module)
        self._engine = _compile(module, self.spec)
        addr = self._engine.get_function_address(graph_run_name("m"))
        self._fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)(addr)
        self._weights = aligned_copy(bytes(program.weights) or b"\0")
        self._ws = aligned_copy(np.zeros(max(program.workspace_bytes, 1), dtype=np.uint8))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for inputs by name (checked against the program's signature)."""
        from torsh_gen.backends.kernel.interp import numpy_dtype

        ins = []
        for spec in self.program.inputs:
            arr = np.asarray(inputs[spec.name], dtype=numpy_dtype(spec.dtype), order="C")
            if arr.shape != spec.shape:
                raise ValueError(f"input {spec.name}: shape {arr.shape}, expected {spec.shape}")
            ins.append(arr)
        outs = [np.zeros(s.shape, dtype=numpy_dtype(s.dtype)) for s in self.program.outputs]
        in_ptrs = (ctypes.c_void_p * max(len(ins), 1))(*[a.ctypes.data for a in ins])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[a.ctypes.data for a in outs])
        self._fn(None, self._ws.ctypes.data, self._weights.ctypes.data, in_ptrs, out_ptrs)
        return {s.name: self._actual(s, a) for s, a in zip(self.program.outputs, outs)}

    def output_shape(self, spec: IOSpec) -> tuple[int, ...]:
        """The shape output ``spec`` had in the last run (its static shape if it has one)."""
        if spec.extent is None:
            return tuple(spec.shape)
        rank = len(spec.shape)
        return tuple(int(d) for d in self._ws[spec.extent : spec.extent + 8 * rank].view(np.int64))

    def _actual(self, spec: IOSpec, out: np.ndarray) -> np.ndarray:
        """A data-dependent output cut to its actual shape (a copy of its valid part)."""
        if spec.extent is None:
            return out
        shape = self.output_shape(spec)
        n = int(np.prod(shape, dtype=np.int64))
        return out.reshape(-1)[:n].reshape(shape).copy()
