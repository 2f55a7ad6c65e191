"""The GPU schedule: a kernel lowered with ``Schedule(gpu=True)`` → kernels for a grid.

Lowerings mark loops whose iterations are independent as ``parallel`` (the CPU targets
split them across threads, so every iteration writes its own outputs and no two share
scratch memory). On a GPU those iterations become threads:

- the kernel is cut at its top-level loops into *pieces*, launched one after the other
  (a launch boundary is a barrier for the whole grid). Top-level ``Let`` values are pure,
  so each piece gets a copy of the ones it reads;
- in each piece, a perfectly nested chain of ``parallel`` loops with constant bounds is
  collapsed into one ``gpu`` loop over the product of their trip counts: each thread
  rebuilds the loop variables from its flat index with a division and a remainder per
  level, and the body stays as it was (inner loops run serially inside the thread);
- where the innermost level's body is a ``warp`` loop, each iteration of the ``gpu`` loop
  is one warp of 32 threads (the loop's ``width`` says so) and the warp loop its lanes;
- a piece that starts with no parallel loop (a serial scan, a kernel-wide accumulator)
  runs as one thread. Slow, but the schedule never changes what a kernel computes.

A piece is still a kernel of the kernel IR: the host runs it with the interpreter or the
LLVM CPU emitter (``gpu`` loops are ordinary loops there), which is how the schedule is
tested on every commit without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from torsh_gen.backends.kernel.analysis import used_names
from torsh_gen.backends.kernel.ir import WARP, Const, Kernel, Let, Loop, Stmt, Var, idx

#: Threads per block of the generated launches.
BLOCK = 256
#: Blocks at most per launch (threads loop over the rest: grid-stride).
MAX_GRID = 8192


@dataclass
class GpuPiece:
    """One launch: a kernel whose first statement is a ``gpu`` loop over ``threads``
    iterations (or any body, run by one thread when ``threads`` is 1)."""

    kernel: Kernel
    threads: int

    @property
    def block(self) -> int:
        """Threads per block."""
        return min(BLOCK, _round_up(self.threads, 32))

    @property
    def grid(self) -> int:
        """Blocks of the launch."""
        return max(1, min(MAX_GRID, -(-self.threads // self.block)))


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def _const(e) -> int | None:
    return int(e.value) if isinstance(e, Const) and not isinstance(e.value, bool) else None


def _top_level_locals(body: list[Stmt]) -> bool:
    from torsh_gen.backends.kernel.ir import Assign, Local

    return any(isinstance(s, (Local, Assign)) for s in body)


def split_for_gpu(kernel: Kernel) -> list[GpuPiece]:
    """The launches that compute ``kernel`` on a GPU, in order."""
    body = kernel.body
    if _top_level_locals(body) or not any(isinstance(s, Loop) for s in body):
        return [GpuPiece(_piece(kernel, 0, body), 1)]
    pieces: list[GpuPiece] = []
    lets: list[Let] = []
    pending: list[Stmt] = []  # non-loop statements (stores, ifs) between loops

    def flush() -> None:
        if pending:
            pieces.append(GpuPiece(_piece(kernel, len(pieces), _with_lets(lets, list(pending))), 1))
            pending.clear()

    for s in body:
        if isinstance(s, Let):
            lets.append(s)
        elif isinstance(s, Loop):
            flush()
            stmts, threads = _collapse(s)
            pieces.append(GpuPiece(_piece(kernel, len(pieces), _with_lets(lets, stmts)), threads))
        else:
            pending.append(s)
    flush()
    return pieces


def _with_lets(lets: list[Let], stmts: list[Stmt]) -> list[Stmt]:
    """``stmts`` preceded by the top-level lets they read (transitively), in order."""
    needed, _ = used_names(stmts)
    keep: list[Let] = []
    for let in reversed(lets):
        if let.name in needed:
            keep.append(let)
            more, _ = used_names([let])
            needed |= more
    return list(reversed(keep)) + stmts


def _piece(kernel: Kernel, k: int, body: list[Stmt]) -> Kernel:
    _, bufs = used_names(body)
    return Kernel(f"{kernel.name}_{k}", [b for b in kernel.buffers if b.name in bufs], list(kernel.dims), body)


def _collapse(loop: Loop) -> tuple[list[Stmt], int]:
    """``loop`` as a ``gpu`` loop over its parallel chain, and the thread count; a loop
    that is not parallel (or has bounds known only at run time) stays for one thread."""
    chain: list[tuple[Loop, int, int, list[Let]]] = []
    cur: Loop | None = loop
    inner: list[Stmt] = []
    while cur is not None and cur.kind == "parallel":
        lo, hi = _const(cur.start), _const(cur.stop)
        if lo is None or hi is None:
            break
        lets = [s for s in cur.body if isinstance(s, Let)]
        rest = [s for s in cur.body if not isinstance(s, Let)]
        lets_first = cur.body[: len(lets)] == lets
        chain.append((cur, lo, max(hi - lo, 0), []))
        nxt = rest[0] if len(rest) == 1 and lets_first else None
        if isinstance(nxt, Loop) and nxt.kind == "parallel" and _const(nxt.start) is not None and _const(nxt.stop) is not None:
            chain[-1][3].extend(lets)
            cur = nxt
            continue
        inner = cur.body
        cur = None
    if not chain:
        if loop.kind == "warp":  # one warp on its own
            return [Loop(f"gid_{loop.var}", idx(0), idx(1), [loop], "gpu", WARP)], WARP
        return [loop], 1
    trips = [c[2] for c in chain]
    total = 1
    for t in trips:
        total *= t
    if total == 0:
        return [], 1
    gid = Var(f"gid_{loop.var}")
    stmts: list[Stmt] = []
    below = total
    for (lp, lo, trip, lets), _ in zip(chain, trips):
        below //= trip
        q = gid if below == 1 else gid // idx(below)
        if below * trip != total:
            q = q % idx(trip)
        stmts.append(Let(lp.var, q + idx(lo) if lo else q))
        stmts.extend(lets)
    stmts.extend(inner)
    rest = [s for s in inner if not isinstance(s, Let)]
    if len(rest) == 1 and isinstance(rest[0], Loop) and rest[0].kind == "warp":
        return [Loop(gid.name, idx(0), idx(total), stmts, "gpu", WARP)], total * WARP  # a warp each
    return [Loop(gid.name, idx(0), idx(total), stmts, "gpu")], total
