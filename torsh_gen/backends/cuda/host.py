"""Run a CUDA plan on the host CPU: how the GPU schedule is tested without a GPU.

Each GPU launch runs its kernel compiled for this CPU by the LLVM emitter, where a ``gpu``
loop is an ordinary loop over every thread's iterations; each GEMM step runs in numpy with
the row-major semantics the runtime hands to cuBLAS (leading dimensions, batch strides,
transposes, alpha and beta). Memory is laid out exactly as on the GPU: the same weights
blob, one workspace, the same byte offsets. So a host run checks the lowering, the split
into launches, the collapse of parallel loops into grids, the memory plan and the GEMM
parameters; what it cannot check is the PTX itself (``ptxas`` and a GPU do that).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torsh_gen.backends.cuda.package import CudaPlan, plan_program
from torsh_gen.backends.cuda.program import build_cuda_program
from torsh_gen.backends.kernel.interp import numpy_dtype
from torsh_gen.backends.llvm.jit import JitKernels, aligned_copy


class HostPlan:
    """A plan compiled for this CPU; ``run(inputs) -> outputs`` by name."""

    def __init__(self, plan: CudaPlan) -> None:
        self.plan = plan
        self.program = plan.program
        self.jit = JitKernels(plan.kernels)
        self.weights = aligned_copy(bytes(self.program.weights) or b"\0")
        self.workspace = aligned_copy(np.zeros(max(self.program.workspace_bytes, 1), dtype=np.uint8))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name (fresh arrays) for inputs by name."""
        ins = [np.ascontiguousarray(inputs[s.name], dtype=numpy_dtype(s.dtype)) for s in self.program.inputs]
        outs = [np.zeros(s.shape, dtype=numpy_dtype(s.dtype)) for s in self.program.outputs]
        memory = {
            "input": [a.reshape(-1).view(np.uint8) for a in ins],
            "output": [a.reshape(-1).view(np.uint8) for a in outs],
            "weights": [self.weights],
            "workspace": [self.workspace],
        }
        for step in self.plan.steps:
            if step["op"] == "launch":
                fn = self.jit._fns[step["kernel"]]
                fn(None, *[_address(memory, r) for r in step["args"]])
            else:
                _gemm(memory, step)
        return {s.name: a for s, a in zip(self.program.outputs, outs)}


def _address(memory: dict[str, list[np.ndarray]], ref: dict[str, Any]) -> int:
    return memory[ref["mem"]][ref["index"]].ctypes.data + ref["offset"]


def _matrix(memory, ref, dtype, base: int, rows: int, cols: int, ld: int) -> np.ndarray:
    """A strided rows x cols view at element ``base`` of a ref (row-major, leading dim ``ld``)."""
    raw = memory[ref["mem"]][ref["index"]]
    item = np.dtype(dtype).itemsize
    start = ref["offset"] + base * item
    span = ((rows - 1) * ld + cols) * item
    if start + span > raw.nbytes:
        raise ValueError(f"GEMM operand out of bounds ({start + span} > {raw.nbytes} bytes)")
    flat = raw[start : start + span].view(dtype)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(ld * item, item))


def _gemm(memory, s: dict[str, Any]) -> None:
    dt = numpy_dtype(s["dtype"]) if s["dtype"] != "f16" else np.dtype(np.float16)
    m, n, k = s["m"], s["n"], s["k"]
    for b in range(s["batch"]):
        if s["trans_a"]:
            a = _matrix(memory, s["a"], dt, b * s["stride_a"], k, m, s["lda"]).T
        else:
            a = _matrix(memory, s["a"], dt, b * s["stride_a"], m, k, s["lda"])
        if s["trans_b"]:
            bm = _matrix(memory, s["b"], dt, b * s["stride_b"], n, k, s["ldb"]).T
        else:
            bm = _matrix(memory, s["b"], dt, b * s["stride_b"], k, n, s["ldb"])
        c = _matrix(memory, s["c"], dt, b * s["stride_c"], m, n, s["ldc"])
        acc = s["alpha"] * (a.astype(np.float32) @ bm.astype(np.float32))
        if s["beta"]:
            acc = acc + s["beta"] * c.astype(np.float32)
        c[...] = acc.astype(dt)



def host_plan(graph) -> HostPlan:
    """The CUDA plan of the optimized ``graph`` (memory plan attached), ready on the host."""
    return HostPlan(plan_program(build_cuda_program(graph)))
