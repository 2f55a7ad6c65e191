"""Kernel IR → LLVM IR for ``nvptx64-nvidia-cuda`` → PTX text (the CUDA target).

A GPU piece (``backends/cuda/schedule.py``) becomes ``void name(T addrspace(1)* buf...)``
with the ``ptx_kernel`` calling convention: one ``.entry`` in PTX, buffers as pointers to
global memory. The statements are translated by the CPU emitter's ``_FunctionEmitter``;
only loops differ:

- a ``gpu`` loop is a grid-stride loop: thread ``blockIdx.x * blockDim.x + threadIdx.x``
  runs iterations ``i, i + gridDim.x * blockDim.x, ...`` (ids from the
  ``llvm.nvvm.read.ptx.sreg.*`` intrinsics);
- a ``gpu`` loop of ``width`` 32 gives each iteration to a warp: the ``warp`` loop inside
  is the thread's lane (``threadIdx.x & 31``), and ``ShflXor`` is
  ``llvm.nvvm.shfl.sync.bfly`` over the full warp;
- every other loop (``parallel`` loops left inside a thread, ``vector`` loops of a CPU
  schedule) runs serially in its thread.

Transcendentals are kernel-IR polynomials and the intrinsics (sqrt, fabs, floor, fma...)
are PTX instructions, so the PTX needs no libdevice. LLVM's NVPTX back end (shipped in
llvmlite) writes the PTX; ``ptxas`` is needed only to check it, and the driver
JIT-compiles it for the GPU it runs on (sm_80 PTX runs on Ampere, Ada and Hopper).
"""

from __future__ import annotations

from llvmlite import ir

from torsh_gen.backends.kernel.ir import WARP, Kernel, Loop, ShflIdx, ShflXor
from torsh_gen.backends.kernel.storage import FloatToHalf, HalfToFloat
from torsh_gen.backends.llvm.emit import EmitError, _FunctionEmitter, _Scope, _Val
from torsh_gen.backends.llvm.types import F32, I32, I64, VOID, memory_type

HALF = ir.HalfType()

TRIPLE = "nvptx64-nvidia-cuda"
#: PTX ISA version LLVM writes (7.8: CUDA 11.8 and newer drivers; sm_80 and sm_90).
PTX_FEATURES = "+ptx78"
GLOBAL = 1  # address space of global memory


def global_pointer(dtype: str) -> ir.PointerType:
    """``T addrspace(1)*`` of a buffer's element type."""
    return ir.PointerType(memory_type(dtype), GLOBAL)


def emit_gpu_kernel(module: ir.Module, kernel: Kernel) -> ir.Function:
    """Define ``kernel`` (pointer parameters only) as a PTX entry in ``module``."""
    if kernel.dims:
        raise ValueError(f"GPU kernel {kernel.name} has dimension parameters; the CUDA target needs static shapes")
    fn = ir.Function(module, ir.FunctionType(VOID, [global_pointer(b.dtype) for b in kernel.buffers]), kernel.name)
    fn.calling_convention = "ptx_kernel"
    fn.attributes.add("nounwind")
    block = fn.append_basic_block("entry")
    bufs = {b.name: (fn.args[i], b.dtype) for i, b in enumerate(kernel.buffers)}
    _GpuEmitter(module, fn, ir.IRBuilder(block), ir.Constant(ir.IntType(8).as_pointer(), None), bufs).run(kernel.body, _Scope())
    return fn


class _GpuEmitter(_FunctionEmitter):
    """The CPU emitter with GPU loops: ``gpu`` loops over the grid, the others serial."""

    _lane: ir.Value | None = None  # this thread's lane in its warp, in a warp-mapped loop

    def loop(self, s: Loop, scope: _Scope) -> None:
        start, stop = self.expr(s.start, scope), self.expr(s.stop, scope)
        if s.kind == "warp":
            if self._lane is None:
                raise EmitError("a warp loop outside a gpu loop of one warp per iteration")
            inner = _Scope(dict(scope.names), dict(scope.local_types), dict(scope.strides))
            inner.names[s.var] = _Val(self.b.add(start.v, self._lane), "i64")
            self.block(s.body, inner)
            return
        if s.kind != "gpu":
            self._serial(s, scope, start.v, stop.v)
            return
        b = self.b
        tid = b.zext(b.call(self._sreg("tid.x"), []), I64)
        ctaid = b.zext(b.call(self._sreg("ctaid.x"), []), I64)
        ntid = b.zext(b.call(self._sreg("ntid.x"), []), I64)
        nctaid = b.zext(b.call(self._sreg("nctaid.x"), []), I64)
        thread = b.add(b.mul(ctaid, ntid), tid)
        threads = b.mul(ntid, nctaid)
        if s.width == WARP:  # one iteration per warp: blocks are whole warps, so a warp's
            # lanes share their iteration and leave the loop together (shuffles need all 32)
            self._lane = b.and_(tid, ir.Constant(I64, WARP - 1))
            thread, threads = b.lshr(thread, ir.Constant(I64, 5)), b.lshr(threads, ir.Constant(I64, 5))
        self._serial(s, scope, b.add(start.v, thread), stop.v, step=threads)

    def _expr(self, e, scope: _Scope) -> _Val:
        if isinstance(e, (HalfToFloat, FloatToHalf)):
            converted = self._half(e, scope)
            if converted is not None:
                return converted
        if not isinstance(e, (ShflXor, ShflIdx)):
            return super()._expr(e, scope)
        x = self.expr(e.x, scope)
        kind = {"f32": "f32", "i32": "i32"}.get(x.dtype)
        if kind is None:
            raise EmitError(f"warp shuffle of {x.dtype} (f32 and i32 are exchanged)")
        if isinstance(e, ShflXor):
            name, lane = f"llvm.nvvm.shfl.sync.bfly.{kind}", ir.Constant(I32, e.mask)
        else:
            name, lane = f"llvm.nvvm.shfl.sync.idx.{kind}", self.b.trunc(self.expr(e.src, scope).v, I32)
        t = x.v.type
        fn = self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(t, [I32, t, I32, I32]), name)
        args = [ir.Constant(I32, -1), x.v, lane, ir.Constant(I32, WARP - 1)]
        return _Val(self.b.call(fn, args), x.dtype)

    def _half(self, e: HalfToFloat | FloatToHalf, scope: _Scope) -> _Val | None:
        """A float16 conversion as the GPU's instruction (``cvt.f32.f16`` /
        ``cvt.rn.f16.f32``, sm_53 and newer), or None to emit the portable expansion."""
        src = e.bits if isinstance(e, HalfToFloat) else e.value
        if src is None:
            return None
        x = self.expr(src, scope)
        if x.lanes:  # GPU schedules have no vectors; keep the expansion if one appears
            return None
        b = self.b
        if isinstance(e, HalfToFloat):
            return _Val(b.fpext(b.bitcast(x.v, HALF), F32), "f32")
        value = x.v if x.dtype == "f32" else self._cast(x.v, x.dtype, "f32", 0)
        return _Val(b.bitcast(b.fptrunc(value, HALF), memory_type("u16")), "u16")

    def _sreg(self, name: str) -> ir.Function:
        full = f"llvm.nvvm.read.ptx.sreg.{name}"
        if full in self.module.globals:
            return self.module.globals[full]
        return ir.Function(self.module, ir.FunctionType(I32, []), full)


def ptx_module(kernels: list[Kernel], arch: str = "sm_80") -> str:
    """The PTX text of a module holding ``kernels`` for ``arch`` (``sm_80``, ``sm_90``)."""
    import llvmlite.binding as llvm

    from torsh_gen.backends.llvm.targets import init_llvm

    init_llvm()
    module = ir.Module(name="torsh_gen_cuda")
    module.triple = TRIPLE
    for k in kernels:
        emit_gpu_kernel(module, k)
    tm = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, features=PTX_FEATURES, opt=3)
    module.data_layout = str(tm.target_data)
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(parsed, pb)
    return tm.emit_assembly(parsed)
