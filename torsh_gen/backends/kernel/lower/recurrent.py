"""Recurrent layers: RNN, GRU and LSTM with the semantics of ``ops/rnn.py`` (the ONNX spec).

One kernel per node, in two parts:

1. **Input projection.** ``X W^T + Wb`` of every time step and direction does not depend
   on the recurrence, so it is one matrix product up front, through the register-blocked
   micro-kernel (``microkernel.emit_product``), into scratch ``P[dirs][rows][G*H]`` whose
   rows are X's own (step, batch) rows in X's layout. A constant W is packed at compile
   time.
2. **Recurrence.** A direction and a block of batch entries form a chain, independent of
   the others (own lengths, direction, state), so the loop over chains is the outer
   (parallel) one; a chain runs its steps serially. A step computes the gate
   pre-activations ``P[t] + H_{t-1} R^T + Rb`` of all its entries at once: R is packed in
   panels ``[H][width]`` (compile time when constant, else into scratch here) that a
   serial loop over the hidden units streams, each row load feeding one accumulator row
   per entry, as in the micro-kernel; then the cell's elementwise update per entry, a
   vector loop over the hidden units.

``sequence_lens`` is read at run time: an entry runs ``clamp(len, 0, seq)`` steps (the
reverse direction from step ``len - 1`` down), ``Y`` rows past the length are zero, and
``Y_h``/``Y_c`` hold the state after the last valid step (the initial state for length
0). Activations (with ``activation_alpha``/``beta`` consumed in order by the functions
that take them), ``clip``, GRU's ``linear_before_reset``, LSTM's peepholes ``P`` and
``input_forget`` follow ``ops/rnn.py``. State and gates live in per-entry scratch, so
chains never share writable memory.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.interp import numpy_dtype
from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Var,
    call,
    idx,
    is_float,
    maximum,
    minimum,
)
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers
from torsh_gen.backends.kernel.lower.microkernel import (
    Addend,
    Product,
    emit_product,
    lanes_for,
    nr_vectors,
    pack_at_run_time,
    pack_weight,
)
from torsh_gen.backends.kernel.lower.scalar_ops import SCALAR_OPS
from torsh_gen.ops.registry import Attrs

Act = Callable[[KernelBuilder, Expr], Expr]

#: Gates and default activations (f, g, h) of each op; LSTM also carries a cell state.
_OPS = {
    "RNN": (1, ["Tanh"]),
    "GRU": (3, ["Sigmoid", "Tanh"]),
    "LSTM": (4, ["Sigmoid", "Tanh", "Tanh"]),
}


# --------------------------------------------------------------------------- activations
def _scalar(name: str, alpha: float, beta: float) -> Act:
    """An entry of the elementwise scalar table with its alpha/beta as attributes."""
    attrs = Attrs({"alpha": alpha, "beta": beta})
    return lambda kb, x: SCALAR_OPS[name](kb, [x], attrs)


def _affine(alpha: float, beta: float) -> Act:
    return lambda kb, x: x * Const(alpha, x.dtype) + Const(beta, x.dtype)


def _scaled_tanh(alpha: float, beta: float) -> Act:
    def fn(kb: KernelBuilder, x: Expr) -> Expr:
        return SCALAR_OPS["Tanh"](kb, [x * Const(beta, x.dtype)], Attrs({})) * Const(alpha, x.dtype)

    return fn


#: lower-case name -> (default alpha, default beta, maker); None: the value is not taken.
_ACTIVATIONS: dict[str, tuple[float | None, float | None, Callable[[float, float], Act]]] = {
    "relu": (None, None, lambda a, b: _scalar("Relu", a, b)),
    "tanh": (None, None, lambda a, b: _scalar("Tanh", a, b)),
    "sigmoid": (None, None, lambda a, b: _scalar("Sigmoid", a, b)),
    "affine": (1.0, 0.0, _affine),
    "leakyrelu": (0.01, None, lambda a, b: _scalar("LeakyRelu", a, b)),
    "thresholdedrelu": (1.0, None, lambda a, b: _scalar("ThresholdedRelu", a, b)),
    "scaledtanh": (1.0, 1.0, _scaled_tanh),
    "hardsigmoid": (0.2, 0.5, lambda a, b: _scalar("HardSigmoid", a, b)),
    "elu": (1.0, None, lambda a, b: _scalar("Elu", a, b)),
    "softsign": (None, None, lambda a, b: _scalar("Softsign", a, b)),
    "softplus": (None, None, lambda a, b: _scalar("Softplus", a, b)),
}


def _activations(attrs: Attrs, defaults: list[str], dirs: int) -> list[list[Act]]:
    """Per direction, the activation functions the attributes name (the defaults when
    absent; one direction's list is repeated for a bidirectional layer, as ``ops/rnn.py``
    accepts); alpha and beta values are consumed in order by the functions that take them."""
    names = list(attrs.get("activations") or defaults * dirs)
    if len(names) == len(defaults) and dirs == 2:
        names *= 2
    if len(names) != len(defaults) * dirs:
        raise LoweringDeclined(f"{len(names)} activations given, {len(defaults) * dirs} expected")
    alphas = [float(a) for a in attrs.get("activation_alpha", [])]
    betas = [float(b) for b in attrs.get("activation_beta", [])]
    fns: list[Act] = []
    for name in names:
        entry = _ACTIVATIONS.get(str(name).lower())
        if entry is None:
            raise LoweringDeclined(f"unsupported recurrent activation {name!r}")
        da, db, make = entry
        a = alphas.pop(0) if da is not None and alphas else (da or 0.0)
        b = betas.pop(0) if db is not None and betas else (db or 0.0)
        fns.append(make(a, b))
    k = len(defaults)
    return [fns[d * k : (d + 1) * k] for d in range(dirs)]


# --------------------------------------------------------------------------- the layer
@dataclass
class _Layer:
    """Shapes, attributes and buffers of one recurrent node."""

    ctx: LowerCtx
    op: str
    dtype: str
    gates: int
    hidden: int
    seq: int
    batch: int
    inp: int
    dirs: int
    layout: int
    reverse: list[bool]
    acts: list[list[Act]]
    clip: float | None
    proj: BufferRef | None = None
    rt: BufferRef | None = None
    regs: int = 1
    gbuf: BufferRef | None = None
    hbuf: BufferRef | None = None
    cbuf: BufferRef | None = None

    @property
    def kb(self) -> KernelBuilder:
        return self.ctx.kb

    @property
    def gh(self) -> int:
        """Gate columns: gates x hidden."""
        return self.gates * self.hidden

    def k(self, v: float) -> Const:
        """A constant of the layer's element type."""
        return Const(float(v), self.dtype)

    def clipped(self, x: Expr) -> Expr:
        """``x`` bounded to [-clip, clip] when the layer clips."""
        if self.clip is None:
            return x
        return minimum(maximum(x, self.k(-self.clip)), self.k(self.clip))

    def inp_buf(self, i: int) -> BufferRef | None:
        """Optional input ``i``, checked to be of the layer's element type."""
        if not self.ctx.has(i):
            return None
        if i != 4 and self.ctx.in_dtypes[i] != self.dtype:
            raise LoweringDeclined(f"input {i} of another element type")
        return self.ctx.x(i)

    def out_buf(self, j: int) -> BufferRef | None:
        """Output ``j`` when the node produces it (absent optional outputs are skipped)."""
        ctx = self.ctx
        if j >= len(ctx.outputs) or not ctx.node.outputs[j].name:
            return None
        if ctx.out_dtypes[j] != self.dtype:
            raise LoweringDeclined(f"output {j} of another element type")
        return ctx.y(j)

    def state_at(self, d: int, b: Expr) -> Expr:
        """Offset of (direction, batch entry) in Y_h / Y_c / initial_h / initial_c."""
        if self.layout:
            return (b * self.dirs + d) * self.hidden
        return (b + d * self.batch) * self.hidden

    def y_at(self, d: int, t: Expr, b: Expr) -> Expr:
        """Offset of (step, direction, batch entry) in Y."""
        if self.layout:
            return ((b * self.seq + t) * self.dirs + d) * self.hidden
        return ((t * self.dirs + d) * self.batch + b) * self.hidden

    def row(self, t: Expr, b: Expr) -> Expr:
        """X's row of (step, batch entry)."""
        return b * self.seq + t if self.layout else t * self.batch + b

    def hloop(self, hint: str = "j") -> AbstractContextManager[Var]:
        """A vector loop over the hidden units."""
        return self.kb.loop(
            self.hidden, kind="vector", width=self.ctx.vector_width(self.hidden), hint=hint
        )


def _layer(ctx: LowerCtx) -> _Layer:
    """Read and check shapes and attributes."""
    op = ctx.node.op_type
    gates, defaults = _OPS[op]
    dtype = ctx.in_dtypes[0]
    if dtype is None or not is_float(dtype):
        raise LoweringDeclined(f"{op} of {dtype}")
    for i in (1, 2):
        if ctx.in_dtypes[i] != dtype:
            raise LoweringDeclined(f"{op} with W or R of another element type")
    xs, ws, rs = ctx.in_shape(0), ctx.in_shape(1), ctx.in_shape(2)
    if len(xs) != 3 or len(ws) != 3 or len(rs) != 3:
        raise LoweringDeclined(f"{op} needs 3-D X, W and R")
    layout = int(ctx.attrs.get("layout", 0))
    seq, batch = (xs[1], xs[0]) if layout else (xs[0], xs[1])
    dirs, hidden = ws[0], rs[-1]
    direction = str(ctx.attrs.get("direction", "forward"))
    expected = 2 if direction == "bidirectional" else 1
    if direction not in ("forward", "reverse", "bidirectional") or dirs != expected:
        raise LoweringDeclined(f"direction {direction!r} with W for {dirs} direction(s)")
    if ws[1] != gates * hidden or tuple(rs) != (dirs, gates * hidden, hidden) or ws[2] != xs[2]:
        raise LoweringDeclined(f"{op} weights of shapes {ws} and {rs} for X of shape {xs}")
    reverse = [direction == "reverse" or d == 1 for d in range(dirs)]
    clip = ctx.attrs.get("clip")
    return _Layer(
        ctx, op, dtype, gates, hidden, seq, batch, xs[2], dirs, layout, reverse,
        _activations(ctx.attrs, defaults, dirs), None if clip is None else float(clip),
    )  # fmt: skip


# --------------------------------------------------------------------------- set-up
def _project(L: _Layer) -> None:
    """P = X W^T + Wb for every row of X and every direction: one (batched) product."""
    ctx = L.ctx
    rows, gh = L.seq * L.batch, L.gh
    L.proj = ctx.scratch(L.dtype, L.dirs * rows * gh)
    lanes = lanes_for(ctx, L.dtype)
    multi = L.dirs > 1
    mm = Product(
        L.dtype, rows, gh, L.inp, ctx.x(0), ctx.x(1), L.proj, nr_vectors(ctx) * lanes, lanes,
        sam=L.inp, sbk=1, sbn=L.inp, batch=[L.dirs] if multi else [],
        a_batch=[0] if multi else [], b_batch=[gh * L.inp] if multi else [],
    )  # fmt: skip
    w = ctx.const(1)
    if w is not None:
        wt = np.asarray(w, numpy_dtype(L.dtype)).transpose(0, 2, 1)
        mm.b, mm.packed, mm.sbk, mm.sbn = pack_weight(ctx, wt, L.dtype, mm.nr), True, mm.nr, 1
        if multi:
            mm.b_batch = [-(-gh // mm.nr) * L.inp * mm.nr]
    bias = L.inp_buf(3)
    if bias is not None:
        mm.addends.append(Addend(bias, [2 * gh] if multi else [], 0, 1))
    pack_at_run_time(ctx, mm, L.dirs)
    emit_product(ctx, mm)


def _runs(n: int, lanes: int, regs: int) -> list[tuple[int, int, int]]:
    """Cover [0, n) with vector loops of ``regs``, then fewer, registers (independent
    accumulators hide the fma latency of the serial loop inside), then a scalar rest."""
    out, start = [], 0
    for w in (lanes * r for r in (4, 2, 1) if r <= regs):
        cnt = (n - start) // w * w
        if cnt and w > 1:
            out.append((start, start + cnt, w))
            start += cnt
    if start < n:
        out.append((start, n, 1))
    return out


def _segments(L: _Layer) -> list[tuple[int, int]]:
    """The gate column ranges (first, count) the steps multiply H (or r * H) into; GRU
    without linear_before_reset multiplies its candidate's columns separately."""
    n = L.hidden
    if L.op == "GRU" and not L.ctx.attrs.get("linear_before_reset", 0):
        return [(0, 2 * n), (2 * n, n)]
    return [(0, L.gh)]


def _panels(L: _Layer) -> list[tuple[int, int, int]]:
    """(first column, panels, width) of every vector run of every segment: R's columns
    ``c0 .. c0 + w`` are stored as one panel ``[H][w]`` at ``c0 * H`` (per direction), so
    the recurrent product reads R as a contiguous stream."""
    out = []
    for col0, n in _segments(L):
        for start, stop, w in _runs(n, L.ctx.sched.lanes, L.regs):
            out.append((col0 + start, (stop - start) // w, w))
    return out


def _packed_r(L: _Layer) -> None:
    """R in panels (``_panels``): a weight when constant, else packed into scratch here."""
    ctx, kb, gh, n = L.ctx, L.kb, L.gh, L.hidden
    r = ctx.const(2)
    if r is not None:
        r = np.asarray(r, numpy_dtype(L.dtype))
        packed = np.empty((L.dirs, gh * n), r.dtype)
        for c0, count, w in _panels(L):
            cols = r[:, c0 : c0 + count * w, :].reshape(L.dirs, count, w, n)
            flat = cols.transpose(0, 1, 3, 2).reshape(L.dirs, -1)
            packed[:, c0 * n : (c0 + count * w) * n] = flat
        L.rt = ctx.weight(packed, L.dtype)
        return
    src = ctx.x(2)
    L.rt = ctx.scratch(L.dtype, L.dirs * n * gh)
    for c0, count, w in _panels(L):
        with kb.loop(L.dirs * count, hint="pq") as dq:
            d, q = (dq // count, dq % count) if L.dirs > 1 else (idx(0), dq)
            col = kb.let(d * gh + c0 + q * w, "pc")  # first column of the panel: R's row
            with kb.loop(n, hint="k") as k:
                kind = "vector" if w > 1 else "serial"
                with kb.loop(w, kind=kind, width=w, hint="l") as lane:
                    L.rt[col * n + k * w + lane] = src[(col + lane) * n + k]


# --------------------------------------------------------------------------- one step
@dataclass
class _Step:
    """One batch entry of a block at the current step: offsets and whether it runs."""

    d: int
    p: Expr  # P row of this step
    g: Expr  # the entry's gate scratch
    h: Expr  # the entry's state (h and c)
    y: Expr | None  # Y row of this step, None when Y is not produced
    rb: Expr | None  # the direction's Rb in B, None without B
    active: Expr | None  # the step lies inside the entry's sequence (None: always)


def _guard(L: _Layer, st: _Step) -> AbstractContextManager:
    """Statements in the block update the entry's state only on its active steps."""
    return nullcontext() if st.active is None else L.kb.if_(st.active)


def _matvec(
    L: _Layer,
    sts: list[_Step],
    srcs: list[tuple[BufferRef, Expr]],
    col0: int,
    n: int,
    init: Callable[[_Step, Expr], Expr],
    put: Callable[[_Step, Expr, Expr], None],
) -> None:
    """For every entry of the block and gate columns ``col0 + j``, j < n (a segment of
    ``_segments``): ``put(st, j, init(st, j) + sum_k src[at + k] * R[col0 + j, k])``.
    Panel by panel; each load of a panel row feeds every entry's accumulators."""
    kb, hn = L.kb, L.hidden
    base = sts[0].d * hn * L.gh
    for start, stop, w in _runs(n, L.ctx.sched.lanes, L.regs):
        with kb.loop((stop - start) // w, hint="q") as q:
            j0 = kb.let(q * w + start, "j0")
            at = kb.let((j0 + col0) * hn + base, "pa")
            kind = "vector" if w > 1 else "serial"
            with kb.loop(w, kind=kind, width=w, hint="l") as lane:
                j = kb.let(j0 + lane, "j")
                accs = [kb.local(L.dtype, init(st, j), "acc") for st in sts]
                with kb.loop(hn, hint="k") as k:
                    rv = kb.let(L.rt[at + k * w + lane], "rv")
                    for (src, sat), acc in zip(srcs, accs):
                        kb.assign(acc, call("fma", src[sat + k], rv, acc))
                for st, acc in zip(sts, accs):
                    put(st, j, acc)


def _pre(L: _Layer, st: _Step, col: int, j: Expr, with_p: bool = True) -> Expr:
    """Projection (with Wb) plus Rb of gate column ``col + j``."""
    e: Expr = L.proj[st.p + (j + col)] if with_p else L.k(0.0)
    if st.rb is not None:
        e = e + L.ctx.x(3)[st.rb + (j + col)]
    return e


def _keep(L: _Layer) -> Callable[[_Step, Expr, Expr], None]:
    """A ``put`` that stores the pre-activation in the entry's gate scratch."""

    def put(st: _Step, j: Expr, acc: Expr) -> None:
        L.gbuf[st.g + j] = acc

    return put


def _h_sources(L: _Layer, sts: list[_Step]) -> list[tuple[BufferRef, Expr]]:
    return [(L.hbuf, st.h) for st in sts]


def _write_h(L: _Layer, st: _Step, j: Expr, v: Expr) -> None:
    """New hidden value of unit ``j``: the state and, when produced, Y (``v`` is bound
    first: it may read the old state)."""
    v = L.kb.let(v, "hn")
    L.hbuf[st.h + j] = v
    y = L.out_buf(0)
    if y is not None and st.y is not None:
        y[st.y + j] = v


def _rnn_step(L: _Layer, sts: list[_Step]) -> None:
    """H = f(P + H R^T + Rb): gates into scratch first (every unit reads all of H)."""
    kb, f = L.kb, L.acts[sts[0].d][0]

    def put(st: _Step, j: Expr, acc: Expr) -> None:
        L.gbuf[st.g + j] = f(kb, L.clipped(acc))

    _matvec(L, sts, _h_sources(L, sts), 0, L.hidden, lambda st, j: _pre(L, st, 0, j), put)
    for st in sts:
        with _guard(L, st), L.hloop() as j:
            _write_h(L, st, j, L.gbuf[st.g + j])


def _gru_step(L: _Layer, sts: list[_Step]) -> None:
    """GRU: z and r from P + H R^T + Rb; the candidate from r * (H R_h^T + Rb_h)
    (linear_before_reset) or (r * H) R_h^T + Rb_h; H = (1 - z) * candidate + z * H."""
    kb, n = L.kb, L.hidden
    f, g = L.acts[sts[0].d]

    def update(st: _Step, j: Expr, z: Expr, cand: Expr) -> None:
        hh = kb.let(g(kb, L.clipped(cand)), "hh")
        _write_h(L, st, j, (L.k(1.0) - z) * hh + z * L.hbuf[st.h + j])

    if L.ctx.attrs.get("linear_before_reset", 0):
        init = lambda st, j: _pre(L, st, 0, j, with_p=False)  # noqa: E731
        _matvec(L, sts, _h_sources(L, sts), 0, 3 * n, init, _keep(L))
        for st in sts:
            with _guard(L, st), L.hloop() as j:
                gz, gr, gh = (L.gbuf[st.g + (j + k * n)] for k in range(3))
                z = kb.let(f(kb, L.clipped(L.proj[st.p + j] + gz)), "z")
                r = kb.let(f(kb, L.clipped(L.proj[st.p + (j + n)] + gr)), "r")
                update(st, j, z, L.proj[st.p + (j + 2 * n)] + r * gh)
        return
    _matvec(L, sts, _h_sources(L, sts), 0, 2 * n, lambda st, j: _pre(L, st, 0, j), _keep(L))
    for st in sts:
        with L.hloop() as j:
            L.gbuf[st.g + j] = f(kb, L.clipped(L.gbuf[st.g + j]))
            r = kb.let(f(kb, L.clipped(L.gbuf[st.g + (j + n)])), "r")
            L.gbuf[st.g + (j + n)] = r * L.hbuf[st.h + j]  # r * H, the candidate's operand

    def cand(st: _Step, j: Expr, acc: Expr) -> None:
        with _guard(L, st):
            update(st, j, kb.let(L.gbuf[st.g + j], "z"), acc)

    srcs = [(L.gbuf, st.g + n) for st in sts]
    _matvec(L, sts, srcs, 2 * n, n, lambda st, j: _pre(L, st, 2 * n, j), cand)


def _lstm_step(L: _Layer, sts: list[_Step]) -> None:
    """LSTM: gates i, o, f, c from P + H R^T + Rb; peepholes on i, f (old C) and o (new C);
    ``input_forget`` couples f = 1 - i."""
    kb, n = L.kb, L.hidden
    f, g, h = L.acts[sts[0].d]
    peep = L.inp_buf(7)
    coupled = bool(L.ctx.attrs.get("input_forget", 0))

    def peephole(st: _Step, k: int, j: Expr, c: Expr) -> Expr:
        return peep[j + (st.d * 3 * n + k * n)] * c if peep is not None else L.k(0.0)

    _matvec(L, sts, _h_sources(L, sts), 0, 4 * n, lambda st, j: _pre(L, st, 0, j), _keep(L))
    for st in sts:
        with _guard(L, st), L.hloop() as j:
            gi, go, gf, gc = (L.gbuf[st.g + (j + k * n)] for k in range(4))
            c_old = kb.let(L.cbuf[st.h + j], "co")
            i = kb.let(f(kb, L.clipped(gi + peephole(st, 0, j, c_old))), "ig")
            if coupled:
                fg = kb.let(L.k(1.0) - i, "fg")
            else:
                fg = kb.let(f(kb, L.clipped(gf + peephole(st, 2, j, c_old))), "fg")
            cand = kb.let(g(kb, L.clipped(gc)), "cg")
            c_new = kb.let(fg * c_old + i * cand, "cn")
            o = kb.let(f(kb, L.clipped(go + peephole(st, 1, j, c_new))), "og")
            L.cbuf[st.h + j] = c_new
            _write_h(L, st, j, o * h(kb, c_new))


_STEPS = {"RNN": _rnn_step, "GRU": _gru_step, "LSTM": _lstm_step}


# --------------------------------------------------------------------------- chains
@dataclass
class _Entry:
    """One batch entry of a block: its index, state offsets and sequence length."""

    b: Expr
    h: Expr  # state scratch (h, c)
    g: Expr  # gate scratch
    io: Expr  # initial_h / Y_h (and _c) offset
    length: Expr | None  # clamp(sequence_lens[b], 0, seq); None without sequence_lens


def _entry(L: _Layer, d: int, b: Expr) -> _Entry:
    """Offsets of batch entry ``b`` in direction ``d``; loads its initial state."""
    kb = L.kb
    chain = kb.let(b + d * L.batch if d else b, "chain")
    e = _Entry(b, kb.let(chain * L.hidden, "hat"), kb.let(chain * L.gh, "gat"),
               kb.let(L.state_at(d, b), "sat"), None)  # fmt: skip
    lens = L.inp_buf(4)
    if lens is not None:
        e.length = kb.let(minimum(maximum(Cast(lens[b], "i64"), idx(0)), idx(L.seq)), "len")
    for buf, i in ((L.hbuf, 5), (L.cbuf, 6)):
        if buf is not None:
            init = L.inp_buf(i)
            with L.hloop("s") as j:
                buf[e.h + j] = init[e.io + j] if init is not None else L.k(0.0)
    return e


def _finish(L: _Layer, d: int, e: _Entry) -> None:
    """Zero Y past the entry's length; the final states into Y_h and Y_c."""
    y = L.out_buf(0)
    if y is not None and e.length is not None:
        with L.kb.loop(L.seq, start=e.length, hint="pad") as s:
            yat = L.kb.let(L.y_at(d, s, e.b), "yat")
            with L.hloop("z") as j:
                y[yat + j] = L.k(0.0)
    for buf, jo in ((L.hbuf, 1), (L.cbuf, 2)):
        out = L.out_buf(jo) if buf is not None else None
        if out is not None:
            with L.hloop("s") as j:
                out[e.io + j] = buf[e.h + j]


def _block(L: _Layer, d: int, b0: Expr, rows: int) -> None:
    """Every step of direction ``d`` for batch entries ``b0 .. b0 + rows``, together up to
    the longest sequence among them (shorter ones skip their state update)."""
    kb = L.kb
    entries = [_entry(L, d, kb.let(b0 + r, "b") if r else b0) for r in range(rows)]
    lengths = [e.length for e in entries if e.length is not None]
    steps: Expr = idx(L.seq)
    if lengths:
        steps = lengths[0]
        for n in lengths[1:]:
            steps = maximum(steps, n)
        steps = kb.let(steps, "steps")
    y = L.out_buf(0)
    rb = idx(d * 2 * L.gh + L.gh) if L.ctx.has(3) else None
    with kb.loop(steps, hint="step") as s:
        sts = []
        for e in entries:
            active = kb.let(s < e.length, "on") if e.length is not None and rows > 1 else None
            t: Expr = s
            if L.reverse[d]:
                last = e.length if e.length is not None else idx(L.seq)
                t = last - 1 - s if active is None else maximum(last - 1 - s, idx(0))
                t = kb.let(t, "t")
            p = kb.let((L.row(t, e.b) + d * L.seq * L.batch) * L.gh, "p")
            yat = kb.let(L.y_at(d, t, e.b), "yat") if y is not None else None
            sts.append(_Step(d, p, e.g, e.h, yat, rb, active))
        _STEPS[L.op](L, sts)
    for e in entries:
        _finish(L, d, e)


def _dispatch(kb: KernelBuilder, cases: list[tuple[Expr, Callable[[], None]]]) -> None:
    """Run the first case whose condition holds (the last one unconditionally)."""
    cond, fn = cases[0]
    if len(cases) == 1:
        fn()
        return
    with kb.if_(cond):
        fn()
    with kb.else_():
        _dispatch(kb, cases[1:])


#: Batch entries a block runs together at most (rows of accumulators per R load).
BLOCK_ROWS = 6


def _block_rows(L: _Layer, parallel: bool) -> int:
    """Entries per block: balanced blocks of at most BLOCK_ROWS; when the chains run in
    parallel, at least two chains where the batch allows (else one thread does it all)."""
    blocks = -(-L.batch // BLOCK_ROWS)
    if parallel and L.dirs * blocks < 2:
        blocks = min(2, L.batch)
    return -(-L.batch // blocks)


@lowers("RNN", "GRU", "LSTM")
def lower_recurrent(ctx: LowerCtx) -> None:
    """The projection product, then one chain per (direction, block of batch entries)."""
    L = _layer(ctx)
    entries = L.dirs * L.batch
    _project(L)
    L.gbuf = ctx.scratch(L.dtype, max(entries * L.gh, 1))
    L.hbuf = ctx.scratch(L.dtype, max(entries * L.hidden, 1))
    if L.op == "LSTM":
        L.cbuf = ctx.scratch(L.dtype, max(entries * L.hidden, 1))
    if L.batch == 0:
        return
    kind = ctx.outer_kind(entries * L.seq * L.gh * (L.hidden + 8))
    rows = _block_rows(L, kind == "parallel")
    L.regs = 4 if rows <= 2 else 2
    _packed_r(L)
    full, rest = divmod(L.batch, rows)
    blocks = full + (1 if rest else 0)
    kb = ctx.kb
    with kb.loop(L.dirs * blocks, kind=kind, hint="ch") as c:
        cases: list[tuple[Expr, Callable[[], None]]] = []
        for d in range(L.dirs):
            first = d * blocks
            if full:
                b0 = (c - first if d else c) * rows
                cases.append(
                    (c < first + full, lambda d=d, b0=b0: _block(L, d, kb.let(b0, "b0"), rows))
                )
            if rest:
                cases.append((c < first + blocks, lambda d=d: _block(L, d, idx(full * rows), rest)))
        _dispatch(kb, cases)
