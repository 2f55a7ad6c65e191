"""Default CPU schedules for the TIR functions TVM's legalization leaves unscheduled.

TVM's CPU pipeline lowers every Relax op to a plain TIR loop nest: one thread, scalar code.
Without tuning that is 50-100x slower than onnxruntime. This module is a module pass over
the PrimFuncs (in the spirit of ``s_tir.dlight``) with three rules, tried in order:

* ``_schedule_contraction`` for functions with one reduction block whose output's innermost
  axis is also the innermost (stride-1) axis of every input that uses it: convolutions in
  NHWC/HWIO (hence ``channels_last``, which moves the model there first), matrix products,
  pooling and channel-last reductions. The output is tiled into a register block of
  ``rows x vectors`` (rows from the next-outer spatial axis, e.g. the output column of a
  convolution; vectors of the innermost axis), accumulated in a local buffer that LLVM keeps
  in SIMD registers; the outer tiles run in parallel and the fused epilogue (bias, residual
  add, ReLU) is written from the registers.
* ``_schedule_injective`` for elementwise / layout functions: everything inlined into the
  last block, its loops fused, split into a parallel outer loop and a SIMD inner one.
* ``_schedule_fallback`` for anything else (softmax, layer norm, reductions over the
  innermost axis): TVM's own dlight CPU rules, else the leading spatial loops of every
  block in parallel.

Every rule works on a copy (``s_tir.Schedule``) and a rule that fails leaves the function
unscheduled for the next one, so a schedule never changes what a function computes.
"""

from __future__ import annotations

from typing import Any

#: Accumulator registers one register tile may use (AVX2 has 16 ymm registers).
_MAX_ACCUMULATORS = 12
#: Bytes of weights one output tile may stream (half of Zen 3's 512 KiB L2).
_L2_BYTES = 256 * 1024
#: Below this many output elements a loop nest is not worth the thread pool's overhead.
_PARALLEL_MIN = 4096
#: Elementwise ops that broadcast; lower-rank operands get leading unit axes so that
#: ConvertLayout can follow a channel-first bias (shape [C,1,1]) into channels-last.
_BINARY = (
    "relax.add",
    "relax.subtract",
    "relax.multiply",
    "relax.divide",
    "relax.maximum",
    "relax.minimum",
    "relax.power",
)


def channels_last() -> Any:
    """Relax pass: 2-d convolutions (and, by propagation, the elementwise ops and pools
    around them) to NHWC data with HWIO weights. In NHWC the output channel is the
    innermost axis of the output, the weights and (for depthwise) the input, which is what
    ``_schedule_contraction`` vectorizes; the weight transpose is a function of the weights
    alone, so LiftTransformParams moves it to load time."""
    import tvm
    from tvm import relax

    return tvm.transform.Sequential(
        [
            _equal_ranks_pass(),
            relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}),
            relax.transform.CanonicalizeBindings(),
        ],
        name="ChannelsLast",
    )


def _equal_ranks_pass() -> Any:
    """Module pass giving both operands of a broadcasting binary op the same rank, since
    ConvertLayout stops at rank-mismatched operands (our Conv adds its bias as [C,1,1])."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class EqualRanks(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if (
                not isinstance(call.op, tvm.ir.Op)
                or call.op.name not in _BINARY
                or len(call.args) != 2
            ):
                return call
            a, b = call.args
            ra, rb = _rank(a), _rank(b)
            if ra is None or rb is None or ra == rb or min(ra, rb) == 0:
                return call
            if ra < rb:
                a = self.builder_.emit(relax.op.expand_dims(a, list(range(rb - ra))))
            else:
                b = self.builder_.emit(relax.op.expand_dims(b, list(range(ra - rb))))
            return relax.Call(call.op, [a, b], call.attrs)

    @tvm.transform.module_pass(opt_level=0, name="EqualRanks")
    def equal_ranks(mod: Any, _ctx: Any) -> Any:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gv] = EqualRanks(mod).visit_expr(func)
        return mod

    return equal_ranks


def _rank(expr: Any) -> int | None:
    from tvm import relax

    ty = expr.ty
    if isinstance(ty, relax.TensorType) and ty.ndim >= 0:
        return int(ty.ndim)
    return None


def default_schedule() -> Any:
    """Module pass scheduling every PrimFunc not yet scheduled (``tirx.is_scheduled``)
    with the first rule of this module that applies; run it after legalization and
    fusion, under the target (``with target:``)."""
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="TorshCpuSchedule")
    def schedule(mod: Any, _ctx: Any) -> Any:
        target = tvm.target.Target.current(allow_none=False)
        lanes = _vector_bytes(target) // 4
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            scheduled = schedule_func(func, target, lanes)
            if scheduled is not None:
                mod[gv] = scheduled.with_attr("tirx.is_scheduled", True)
        return mod

    return schedule


def schedule_func(func: Any, target: Any, lanes: int) -> Any | None:
    """``func`` scheduled by the first rule that applies, or None."""
    for rule in (_schedule_contraction, _schedule_injective, _schedule_fallback):
        try:
            sch = rule(func, target, lanes)
        except Exception:  # noqa: BLE001 - a rule that cannot apply leaves func as it was
            sch = None
        if sch is not None:
            return sch.mod["main"]
    return None


def _is_scheduled(func: Any) -> bool:
    return (
        func.attrs is not None
        and "tirx.is_scheduled" in func.attrs
        and bool(func.attrs["tirx.is_scheduled"])
    )


def _vector_bytes(target: Any) -> int:
    """SIMD register width in bytes (32 for AVX2), from LLVM's view of the target."""
    try:
        from tvm.target.codegen import llvm_get_vector_width

        bits = int(llvm_get_vector_width(target))
    except Exception:  # noqa: BLE001
        bits = 0
    return max(bits, 128) // 8


# --- helpers over blocks --------------------------------------------------------------


def _blocks(sch: Any) -> list[Any]:
    """The blocks directly under the root block, in program order."""
    root = sch.get_sblock("root", func_name="main")
    return list(sch.get_child_blocks(root))


def _kinds(sch: Any, block: Any) -> str:
    """'S'/'R'/'O' per block iterator (data-parallel, reduction, other)."""
    from tvm import tirx

    names = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(names.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def _extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def _trivially_bound(sch: Any, block: Any) -> bool:
    """One loop per block iterator, in order, each with a constant extent (TE's output)."""
    loops = sch.get_loops(block)
    ivs = sch.get(block).iter_vars
    return len(loops) == len(ivs) and all(_extent(sch, lp) is not None for lp in loops)


def _inline_into_consumers(sch: Any, blocks: list[Any]) -> list[Any]:
    """Inline each of ``blocks`` into its consumers where TVM allows; the ones left."""
    left = []
    for block in blocks:
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001
            left.append(block)
    return left


def _has_if(sch: Any, block: Any) -> bool:
    import tvm

    return bool(tvm.get_global_func("s_tir.schedule.HasIfThenElse")(sch.get(block)))


# --- rule 1: contractions (conv NHWC, matmul, pooling, channel-last reductions) ---------


def _schedule_contraction(func: Any, target: Any, lanes: int) -> Any | None:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = _blocks(sch)
    reductions = [b for b in blocks if "R" in _kinds(sch, b)]
    if len(reductions) != 1 or any("O" in _kinds(sch, b) for b in blocks):
        return None
    main = reductions[0]
    at = blocks.index(main)
    producers, consumers = blocks[:at], blocks[at + 1 :]
    # Padding stays a stage of its own: inlined, its bounds test would sit in the inner loop.
    _inline_into_consumers(sch, [b for b in producers if not _has_if(sch, b)])
    if not _trivially_bound(sch, main):
        return None
    plan = _contraction_plan(sch, main, lanes)
    if plan is None:
        return None
    vec_axis, row_axis, vectors, rows, lanes = plan
    kinds = _kinds(sch, main)
    loops = sch.get_loops(main)
    spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
    reduce = [lp for lp, k in zip(loops, kinds) if k == "R"]
    v_o, v_r, v_i = sch.split(spatial[vec_axis], [None, vectors, lanes])
    outer = [v_o]  # outermost: the weight slice of one output-channel tile stays in cache
    r_i = None
    for k, lp in enumerate(spatial):
        if k == vec_axis:
            continue
        if k == row_axis:
            r_o, r_i = sch.split(lp, [None, rows])
            outer.append(r_o)
        else:
            outer.append(lp)
    inner = ([r_i] if r_i is not None else []) + [v_r, v_i]
    sch.reorder(*outer, *reduce, *inner)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    total = _total(sch, main)
    if total >= _PARALLEL_MIN:
        sch.parallel(fused)
    # Accumulate in registers; the epilogue reads them and writes the output once.
    acc = sch.cache_write(main, 0, "local")  # the block copying the accumulators out
    # The epilogue becomes one block (inlined forwards: a value used twice, like GELU's x,
    # stays correct), then that block is inlined into the accumulator's write-back.
    # A non-elementwise epilogue raises here and the rule declines.
    for block in consumers[:-1]:
        sch.compute_inline(block)
    if consumers:
        sch.reverse_compute_inline(consumers[-1])
    sch.reverse_compute_at(acc, fused, preserve_unit_loops=True)
    _vectorize_tail(sch, acc, lanes)
    if r_i is not None:
        sch.unroll(r_i)
    sch.unroll(v_r)
    sch.vectorize(v_i)
    if reduce:
        # After vectorizing: the update block of a decomposed reduction cannot be.
        sch.decompose_reduction(main, reduce[0])
    for block in producers:
        if _alive(sch, block):
            _schedule_spatial_block(sch, block, lanes)
    return sch


def _contraction_plan(
    sch: Any, block: Any, lanes: int
) -> tuple[int, int | None, int, int, int] | None:
    """(vector axis, row axis, vectors, rows, lanes) for the register tile of ``block``, or
    None when the innermost output axis is not stride-1 in every input that reads it."""
    from tvm import tirx

    stmt = sch.get(block)
    ivs = list(stmt.iter_vars)
    kinds = _kinds(sch, block)
    spatial = [iv for iv, k in zip(ivs, kinds) if k == "S"]
    if not spatial or len(stmt.writes) != 1:
        return None
    last = stmt.writes[0].region[-1].min
    if not isinstance(last, tirx.Var):
        return None
    vec_axis = next((k for k, iv in enumerate(spatial) if iv.var.same_as(last)), None)
    if vec_axis is None:
        return None
    var = spatial[vec_axis].var
    for read in stmt.reads:
        region = read.region
        if any(_uses(r.min, var) for r in region[:-1]):
            return None
        if _uses(region[-1].min, var) and not region[-1].min.same_as(var):
            return None
    extent = int(spatial[vec_axis].dom.extent)
    while lanes > 1 and extent % lanes:
        lanes //= 2
    if lanes < 2:
        return None
    count = extent // lanes
    row_axis = _row_axis(spatial, vec_axis)
    row_extent = int(spatial[row_axis].dom.extent) if row_axis is not None else 1
    depth = 1
    for iv, k in zip(ivs, kinds):
        if k == "R":
            depth *= int(iv.dom.extent)
    # The weights one tile reads (depth x vectors x lanes floats) should fit in L2 when
    # other tiles come back to them (there is a row axis); else any width will do.
    max_vectors = (
        max(1, _L2_BYTES // (depth * lanes * 4)) if row_axis is not None else _MAX_ACCUMULATORS
    )
    vectors, rows = _register_tile(count, row_extent, max_vectors)
    return vec_axis, row_axis, vectors, rows, lanes


def _uses(expr: Any, var: Any) -> bool:
    from tvm.tirx.analysis import undefined_vars

    return any(v.same_as(var) for v in undefined_vars(expr))


def _row_axis(spatial: list[Any], vec_axis: int) -> int | None:
    """The spatial axis nearest inside the vector axis with more than one point: the
    output column of a convolution, the row of a matrix product."""
    for k in range(vec_axis - 1, -1, -1):
        if int(spatial[k].dom.extent) > 1:
            return k
    return None


def _register_tile(vector_count: int, row_extent: int, max_vectors: int) -> tuple[int, int]:
    """(vectors, rows) dividing their axes, at most ``_MAX_ACCUMULATORS`` accumulators,
    best ratio of FMAs to loads (rows*vectors / (rows+vectors)), then most accumulators."""
    best = (1, 1)
    best_key = (0.0, 0)
    for v in range(1, min(_MAX_ACCUMULATORS, max_vectors) + 1):
        if vector_count % v:
            continue
        for r in range(1, _MAX_ACCUMULATORS // v + 1):
            if row_extent % r:
                continue
            key = (v * r / (v + r), v * r)
            if key > best_key:
                best, best_key = (v, r), key
    return best


def _total(sch: Any, block: Any) -> int:
    """Points of the spatial domain of ``block``."""
    n = 1
    for iv, k in zip(sch.get(block).iter_vars, _kinds(sch, block)):
        if k == "S":
            n *= int(iv.dom.extent)
    return n


def _alive(sch: Any, block: Any) -> bool:
    try:
        sch.get(block)
    except Exception:  # noqa: BLE001
        return False
    return True


def _vectorize_tail(sch: Any, block: Any, lanes: int) -> None:
    """Vectorize the innermost loop of ``block`` by ``lanes`` when it divides it; unroll
    the other loops below the parallel one so register tiles stay in registers."""
    loops = sch.get_loops(block)
    if len(loops) < 2:
        return
    inner = loops[-1]
    ext = _extent(sch, inner)
    if ext is None or ext < 2:
        return
    if ext % lanes == 0 and ext > lanes:
        outer, inner = sch.split(inner, [None, lanes])
        sch.unroll(outer)
    if ext % lanes == 0 or ext <= lanes:
        sch.vectorize(inner)


# --- rule 2: injective functions ---------------------------------------------------------


def _schedule_injective(func: Any, target: Any, lanes: int) -> Any | None:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = _blocks(sch)
    if not blocks or any(set(_kinds(sch, b)) - {"S"} for b in blocks):
        return None
    left = _inline_into_consumers(sch, blocks[:-1]) + [blocks[-1]]
    for block in left:
        _schedule_spatial_block(sch, block, lanes)
    return sch


def _schedule_spatial_block(sch: Any, block: Any, lanes: int) -> None:
    """Fuse the loops of a data-parallel block, run the outer part in parallel and the
    innermost ``lanes`` points as one SIMD operation when they divide the total."""
    loops = sch.get_loops(block)
    if not loops or any(_extent(sch, lp) is None for lp in loops):
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    total = _extent(sch, fused) or 0
    while lanes > 1 and total % lanes:
        lanes //= 2
    if lanes > 1 and total > lanes:
        outer, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
    else:
        outer = fused
    if total >= _PARALLEL_MIN:
        sch.parallel(outer)


# --- rule 3: everything else -------------------------------------------------------------


def _schedule_fallback(func: Any, target: Any, lanes: int) -> Any | None:
    """dlight's CPU rules (softmax/norm-like reductions, GEMV); else each root block's
    leading data-parallel loops fused and parallel."""
    from tvm import s_tir
    from tvm.s_tir import dlight

    for rule in (dlight.cpu.Reduction(), dlight.cpu.GEMV()):
        try:
            got = rule.apply(func, target, False)
        except Exception:  # noqa: BLE001
            got = None
        if got is not None:
            return got[0] if isinstance(got, list) else got
    sch = s_tir.Schedule(func)
    done = False
    for block in _blocks(sch):
        kinds = _kinds(sch, block)
        if not _trivially_bound(sch, block):
            continue
        lead = len(kinds) - len(kinds.lstrip("S"))
        if lead == 0:
            continue
        loops = sch.get_loops(block)[:lead]
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        if (_extent(sch, fused) or 0) > 1:
            sch.parallel(fused)
            done = True
    return sch if done else None
