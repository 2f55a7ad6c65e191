"""Runtime pieces written as LLVM IR, for targets (and the JIT) without a C runtime."""

from __future__ import annotations

from llvmlite import ir

from torsh_gen.backends.llvm.emit import PARALLEL_FOR, parallel_for


def define_serial_parallel_for(module: ir.Module) -> ir.Function:
    """``tg_parallel_for(rt, fn, ctx, begin, end)`` as one call ``fn(ctx, begin, end)``:
    the single-threaded targets' thread pool."""
    fn = parallel_for(module)
    if fn.blocks:
        return fn
    fn.linkage = "internal"
    _rt, body, ctx, begin, end = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.call(body, [ctx, begin, end])
    b.ret_void()
    assert fn.name == PARALLEL_FOR
    return fn
