"""Kernel IR → LLVM IR (llvmlite ``ir.IRBuilder``): one function per kernel.

A kernel becomes ``void name(i8* rt, T* buf..., i64 dim...)``. ``rt`` is the runtime
handle that parallel loops hand to ``tg_parallel_for`` (the target's thread pool; on
single-threaded targets a serial loop). The emitter only translates; what is a vector or
a parallel loop was decided in the kernel IR:

- ``vector`` loops with ``width`` W run W iterations at a time as ``<W x T>`` values, then
  a scalar remainder loop. Expressions that do not depend on the loop variable stay
  scalar; loads and stores whose index moves by one per iteration are vector accesses,
  loads moving by 2-4 elements are one wide load plus a shuffle, others go lane by
  lane. Locals declared inside become vectors; assigning a local
  declared outside, or branching on a lane-varying condition, is refused.
- ``parallel`` loops are outlined into ``name.par<k>(i8* ctx, i64 begin, i64 end)``; the
  values the body reads travel in a stack struct.
- ``warp`` loops (32 lanes in lockstep, a GPU schedule run on the host) are one 32-lane
  vector iteration; ``ShflXor`` is a vector shuffle.
- ``unroll`` loops are serial loops (LLVM unrolls short constant trip counts itself).
- ``rolled`` loops are serial loops that LLVM is told not to unroll (``llvm.loop`` with
  ``llvm.loop.unroll.disable``), for bodies whose registers one iteration already fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from torsh_gen.backends.kernel.analysis import assigned_names, defined_names, stride, used_names
from torsh_gen.backends.kernel.ir import (
    WARP,
    Assign,
    Bin,
    Bitcast,
    Call,
    Cast,
    Const,
    Expr,
    If,
    Kernel,
    Let,
    Load,
    Local,
    Loop,
    Select,
    ShflIdx,
    ShflXor,
    Stmt,
    Store,
    Un,
    Var,
    is_float,
    is_signed,
)
from torsh_gen.backends.llvm.types import I1, I8, I8P, I32, I64, VOID, memory_type, value_type

PARALLEL_FOR = "tg_parallel_for"
#: Loads moving by up to this many elements per lane are one wide load plus a shuffle.
MAX_SHUFFLE_STRIDE = 4
_BODY_TYPE = ir.FunctionType(VOID, [I8P, I64, I64])
PARALLEL_FOR_TYPE = ir.FunctionType(VOID, [I8P, _BODY_TYPE.as_pointer(), I8P, I64, I64])

_INTRINSIC = {"sqrt": "llvm.sqrt", "fabs": "llvm.fabs", "floor": "llvm.floor", "ceil": "llvm.ceil",
              "trunc": "llvm.trunc", "roundeven": "llvm.roundeven", "fma": "llvm.fmuladd"}
_FCMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


class EmitError(ValueError):
    """The kernel uses a construct the emitter cannot translate (a lowering bug)."""


@dataclass
class _Val:
    """An emitted value: scalar (``lanes`` 0) or a vector of ``lanes`` elements."""

    v: ir.Value
    dtype: str
    lanes: int = 0


def split_offset(index: Expr) -> tuple[Expr, int]:
    """``index`` as ``rest + offset`` with a positive constant ``offset``: the constant
    terms of its top-level sum taken out (``add(add(a, 2), b)`` → ``(add(a, b), 2)``), so
    the emitter can address them as a separate constant step; ``(index, 0)`` otherwise."""
    rest, offset = _split(index)
    return (rest, offset) if offset > 0 else (index, 0)


def _split(index: Expr) -> tuple[Expr, int]:
    if isinstance(index, Bin) and index.op in ("add", "sub"):
        a, ca = _split(index.a)
        if isinstance(index.b, Const) and not isinstance(index.b.value, bool):
            c = int(index.b.value)
            return a, ca + (c if index.op == "add" else -c)
        if index.op == "add":
            b, cb = _split(index.b)
            if isinstance(a, Const):
                return b, int(a.value) + ca + cb
            return (Bin("add", a, b) if (ca or cb) else index), ca + cb
        return (Bin("sub", a, index.b) if ca else index), ca
    return index, 0


@dataclass
class _Scope:
    names: dict[str, _Val | ir.AllocaInstr] = field(default_factory=dict)
    local_types: dict[str, tuple[str, int]] = field(default_factory=dict)
    strides: dict[str, int | None] = field(default_factory=dict)


def declare_kernel(module: ir.Module, kernel: Kernel) -> ir.Function:
    """The LLVM declaration (or the existing definition) of ``kernel`` in ``module``."""
    if kernel.name in module.globals:
        return module.globals[kernel.name]
    params = [I8P] + [memory_type(b.dtype).as_pointer() for b in kernel.buffers] + [I64] * len(kernel.dims)
    return ir.Function(module, ir.FunctionType(VOID, params), kernel.name)


def parallel_for(module: ir.Module) -> ir.Function:
    """The declaration of the runtime's ``tg_parallel_for``."""
    if PARALLEL_FOR in module.globals:
        return module.globals[PARALLEL_FOR]
    return ir.Function(module, PARALLEL_FOR_TYPE, PARALLEL_FOR)


def emit_kernel(module: ir.Module, kernel: Kernel) -> ir.Function:
    """Define ``kernel`` in ``module`` and return the function."""
    fn = declare_kernel(module, kernel)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    block = fn.append_basic_block("entry")
    scope = _Scope()
    args = list(fn.args)
    bufs = {b.name: (args[1 + i], b.dtype) for i, b in enumerate(kernel.buffers)}
    for j, d in enumerate(kernel.dims):
        scope.names[d] = _Val(args[1 + len(kernel.buffers) + j], "i64")
    _FunctionEmitter(module, fn, ir.IRBuilder(block), args[0], bufs).run(kernel.body, scope)
    return fn


class _FunctionEmitter:
    def __init__(self, module: ir.Module, fn: ir.Function, b: ir.IRBuilder, rt: ir.Value, bufs: dict) -> None:
        self.module = module
        self.fn = fn
        self.b = b
        self.rt = rt
        self.bufs = bufs
        self.vec: tuple[str, int] | None = None  # (loop variable, width) of the open vector loop
        self._outlined = 0
        # Values of the expressions of the statement being emitted, by node identity (the
        # node is kept beside its value so its id cannot be reused). Lowerings share
        # subexpressions (a float8 conversion uses its operand a dozen times, nested), so a
        # tree walk would emit exponentially many instructions.
        self._memo: dict[int, tuple[Expr, _Val]] = {}

    def run(self, stmts: list[Stmt], scope: _Scope) -> None:
        self.block(stmts, scope)
        self.b.ret_void()

    # statements -------------------------------------------------------------
    def block(self, stmts: list[Stmt], scope: _Scope) -> None:
        scope = _Scope(dict(scope.names), dict(scope.local_types), dict(scope.strides))
        for s in stmts:
            self.stmt(s, scope)

    def stmt(self, s: Stmt, scope: _Scope) -> None:
        outer, self._memo = self._memo, {}  # a value is reused only within its statement
        try:
            self._stmt(s, scope)
        finally:
            self._memo = outer

    def _stmt(self, s: Stmt, scope: _Scope) -> None:
        if isinstance(s, Let):
            val = self.expr(s.value, scope)
            scope.names[s.name] = val
            if self.vec:
                scope.strides[s.name] = stride(s.value, self.vec[0], scope.strides)
        elif isinstance(s, Local):
            lanes = self.vec[1] if self.vec else 0
            t = value_type(s.dtype)
            slot = self._entry_alloca(ir.VectorType(t, lanes) if lanes else t)
            scope.names[s.name] = slot
            scope.local_types[s.name] = (s.dtype, lanes)
            if self.vec:
                scope.strides[s.name] = None
            self.b.store(self._widen(self.expr(s.init, scope), lanes).v, slot)
        elif isinstance(s, Assign):
            slot = scope.names[s.name]
            dtype, lanes = scope.local_types[s.name]
            val = self.expr(s.value, scope)
            if val.lanes and not lanes:
                raise EmitError(f"local {s.name} declared outside a vector loop is assigned inside it")
            self.b.store(self._widen(val, lanes).v, slot)
        elif isinstance(s, Store):
            self.store(s, scope)
        elif isinstance(s, Loop):
            self.loop(s, scope)
        elif isinstance(s, If):
            cond = self.expr(s.cond, scope)
            if cond.lanes:
                raise EmitError("an If condition varies across the lanes of a vector loop; use Select")
            with self.b.if_else(cond.v) as (then, orelse):
                with then:
                    self.block(s.then, scope)
                with orelse:
                    self.block(s.orelse, scope)
        else:
            raise EmitError(f"unknown statement {type(s).__name__}")

    def _entry_alloca(self, t: ir.Type) -> ir.AllocaInstr:
        entry = self.fn.entry_basic_block
        with self.b.goto_block(entry):
            if entry.instructions:
                self.b.position_before(entry.instructions[0])
            return self.b.alloca(t)

    def store(self, s: Store, scope: _Scope) -> None:
        ptr, dtype = self.bufs[s.buf]
        val = self.expr(s.value, scope)
        rest, offset = split_offset(s.index)
        if not self.vec:
            self.b.store(self._to_memory(val).v, self._element_ptr(ptr, self.expr(rest, scope).v, offset))
            return
        var, width = self.vec
        st = stride(s.index, var, scope.strides)
        index = self.expr(rest, scope)
        if st == 1:
            vp = self._vector_ptr(ptr, index, dtype, width, offset)
            self.b.store(self._to_memory(self._widen(val, width)).v, vp, align=_align(dtype))
            return
        if st == 0 and not val.lanes:
            self.b.store(self._to_memory(val).v, self._element_ptr(ptr, index.v, offset))
            return
        index, val = self._widen(index, width), self._widen(val, width)
        for lane in range(width):
            k = ir.Constant(I32, lane)
            one = _Val(self.b.extract_element(val.v, k), val.dtype)
            self.b.store(self._to_memory(one).v, self._element_ptr(ptr, self.b.extract_element(index.v, k), offset))

    def loop(self, s: Loop, scope: _Scope) -> None:
        start, stop = self.expr(s.start, scope), self.expr(s.stop, scope)
        if start.lanes or stop.lanes:
            raise EmitError("loop bounds vary across the lanes of a vector loop")
        if s.kind == "parallel" and not self.vec:
            self._parallel(s, scope, start.v, stop.v)
        elif s.kind == "warp" and not self.vec:  # the lanes in lockstep: one 32-lane vector
            if assigned_names(s.body) - defined_names(s.body):
                raise EmitError("a warp loop assigns a local declared outside it")
            self.vec = (s.var, WARP)
            self._serial(s, scope, start.v, stop.v, step=WARP)
            self.vec = None
        elif s.kind == "vector" and s.width > 1 and not self.vec:
            if assigned_names(s.body) - defined_names(s.body):
                raise EmitError("a vector loop assigns a local declared outside it (a reduction)")
            n = self.b.sub(stop.v, start.v)
            main_stop = self.b.add(start.v, self.b.mul(self.b.sdiv(n, ir.Constant(I64, s.width)), ir.Constant(I64, s.width)))
            self.vec = (s.var, s.width)
            self._serial(s, scope, start.v, main_stop, step=s.width)
            self.vec = None
            self._serial(s, scope, main_stop, stop.v)
        else:
            self._serial(s, scope, start.v, stop.v)

    def _serial(self, s: Loop, scope: _Scope, start: ir.Value, stop: ir.Value, step: int | ir.Value = 1) -> None:
        """``for var in range(start, stop, step)``; an int step above 1 runs whole vectors
        (the last iteration's lanes all below ``stop``), an ``ir.Value`` step (a GPU grid's
        stride) one index at a time."""
        pre = self.b.block
        header = self.fn.append_basic_block("loop")
        body = self.fn.append_basic_block("body")
        exit_ = self.fn.append_basic_block("done")
        self.b.branch(header)
        self.b.position_at_end(header)
        i = self.b.phi(I64)
        i.add_incoming(start, pre)
        lanes = step if isinstance(step, int) else 1
        last = ir.Constant(I64, lanes - 1)
        self.b.cbranch(self.b.icmp_signed("<", self.b.add(i, last) if lanes > 1 else i, stop), body, exit_)
        self.b.position_at_end(body)
        inner = _Scope(dict(scope.names), dict(scope.local_types), dict(scope.strides))
        if self.vec and lanes > 1:
            inner.names[s.var] = _Val(self._iota(i, step), "i64", step)
            inner.strides[s.var] = 1
        else:
            inner.names[s.var] = _Val(i, "i64")
            inner.strides[s.var] = 0
        self.block(s.body, inner)
        nxt = self.b.add(i, ir.Constant(I64, step) if isinstance(step, int) else step)
        back = self.b.branch(header)
        if s.kind == "rolled":
            back.set_metadata("llvm.loop", self._unroll_disabled())
        i.add_incoming(nxt, self.b.block)
        self.b.position_at_end(exit_)

    def _unroll_disabled(self) -> ir.values.MDValue:
        """A fresh loop ID (LLVM wants one per loop, its first operand itself) asking
        LLVM's unroller to leave the loop as it is."""
        hint = self.module.add_metadata([ir.MetaDataString(self.module, "llvm.loop.unroll.disable")])
        loop_id = ir.values.MDValue(self.module, [hint], name=str(len(self.module.metadata)))
        loop_id.operands = (loop_id, hint)
        return loop_id

    def _iota(self, base: ir.Value, width: int) -> ir.Value:
        vt = ir.VectorType(I64, width)
        splat = self._splat(base, vt)
        return self.b.add(splat, ir.Constant(vt, list(range(width))))

    def _splat(self, v: ir.Value, vt: ir.VectorType) -> ir.Value:
        undef = ir.Constant(vt, ir.Undefined)
        one = self.b.insert_element(undef, v, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, undef, ir.Constant(ir.VectorType(I32, vt.count), [0] * vt.count))

    def _parallel(self, s: Loop, scope: _Scope, start: ir.Value, stop: ir.Value) -> None:
        names, bufs = used_names(s.body)
        if assigned_names(s.body) - defined_names(s.body):
            raise EmitError("a parallel loop assigns a local declared outside it (a reduction)")
        free = sorted(n for n in names - defined_names(s.body) - {s.var} if n in scope.names)
        buf_names = sorted(b for b in bufs if b in self.bufs)
        fields = [self.bufs[b][0].type for b in buf_names] + [scope.names[n].v.type for n in free]
        struct = ir.LiteralStructType(fields or [I8])
        self._outlined += 1
        body_fn = ir.Function(self.module, _BODY_TYPE, f"{self.fn.name}.par{self._outlined}")
        body_fn.linkage = "internal"
        body_fn.attributes.add("nounwind")
        # pack the captured values
        ctx = self._entry_alloca(struct)
        for k, b in enumerate(buf_names):
            self.b.store(self.bufs[b][0], self.b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)]))
        for k, n in enumerate(free, start=len(buf_names)):
            self.b.store(scope.names[n].v, self.b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)]))
        pf = parallel_for(self.module)
        self.b.call(pf, [self.rt, body_fn, self.b.bitcast(ctx, I8P), start, stop])
        # the outlined body
        entry = body_fn.append_basic_block("entry")
        b2 = ir.IRBuilder(entry)
        c_arg, lo, hi = body_fn.args
        cptr = b2.bitcast(c_arg, struct.as_pointer())
        inner_bufs = {}
        for k, bname in enumerate(buf_names):
            inner_bufs[bname] = (b2.load(b2.gep(cptr, [ir.Constant(I32, 0), ir.Constant(I32, k)])), self.bufs[bname][1])
        inner = _Scope()
        for k, n in enumerate(free, start=len(buf_names)):
            old = scope.names[n]
            inner.names[n] = _Val(b2.load(b2.gep(cptr, [ir.Constant(I32, 0), ir.Constant(I32, k)])), old.dtype, old.lanes)
        sub = _FunctionEmitter(self.module, body_fn, b2, ir.Constant(I8P, None), inner_bufs)
        sub._outlined = self._outlined * 100
        serial = Loop(s.var, Var("__lo"), Var("__hi"), s.body, "serial")
        inner.names["__lo"] = _Val(lo, "i64")
        inner.names["__hi"] = _Val(hi, "i64")
        sub.run([serial], inner)

    # expressions ------------------------------------------------------------
    def expr(self, e: Expr, scope: _Scope) -> _Val:
        if isinstance(e, (Const, Var)):
            return self._expr(e, scope)
        hit = self._memo.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        val = self._expr(e, scope)
        self._memo[id(e)] = (e, val)
        return val

    def _expr(self, e: Expr, scope: _Scope) -> _Val:
        b = self.b
        if isinstance(e, Const):
            return _Val(_const(e.value, e.dtype), e.dtype)
        if isinstance(e, Var):
            got = scope.names.get(e.name)
            if got is None:
                raise EmitError(f"unknown name {e.name}")
            if isinstance(got, _Val):
                return got
            dtype, lanes = scope.local_types[e.name]
            return _Val(b.load(got), dtype, lanes)
        if isinstance(e, Load):
            return self.load(e, scope)
        if isinstance(e, Bin):
            x, y = self.expr(e.a, scope), self.expr(e.b, scope)
            lanes = max(x.lanes, y.lanes)
            x, y = self._widen(x, lanes), self._widen(y, lanes)
            return _Val(self._binary(e.op, x.v, y.v, e.a.dtype), e.dtype, lanes)
        if isinstance(e, Un):
            x = self.expr(e.x, scope)
            if e.op == "neg":
                v = b.fneg(x.v) if is_float(x.dtype) else b.neg(x.v)
            else:
                v = b.not_(x.v)
            return _Val(v, x.dtype, x.lanes)
        if isinstance(e, Cast):
            x = self.expr(e.x, scope)
            return _Val(self._cast(x.v, x.dtype, e.dtype, x.lanes), e.dtype, x.lanes)
        if isinstance(e, Bitcast):
            x = self.expr(e.x, scope)
            t = value_type(e.dtype)
            return _Val(b.bitcast(x.v, ir.VectorType(t, x.lanes) if x.lanes else t), e.dtype, x.lanes)
        if isinstance(e, Select):
            c, x, y = self.expr(e.cond, scope), self.expr(e.a, scope), self.expr(e.b, scope)
            lanes = max(c.lanes, x.lanes, y.lanes)
            x, y = self._widen(x, lanes), self._widen(y, lanes)
            cv = c.v if c.lanes or not lanes else self._widen(c, lanes).v
            return _Val(b.select(cv, x.v, y.v), x.dtype, lanes)
        if isinstance(e, ShflXor):
            x = self.expr(e.x, scope)
            if not x.lanes:  # the same in every lane
                return x
            picks = ir.Constant(ir.VectorType(I32, x.lanes), [k ^ e.mask for k in range(x.lanes)])
            return _Val(b.shuffle_vector(x.v, ir.Constant(x.v.type, ir.Undefined), picks), x.dtype, x.lanes)
        if isinstance(e, ShflIdx):
            x, src = self.expr(e.x, scope), self.expr(e.src, scope)
            if src.lanes:
                raise EmitError("ShflIdx reads a lane that varies across the lanes")
            if not x.lanes:
                return x
            lane = b.trunc(b.and_(src.v, ir.Constant(I64, x.lanes - 1)), I32)
            return _Val(b.extract_element(x.v, lane), x.dtype)
        if isinstance(e, Call):
            args = [self.expr(a, scope) for a in e.args]
            lanes = max(a.lanes for a in args)
            args = [self._widen(a, lanes) for a in args]
            fn = self._intrinsic(_INTRINSIC[e.fn], args[0].v.type, len(args))
            return _Val(b.call(fn, [a.v for a in args]), e.dtype, lanes)
        raise EmitError(f"unknown expression {type(e).__name__}")

    def _intrinsic(self, base: str, t: ir.Type, nargs: int) -> ir.Function:
        if isinstance(t, ir.VectorType):
            suffix = f"v{t.count}{_scalar_suffix(t.element)}"
        else:
            suffix = _scalar_suffix(t)
        name = f"{base}.{suffix}"
        if name in self.module.globals:
            return self.module.globals[name]
        return ir.Function(self.module, ir.FunctionType(t, [t] * nargs), name)

    def load(self, e: Load, scope: _Scope) -> _Val:
        ptr, dtype = self.bufs[e.buf]
        rest, offset = split_offset(e.index)
        index = self.expr(rest, scope)
        if not index.lanes:
            return self._from_memory(self.b.load(self._element_ptr(ptr, index.v, offset)), dtype, 0)
        var, width = self.vec  # type: ignore[misc]
        st = stride(e.index, var, scope.strides)
        if st == 1:
            vp = self._vector_ptr(ptr, index, dtype, width, offset)
            return self._from_memory(self.b.load(vp, align=_align(dtype)), dtype, width)
        if st is not None and 2 <= st <= MAX_SHUFFLE_STRIDE:
            # one contiguous load of exactly the span the lanes cover (never past the last
            # element read), then a shuffle picking every st-th element
            vp = self._vector_ptr(ptr, index, dtype, st * (width - 1) + 1, offset)
            wide = self.b.load(vp, align=_align(dtype))
            picks = ir.Constant(ir.VectorType(I32, width), [st * k for k in range(width)])
            lanes = self.b.shuffle_vector(wide, ir.Constant(wide.type, ir.Undefined), picks)
            return self._from_memory(lanes, dtype, width)
        vt = ir.VectorType(memory_type(dtype), width)
        acc = ir.Constant(vt, ir.Undefined)
        for lane in range(width):
            k = ir.Constant(I32, lane)
            one = self.b.load(self._element_ptr(ptr, self.b.extract_element(index.v, k), offset))
            acc = self.b.insert_element(acc, one, k)
        return self._from_memory(acc, dtype, width)

    def _element_ptr(self, ptr: ir.Value, index: ir.Value, offset: int = 0) -> ir.Value:
        """``&ptr[index + offset]`` as in-bounds GEPs, the constant ``offset`` apart: every
        access of a kernel is in its buffer, and a separate non-negative constant step lets
        the backend fold it into the access (wasm32's load/store offset immediate)."""
        p = self.b.gep(ptr, [index], inbounds=True)
        return self.b.gep(p, [ir.Constant(I64, offset)], inbounds=True) if offset else p

    def _vector_ptr(self, ptr: ir.Value, index: _Val, dtype: str, count: int, offset: int = 0) -> ir.Value:
        """A ``<count x T>*`` at element ``offset`` past lane 0 of the vector ``index``."""
        base = self.b.extract_element(index.v, ir.Constant(I32, 0))
        vt = ir.VectorType(memory_type(dtype), count).as_pointer()
        return self.b.bitcast(self._element_ptr(ptr, base, offset), vt)

    def _from_memory(self, v: ir.Value, dtype: str, lanes: int) -> _Val:
        if dtype == "bool":
            zero = ir.Constant(ir.VectorType(I8, lanes), [0] * lanes) if lanes else ir.Constant(I8, 0)
            v = self.b.icmp_unsigned("!=", v, zero)
        return _Val(v, dtype, lanes)

    def _to_memory(self, val: _Val) -> _Val:
        if val.dtype != "bool":
            return val
        t = ir.VectorType(I8, val.lanes) if val.lanes else I8
        return _Val(self.b.zext(val.v, t), "u8", val.lanes)

    def _widen(self, val: _Val, lanes: int) -> _Val:
        if not lanes or val.lanes == lanes:
            return val
        return _Val(self._splat(val.v, ir.VectorType(val.v.type, lanes)), val.dtype, lanes)

    def _binary(self, op: str, x: ir.Value, y: ir.Value, dtype: str) -> ir.Value:
        b = self.b
        if is_float(dtype):
            if op in _FCMP:
                return b.fcmp_ordered(_FCMP[op], x, y) if op != "ne" else b.fcmp_unordered("!=", x, y)
            if op == "min":
                return b.select(b.fcmp_ordered("<", x, y), x, y)
            if op == "max":
                return b.select(b.fcmp_ordered(">", x, y), x, y)
            if op == "rem":  # LLVM's frem calls libm's fmod, which artifacts do not link
                raise EmitError("float rem is not a kernel-IR operation: use kernel.math.fmod")
            return {"add": b.fadd, "sub": b.fsub, "mul": b.fmul, "div": b.fdiv}[op](x, y)
        signed = is_signed(dtype) and dtype != "bool"
        if op in _FCMP:
            return (b.icmp_signed if signed else b.icmp_unsigned)(_FCMP[op], x, y)
        if op == "min":
            return b.select((b.icmp_signed if signed else b.icmp_unsigned)("<", x, y), x, y)
        if op == "max":
            return b.select((b.icmp_signed if signed else b.icmp_unsigned)(">", x, y), x, y)
        if op == "div":
            return b.sdiv(x, y) if signed else b.udiv(x, y)
        if op == "rem":
            return b.srem(x, y) if signed else b.urem(x, y)
        if op == "shr":
            return b.ashr(x, y) if signed else b.lshr(x, y)
        return {"add": b.add, "sub": b.sub, "mul": b.mul, "and": b.and_, "or": b.or_, "xor": b.xor, "shl": b.shl}[op](x, y)

    def _cast(self, v: ir.Value, src: str, dst: str, lanes: int) -> ir.Value:
        b = self.b
        t = value_type(dst)
        t = ir.VectorType(t, lanes) if lanes else t
        if src == dst:
            return v
        if dst == "bool":
            zero = ir.Constant(v.type, [0.0 if is_float(src) else 0] * lanes if lanes else (0.0 if is_float(src) else 0))
            return b.fcmp_unordered("!=", v, zero) if is_float(src) else b.icmp_unsigned("!=", v, zero)
        if is_float(src) and is_float(dst):
            return b.fpext(v, t) if dst == "f64" else b.fptrunc(v, t)
        if is_float(src):
            return b.fptosi(v, t) if is_signed(dst) else b.fptoui(v, t)
        if is_float(dst):
            return b.sitofp(v, t) if is_signed(src) and src != "bool" else b.uitofp(v, t)
        sw, dw = _bits(src), _bits(dst)
        if sw == dw:
            return v
        if sw > dw:
            return b.trunc(v, t)
        return b.sext(v, t) if is_signed(src) and src != "bool" else b.zext(v, t)


def _scalar_suffix(t: ir.Type) -> str:
    return "f32" if isinstance(t, ir.FloatType) else "f64"


def _bits(dtype: str) -> int:
    return 1 if dtype == "bool" else int(dtype[1:])


def _align(dtype: str) -> int:
    return 1 if dtype == "bool" else _bits(dtype) // 8


def _const(value: float | int | bool, dtype: str) -> ir.Constant:
    t = value_type(dtype)
    if dtype == "bool":
        return ir.Constant(I1, int(bool(value)))
    if is_float(dtype):
        return ir.Constant(t, float(value))
    bits = _bits(dtype)
    v = int(value) & ((1 << bits) - 1)
    return ir.Constant(t, v)
