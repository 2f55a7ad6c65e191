"""Small analyses over kernel IR: free names, and how an index moves with a loop variable."""

from __future__ import annotations

from collections.abc import Iterator

from torsh_gen.backends.kernel.ir import (
    Assign,
    Bin,
    Bitcast,
    Call,
    Cast,
    Const,
    Expr,
    If,
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


def sub_exprs(e: Expr) -> Iterator[Expr]:
    """``e`` and every expression inside it."""
    yield e
    if isinstance(e, Load):
        yield from sub_exprs(e.index)
    elif isinstance(e, Bin):
        yield from sub_exprs(e.a)
        yield from sub_exprs(e.b)
    elif isinstance(e, (Un,)):
        yield from sub_exprs(e.x)
    elif isinstance(e, (Cast, Bitcast, ShflXor)):
        yield from sub_exprs(e.x)
    elif isinstance(e, ShflIdx):
        yield from sub_exprs(e.x)
        yield from sub_exprs(e.src)
    elif isinstance(e, Select):
        yield from sub_exprs(e.cond)
        yield from sub_exprs(e.a)
        yield from sub_exprs(e.b)
    elif isinstance(e, Call):
        for a in e.args:
            yield from sub_exprs(a)


def stmt_exprs(stmts: list[Stmt]) -> Iterator[Expr]:
    """Every top-level expression of ``stmts`` and of the statements nested in them."""
    for s in stmts:
        if isinstance(s, Let):
            yield s.value
        elif isinstance(s, Local):
            yield s.init
        elif isinstance(s, Assign):
            yield s.value
        elif isinstance(s, Store):
            yield s.index
            yield s.value
        elif isinstance(s, Loop):
            yield s.start
            yield s.stop
            yield from stmt_exprs(s.body)
        elif isinstance(s, If):
            yield s.cond
            yield from stmt_exprs(s.then)
            yield from stmt_exprs(s.orelse)


def defined_names(stmts: list[Stmt]) -> set[str]:
    """Names bound inside ``stmts`` (lets, locals, loop variables)."""
    out: set[str] = set()
    for s in stmts:
        if isinstance(s, (Let, Local)):
            out.add(s.name)
        elif isinstance(s, Loop):
            out.add(s.var)
            out |= defined_names(s.body)
        elif isinstance(s, If):
            out |= defined_names(s.then) | defined_names(s.orelse)
    return out


def used_names(stmts: list[Stmt]) -> tuple[set[str], set[str]]:
    """(variable names read, buffer names touched) anywhere in ``stmts``."""
    names: set[str] = set()
    bufs: set[str] = set()
    for top in stmt_exprs(stmts):
        for e in sub_exprs(top):
            if isinstance(e, Var):
                names.add(e.name)
            elif isinstance(e, Load):
                bufs.add(e.buf)
    for s in _walk(stmts):
        if isinstance(s, Store):
            bufs.add(s.buf)
        elif isinstance(s, Assign):
            names.add(s.name)
    return names, bufs


def assigned_names(stmts: list[Stmt]) -> set[str]:
    """Names of locals assigned anywhere in ``stmts``."""
    return {s.name for s in _walk(stmts) if isinstance(s, Assign)}


def _walk(stmts: list[Stmt]) -> Iterator[Stmt]:
    for s in stmts:
        yield s
        if isinstance(s, Loop):
            yield from _walk(s.body)
        elif isinstance(s, If):
            yield from _walk(s.then)
            yield from _walk(s.orelse)


def walk(stmts: list[Stmt]) -> Iterator[Stmt]:
    """Every statement of ``stmts``, nested ones included, in order."""
    return _walk(stmts)


def stride(e: Expr, var: str, known: dict[str, int | None]) -> int | None:
    """How ``e`` changes when ``var`` grows by one: an int for affine integer expressions
    (0: does not depend on it), None when unknown. ``known`` gives the strides of names
    bound by lets (names absent from it do not depend on ``var``)."""
    if isinstance(e, Const):
        return 0
    if isinstance(e, Var):
        if e.name == var:
            return 1
        return known.get(e.name, 0)
    if isinstance(e, Load):
        return 0 if stride(e.index, var, known) == 0 else None
    if isinstance(e, Bin):
        sa, sb = stride(e.a, var, known), stride(e.b, var, known)
        if sa == 0 and sb == 0:
            return 0
        if sa is None or sb is None or is_float(e.dtype):
            return None
        if e.op == "add":
            return sa + sb
        if e.op == "sub":
            return sa - sb
        if e.op == "mul":
            if sb == 0 and isinstance(e.b, Const):
                return sa * int(e.b.value)
            if sa == 0 and isinstance(e.a, Const):
                return sb * int(e.a.value)
        return None
    if isinstance(e, Cast):
        s = stride(e.x, var, known)
        if s == 0:
            return 0
        return s if not is_float(e.dtype) and not is_float(e.x.dtype) and e.dtype != "bool" else None
    parts = list(sub_exprs(e))[1:]
    return 0 if all(stride(p, var, known) == 0 for p in parts if p is not e) else None
