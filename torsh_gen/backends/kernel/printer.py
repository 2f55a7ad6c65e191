"""Kernel IR as text: for reading lowerings, golden tests and de-duplicating kernels."""

from __future__ import annotations

from torsh_gen.backends.kernel.ir import (
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
)


def format_kernel(kernel: Kernel, name: str | None = None) -> str:
    """The kernel as indented pseudo-code (``name`` replaces the kernel's name)."""
    params = ", ".join(f"{b.name}: {b.dtype}[{format_expr(b.size)}]" for b in kernel.buffers)
    dims = "".join(f", {d}: i64" for d in kernel.dims)
    lines = [f"kernel {name or kernel.name}({params}{dims}) {{"]
    _block(kernel.body, 1, lines)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _block(stmts: list[Stmt], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for s in stmts:
        if isinstance(s, Let):
            lines.append(f"{pad}{s.name} = {format_expr(s.value)}")
        elif isinstance(s, Local):
            lines.append(f"{pad}var {s.name}: {s.dtype} = {format_expr(s.init)}")
        elif isinstance(s, Assign):
            lines.append(f"{pad}{s.name} := {format_expr(s.value)}")
        elif isinstance(s, Store):
            lines.append(f"{pad}{s.buf}[{format_expr(s.index)}] = {format_expr(s.value)}")
        elif isinstance(s, Loop):
            kind = f"{s.kind}{s.width}" if s.kind in ("vector", "gpu") and s.width > 1 else s.kind
            lines.append(f"{pad}for {s.var} in {format_expr(s.start)}..{format_expr(s.stop)} {kind} {{")
            _block(s.body, depth + 1, lines)
            lines.append(f"{pad}}}")
        elif isinstance(s, If):
            lines.append(f"{pad}if {format_expr(s.cond)} {{")
            _block(s.then, depth + 1, lines)
            if s.orelse:
                lines.append(f"{pad}}} else {{")
                _block(s.orelse, depth + 1, lines)
            lines.append(f"{pad}}}")


def format_expr(e: Expr) -> str:
    """One expression as text."""
    if isinstance(e, Const):
        return f"{e.value!r}:{e.dtype}"
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Load):
        return f"{e.buf}[{format_expr(e.index)}]"
    if isinstance(e, Bin):
        return f"{e.op}({format_expr(e.a)}, {format_expr(e.b)})"
    if isinstance(e, Un):
        return f"{e.op}({format_expr(e.x)})"
    if isinstance(e, Cast):
        return f"{e.dtype}({format_expr(e.x)})"
    if isinstance(e, Bitcast):
        return f"bitcast<{e.dtype}>({format_expr(e.x)})"
    if isinstance(e, ShflXor):
        return f"shfl_xor({format_expr(e.x)}, {e.mask})"
    if isinstance(e, ShflIdx):
        return f"shfl_idx({format_expr(e.x)}, {format_expr(e.src)})"
    if isinstance(e, Select):
        return f"select({format_expr(e.cond)}, {format_expr(e.a)}, {format_expr(e.b)})"
    if isinstance(e, Call):
        return f"{e.fn}({', '.join(format_expr(a) for a in e.args)})"
    raise TypeError(type(e).__name__)
