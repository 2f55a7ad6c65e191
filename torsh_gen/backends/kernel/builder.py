"""``KernelBuilder``: write kernel IR as nested ``with`` blocks that read like the loops.

    kb = KernelBuilder("relu")
    x = kb.buffer("x", "f32", n)
    y = kb.buffer("y", "f32", n, writable=True)
    with kb.loop(n, kind="vector", width=16) as i:
        y[i] = maximum(x[i], 0.0)
    kernel = kb.build()

Names are generated (``hint`` plus a counter), so lowerings never collide and no
model-derived string ever becomes a kernel-IR name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torsh_gen.backends.kernel.ir import (
    INDEX,
    Assign,
    Buffer,
    Expr,
    ExprLike,
    If,
    Kernel,
    Let,
    Load,
    Local,
    Loop,
    Stmt,
    Store,
    Var,
    as_expr,
    idx,
)
from torsh_gen.backends.kernel.storage import (
    STORAGE_DTYPES,
    compute_dtype,
    from_f32,
    is_storage,
    to_f32,
)


class BufferRef:
    """A buffer inside a builder: ``buf[i]`` loads, ``buf[i] = v`` stores.

    A buffer of a storage-only type (``f16``, ``bf16``: see ``kernel/storage.py``) is
    declared with its raw bits' type; its ``dtype`` here is the float32 that loads give
    and stores take, and ``storage`` names what memory holds."""

    def __init__(self, builder: KernelBuilder, buffer: Buffer, storage: str | None = None) -> None:
        self._kb = builder
        self.buffer = buffer
        self.name = buffer.name
        self.storage = storage
        self.dtype = compute_dtype(storage) if storage else buffer.dtype

    def __getitem__(self, index: ExprLike) -> Expr:
        load = Load(self.name, idx(index), self.buffer.dtype)
        return to_f32(load, self.storage) if self.storage else load

    def __setitem__(self, index: ExprLike, value: ExprLike) -> None:
        v = as_expr(value, self.dtype)
        self._kb.emit(Store(self.name, idx(index), from_f32(v, self.storage) if self.storage else v))


class KernelBuilder:
    """Accumulates buffers, dimension parameters and statements of one kernel."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.buffers: list[Buffer] = []
        self.dims: list[str] = []
        self._blocks: list[list[Stmt]] = [[]]
        self._count = 0

    def fresh(self, hint: str) -> str:
        """A new unique name starting with ``hint``."""
        self._count += 1
        return f"{hint}{self._count}"

    def buffer(self, name: str, dtype: str, size: ExprLike, writable: bool = False) -> BufferRef:
        """Declare a buffer parameter (``name`` must be a generated identifier; ``dtype`` may
        be a storage-only type, computed as float32)."""
        storage = dtype if is_storage(dtype) else None
        buf = Buffer(name, STORAGE_DTYPES[dtype] if storage else dtype, idx(size), writable)
        self.buffers.append(buf)
        return BufferRef(self, buf, storage)

    def dim(self, name: str) -> Var:
        """Declare an integer dimension parameter."""
        if name not in self.dims:
            self.dims.append(name)
        return Var(name, INDEX)

    def emit(self, stmt: Stmt) -> None:
        """Append a statement to the innermost open block."""
        self._blocks[-1].append(stmt)

    def let(self, value: ExprLike, hint: str = "t") -> Var:
        """Bind a new immutable name to ``value`` and return it."""
        v = as_expr(value, "f32")
        name = self.fresh(hint)
        self.emit(Let(name, v))
        return Var(name, v.dtype)

    def local(self, dtype: str, init: ExprLike, hint: str = "acc") -> Var:
        """Declare a mutable scalar (an accumulator) and return it."""
        name = self.fresh(hint)
        self.emit(Local(name, dtype, as_expr(init, dtype)))
        return Var(name, dtype)

    def assign(self, var: Var, value: ExprLike) -> None:
        """Set a ``local``."""
        self.emit(Assign(var.name, as_expr(value, var.dtype)))

    @contextmanager
    def loop(
        self, stop: ExprLike, start: ExprLike = 0, kind: str = "serial", width: int = 1, hint: str = "i"
    ) -> Iterator[Var]:
        """``for var in range(start, stop)``; statements in the block form the body."""
        name = self.fresh(hint)
        self._blocks.append([])
        yield Var(name, INDEX)
        body = self._blocks.pop()
        self.emit(Loop(name, idx(start), idx(stop), body, kind, width))

    @contextmanager
    def if_(self, cond: Expr) -> Iterator[None]:
        """Statements in the block run only when ``cond`` holds."""
        self._blocks.append([])
        yield
        body = self._blocks.pop()
        self.emit(If(cond, body, []))

    @contextmanager
    def else_(self) -> Iterator[None]:
        """The else branch of the ``if_`` block just closed."""
        last = self._blocks[-1][-1]
        if not isinstance(last, If) or last.orelse:
            raise ValueError("else_ must follow an if_ block")
        self._blocks.append([])
        yield
        last.orelse = self._blocks.pop()

    def build(self) -> Kernel:
        """The finished kernel."""
        if len(self._blocks) != 1:
            raise ValueError("unclosed block in kernel builder")
        return Kernel(self.name, list(self.buffers), list(self.dims), self._blocks[0])


__all__ = ["Assign", "BufferRef", "KernelBuilder"]
