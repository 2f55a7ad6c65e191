"""A ``Program`` → one LLVM module: the kernels plus ``<prefix>_graph_run``.

``void <prefix>_graph_run(i8* rt, i8* workspace, i8* weights, i8** inputs, i8** outputs)``
calls every kernel in order with pointers into the four memory kinds. It is the one
entry point that every packaging (C API, ctypes, JNI, wasm exports) wraps.
"""

from __future__ import annotations

from llvmlite import ir

from torsh_gen.backends.kernel.program import Program, TensorRef
from torsh_gen.backends.llvm.emit import declare_kernel, emit_kernel
from torsh_gen.backends.llvm.types import I8P, I32, I64, VOID, memory_type


def graph_run_name(prefix: str) -> str:
    """The symbol of the program's entry point."""
    return f"{prefix}_graph_run"


def emit_program(
    program: Program, prefix: str, module: ir.Module | None = None, inline_kernels: bool = True
) -> ir.Module:
    """Define every kernel and the graph entry point in ``module`` (a new one by default).

    ``inline_kernels=False`` keeps each kernel a function of its own (``noinline``): LLVM
    would otherwise inline every kernel called once into the entry point, and a JIT that
    compiles the result again (V8 for wasm32) gives one huge function a cheaper, worse
    register allocator."""
    module = module or ir.Module(name=prefix)
    for kernel in program.kernels.values():
        fn = emit_kernel(module, kernel)
        if not inline_kernels:
            fn.attributes.add("noinline")
    fnty = ir.FunctionType(VOID, [I8P, I8P, I8P, I8P.as_pointer(), I8P.as_pointer()])
    fn = ir.Function(module, fnty, graph_run_name(prefix))
    fn.attributes.add("nounwind")
    rt, ws, weights, inputs, outputs = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    cache: dict[tuple[str, int], ir.Value] = {}

    def base(ref: TensorRef) -> ir.Value:
        if ref.kind == "workspace":
            return b.gep(ws, [ir.Constant(I64, ref.offset)])
        if ref.kind == "weights":
            return b.gep(weights, [ir.Constant(I64, ref.offset)])
        key = (ref.kind, ref.index)
        if key not in cache:
            arr = inputs if ref.kind == "input" else outputs
            cache[key] = b.load(b.gep(arr, [ir.Constant(I32, ref.index)]))
        return cache[key]

    for call in program.calls:
        kernel = program.kernels[call.kernel]
        callee = declare_kernel(module, kernel)
        args = [rt]
        for buf, ref in zip(kernel.buffers, call.args):
            args.append(b.bitcast(base(ref), memory_type(buf.dtype).as_pointer()))
        b.call(callee, args)
    b.ret_void()
    return module
