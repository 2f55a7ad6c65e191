"""A numpy interpreter of the kernel IR: the test oracle of lowerings and schedules.

It runs a ``Kernel`` element by element on numpy arrays, with the semantics every emitter
must match: integer ``div``/``rem`` truncate toward zero (C), ``min``/``max`` are
``a < b ? a : b`` / ``a > b ? a : b`` (a NaN in ``a`` yields ``b``), float → int casts
truncate, ``shr`` is arithmetic on signed types. Loop kinds do not change the result, so
the interpreter runs every loop serially. Slow by design: tests use small shapes.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

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
)

NP = {
    "f32": np.float32, "f64": np.float64, "i8": np.int8, "u8": np.uint8, "i16": np.int16,
    "u16": np.uint16, "i32": np.int32, "u32": np.uint32, "i64": np.int64, "u64": np.uint64,
    "bool": np.bool_, "f16": np.float16, "bf16": ml_dtypes.bfloat16, "f8e4m3fn": ml_dtypes.float8_e4m3fn,
    "f8e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "f8e5m2": ml_dtypes.float8_e5m2, "f8e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "f4e2m1": ml_dtypes.float4_e2m1fn, "i4": ml_dtypes.int4, "u4": ml_dtypes.uint4, "i2": ml_dtypes.int2,
    "u2": ml_dtypes.uint2, "f8e8m0": ml_dtypes.float8_e8m0fnu,
}


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of a kernel-IR element type (``bool`` as numpy's bool, one byte)."""
    return np.dtype(NP[dtype])


def run_kernel(kernel: Kernel, buffers: dict[str, np.ndarray], dims: dict[str, int] | None = None) -> None:
    """Run ``kernel``: ``buffers`` maps each buffer name to a flat array, written in place."""
    env: dict[str, Any] = {d: np.int64(v) for d, v in (dims or {}).items()}
    for b in kernel.buffers:
        arr = buffers[b.name]
        if arr.dtype != numpy_dtype(b.dtype) or arr.ndim != 1:
            raise ValueError(f"buffer {b.name}: expected flat {b.dtype}, got {arr.dtype} {arr.shape}")
        size = int(_eval(b.size, env, buffers))
        if arr.size < size:
            raise ValueError(f"buffer {b.name}: {arr.size} elements, kernel needs {size}")
    with np.errstate(all="ignore"):
        _run_block(kernel.body, dict(env), buffers)


def _run_block(stmts: list[Stmt], env: dict[str, Any], bufs: dict[str, np.ndarray]) -> None:
    for s in stmts:
        if isinstance(s, (Let, Local)):
            v = s.value if isinstance(s, Let) else s.init
            env[s.name] = _cast(_eval(v, env, bufs), s.dtype if isinstance(s, Local) else v.dtype)
        elif isinstance(s, Assign):
            env[s.name] = _cast(_eval(s.value, env, bufs), np.asarray(env[s.name]).dtype)
        elif isinstance(s, Store):
            i = int(_eval(s.index, env, bufs))
            buf = bufs[s.buf]
            if not 0 <= i < buf.size:
                raise IndexError(f"store to {s.buf}[{i}] out of bounds ({buf.size})")
            buf[i] = _eval(s.value, env, bufs)
        elif isinstance(s, Loop) and s.kind == "warp":
            _run_warp(s, env, bufs)
        elif isinstance(s, Loop):
            start, stop = int(_eval(s.start, env, bufs)), int(_eval(s.stop, env, bufs))
            for i in range(start, stop):
                inner = dict(env)
                inner[s.var] = np.int64(i)
                _run_block(s.body, inner, bufs)
                for k in env:  # locals assigned inside the body persist
                    env[k] = inner[k]
        elif isinstance(s, If):
            branch = s.then if bool(_eval(s.cond, env, bufs)) else s.orelse
            inner = dict(env)
            _run_block(branch, inner, bufs)
            for k in env:
                env[k] = inner[k]
        else:
            raise TypeError(f"unknown statement {type(s).__name__}")


def _run_warp(loop: Loop, env: dict[str, Any], bufs: dict[str, np.ndarray]) -> None:
    """The lanes of a ``warp`` loop in lockstep: each statement runs in every lane before
    the next one, so ``ShflXor`` reads the other lane's value at the same point."""
    start = int(_eval(loop.start, env, bufs))
    if int(_eval(loop.stop, env, bufs)) - start != WARP:
        raise ValueError(f"a warp loop has {WARP} lanes")
    lanes: list[dict[str, Any]] = []
    for lane in range(WARP):
        lanes.append({**env, loop.var: np.int64(start + lane), _LANE: lane, _LANES: lanes})
    _lockstep(loop.body, lanes, bufs)


def _lockstep(stmts: list[Stmt], lanes: list[dict[str, Any]], bufs: dict[str, np.ndarray]) -> None:
    for s in stmts:
        if isinstance(s, (Let, Local, Assign)):
            e = s.value if isinstance(s, (Let, Assign)) else s.init
            values = [_eval(e, lane, bufs) for lane in lanes]
            for lane, v in zip(lanes, values):
                dtype = s.dtype if isinstance(s, Local) else (e.dtype if isinstance(s, Let) else np.asarray(lane[s.name]).dtype)
                lane[s.name] = _cast(v, dtype)
        elif isinstance(s, Store):
            writes = [(int(_eval(s.index, lane, bufs)), _eval(s.value, lane, bufs)) for lane in lanes]
            buf = bufs[s.buf]
            for i, v in writes:
                if not 0 <= i < buf.size:
                    raise IndexError(f"store to {s.buf}[{i}] out of bounds ({buf.size})")
                buf[i] = v
        elif isinstance(s, Loop):
            bounds = {(int(_eval(s.start, lane, bufs)), int(_eval(s.stop, lane, bufs))) for lane in lanes}
            if len(bounds) != 1:
                raise ValueError("loop bounds vary across the lanes of a warp")
            (lo, hi), = bounds
            for i in range(lo, hi):
                for lane in lanes:
                    lane[s.var] = np.int64(i)
                _lockstep(s.body, lanes, bufs)
        elif isinstance(s, If):
            taken = {bool(_eval(s.cond, lane, bufs)) for lane in lanes}
            if len(taken) != 1:
                raise ValueError("an If condition varies across the lanes of a warp; use Select")
            _lockstep(s.then if taken.pop() else s.orelse, lanes, bufs)
        else:
            raise TypeError(f"unknown statement {type(s).__name__}")


_LANE, _LANES = "__lane__", "__lanes__"


def _cast(value: Any, dtype: Any) -> Any:
    target = numpy_dtype(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    if target == np.bool_:
        return np.bool_(value != 0)
    v = np.asarray(value)
    if v.dtype.kind == "f" and target.kind in "iu":
        f = float(v)
        if not math.isfinite(f):
            return target.type(0)
        return np.array(math.trunc(f)).astype(target)[()]
    return v.astype(target)[()]


def _eval(e: Expr, env: dict[str, Any], bufs: dict[str, np.ndarray], memo: dict | None = None) -> Any:
    """The value of ``e``; ``memo`` holds the values of the nodes met so far in this
    evaluation, by identity (with the node, so its id stays taken): lowerings share
    subexpressions, and a tree walk of a float8 conversion is exponential in its depth."""
    if isinstance(e, (Const, Var)):
        return _cast(e.value, e.dtype) if isinstance(e, Const) else env[e.name]
    if memo is None:
        memo = {}
    hit = memo.get(id(e))
    if hit is not None and hit[0] is e:
        return hit[1]
    value = _eval_node(e, env, bufs, memo)
    memo[id(e)] = (e, value)
    return value


def _eval_node(e: Expr, env: dict[str, Any], bufs: dict[str, np.ndarray], memo: dict) -> Any:
    if isinstance(e, Load):
        i = int(_eval(e.index, env, bufs, memo))
        buf = bufs[e.buf]
        if not 0 <= i < buf.size:
            raise IndexError(f"load from {e.buf}[{i}] out of bounds ({buf.size})")
        return buf[i]
    if isinstance(e, Bin):
        return _binary(e.op, _eval(e.a, env, bufs, memo), _eval(e.b, env, bufs, memo), e.a.dtype)
    if isinstance(e, Un):
        x = _eval(e.x, env, bufs, memo)
        if e.op == "neg":
            return -x
        return np.bool_(not x) if e.x.dtype == "bool" else ~x
    if isinstance(e, Cast):
        return _cast(_eval(e.x, env, bufs, memo), e.dtype)
    if isinstance(e, Bitcast):
        x = np.asarray(_eval(e.x, env, bufs, memo))
        return x.reshape(1).view(numpy_dtype(e.dtype))[0]
    if isinstance(e, Select):
        return _eval(e.a, env, bufs, memo) if bool(_eval(e.cond, env, bufs, memo)) else _eval(e.b, env, bufs, memo)
    if isinstance(e, Call):
        args = [_eval(a, env, bufs, memo) for a in e.args]
        return _intrinsic(e.fn, args, e.dtype)
    if isinstance(e, ShflXor):
        if _LANES not in env:
            raise ValueError("ShflXor outside a warp loop")
        return _eval(e.x, env[_LANES][env[_LANE] ^ e.mask], bufs)
    if isinstance(e, ShflIdx):
        if _LANES not in env:
            raise ValueError("ShflIdx outside a warp loop")
        return _eval(e.x, env[_LANES][int(_eval(e.src, env, bufs)) % WARP], bufs)
    raise TypeError(f"unknown expression {type(e).__name__}")


def _binary(op: str, a: Any, b: Any, dtype: str) -> Any:
    t = NP[dtype]
    if op == "add":
        return t(a + b)
    if op == "sub":
        return t(a - b)
    if op == "mul":
        return t(a * b)
    if op == "div":
        if is_float(dtype):
            return t(a / b)
        if b == 0:
            return t(0)
        q = abs(int(a)) // abs(int(b))
        return t(q if (a >= 0) == (b >= 0) else -q)
    if op == "rem":
        if is_float(dtype):
            raise ValueError("float rem is not a kernel-IR operation: use kernel.math.fmod")
        if b == 0:
            return t(0)
        r = abs(int(a)) % abs(int(b))
        return t(r if a >= 0 else -r)
    if op == "min":
        return a if a < b else b
    if op == "max":
        return a if a > b else b
    if op in ("and", "or", "xor"):
        if dtype == "bool":
            return np.bool_({"and": a and b, "or": a or b, "xor": a != b}[op])
        return t({"and": a & b, "or": a | b, "xor": a ^ b}[op])
    if op == "shl":
        return t(a << b)
    if op == "shr":
        return t(a >> b)
    cmp = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b, "ne": a != b}
    return np.bool_(cmp[op])


def _intrinsic(fn: str, args: list[Any], dtype: str) -> Any:
    t = NP[dtype]
    x = args[0]
    if fn == "sqrt":
        return t(np.sqrt(x))
    if fn == "fabs":
        return t(np.abs(x))
    if fn == "floor":
        return t(np.floor(x))
    if fn == "ceil":
        return t(np.ceil(x))
    if fn == "trunc":
        return t(np.trunc(x))
    if fn == "roundeven":
        return t(np.rint(x))
    if fn == "fma":
        return t(np.float64(x) * np.float64(args[1]) + np.float64(args[2]))
    raise ValueError(f"unknown intrinsic {fn}")


def call_buffers(
    kernel: Kernel, args: list[Any], inputs: list[np.ndarray], outputs: list[np.ndarray], memory: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Flat views, by buffer name, of one kernel call's arguments (``TensorRef``s of a
    program): inputs and outputs by index, ``weights``/``workspace`` from ``memory`` bytes."""
    views = {}
    for buf, ref in zip(kernel.buffers, args):
        dt = numpy_dtype(buf.dtype)  # a half tensor's raw bits (kernel/storage.py)
        if ref.kind in ("input", "output"):
            views[buf.name] = (inputs if ref.kind == "input" else outputs)[ref.index].reshape(-1).view(dt)
        else:
            n = int(np.prod(ref.shape, dtype=np.int64))
            views[buf.name] = memory[ref.kind][ref.offset : ref.offset + n * dt.itemsize].view(dt)
    return views
