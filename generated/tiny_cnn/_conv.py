"""Convolution kernels of this generated package (numba), by torsh-gen 0.1.0.

- ``gemm_conv``: convolutions (any group count) as a packed GEMM: a register tile of 12
  output channels x 32 positions written in LLVM IR (numba intrinsics), fed by panels
  gathered straight from the image (implicit im2col), with bias, residual and activation
  applied in registers before a single store;
- ``gemm_rows`` and ``gemm_batched``: the same tile for products with a constant matrix
  (packed once) and for batched products of run-time operands (attention);
- ``depthwise3`` and ``depthwise``: direct depthwise convolutions, vectorized over a
  padded grid of each plane for 3x3 kernels with stride 1 or 2, a scalar loop for the rest.

All kernels run in numba's one thread pool (no BLAS threads competing with it).
Activation codes: 0 none, 1 Relu, 2 Clip(lo, hi), 3 LeakyRelu(alpha = lo). Only float32
C-contiguous operands are taken (explicit signatures: the kernels compile once when this
module is imported, ``cache=True`` keeps the machine code in ``__pycache__``). Sums run in
the same order as the numpy reference where it matters (bias, then residual), without
fastmath, so results stay within float32 rounding of it.
"""

import os

# numba's OpenMP workers and OpenBLAS's threads share the cores: workers that spin while
# the other pool computes cost more than they save, so ours wait passively. Both are
# read when the pools start, hence before numba launches its first parallel kernel.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import functools  # noqa: E402
import mmap  # noqa: E402
import sys  # noqa: E402
import weakref  # noqa: E402

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

# numba's cache records the module name and imports it when loading cached code: give this
# module a stable name, whatever name the package was imported under.
_NAME = "_torsh_conv_da5ba1ffb6d7717b"
sys.modules.setdefault(_NAME, sys.modules[__spec__.name])
__name__ = _NAME  # noqa: A001

if "NUMBA_THREADING_LAYER" not in os.environ:
    nb.config.THREADING_LAYER = "omp"

_F4 = nb.float32
_I8 = nb.int64
_X3 = nb.types.Array(_F4, 3, "C", readonly=True)
_X4 = nb.types.Array(_F4, 4, "C", readonly=True)
_Y2 = nb.types.Array(_F4, 2, "C")
_Y3 = nb.types.Array(_F4, 3, "C")
_Y4 = nb.types.Array(_F4, 4, "C")
_W3 = nb.types.Array(_F4, 3, "C")
_B1 = nb.types.Array(_F4, 1, "C", readonly=True)
_R2 = nb.types.Array(_F4, 2, "C", readonly=True)
_R4 = nb.types.Array(_F4, 4, "C", readonly=True)
_X1 = nb.types.Array(_F4, 1, "C", readonly=True)
_Y1 = nb.types.Array(_F4, 1, "C")
_I1D = nb.types.Array(nb.int64, 1, "C", readonly=True)
_U = nb.uint64  # unsigned indices: no negative-index wraparound check
_SERIAL = dict(cache=True, nogil=True)
_OPTS = dict(parallel=True, cache=True, nogil=True)  # the generic depthwise kernel: ``prange``

# ---------------------------------------------------------------------------------------
# Parallel loops. numba compiles the body of a ``prange`` loop four times over: into the
# loop's own function and again into each of the three wrappers that launch it (each links
# the body's code and optimizes and emits all of it anew). For the GEMM kernels, whose
# bodies inline large register tiles, that was three quarters of a cold build (ResNet-50's
# kernels: 26 s). So every parallel kernel but the generic depthwise one is split in two:
#
# - its loop body, a C callback (``nb.cfunc``: compiled once) taking (t, chunks, args),
#   that does share ``t`` of ``chunks``;
# - a serial driver that computes the split, packs the body's operands into one tuple
#   (``_pack``, checked at compile time against the tuple type the body unpacks) and runs
#   the body through ``_parallel_for``, the one ``prange`` loop of this module, which calls
#   it by address (passed in at run time, so the cached machine code holds no address).
#
# The work is split and scheduled as a ``prange`` over the shares would do (one contiguous
# share per thread, scratch arrays allocated once per share, as numba hoists them). The
# body's arrays are borrowed (``_unpack``): the driver's frame owns them until every share
# is done, so they carry no reference count. With counted arrays every slice a body takes
# (``x[b, c, iy]``) changed the one shared count atomically from every thread, and the
# pools ran 1.4-2x slower than as ``prange`` loops, whose arrays numba also builds
# uncounted. The generic depthwise kernel keeps ``prange`` (``_OPTS``): as a callback the
# row-vector depthwise kernels of before ran 6-13 % slower (numba marks a ``prange`` body's
# arrays as not aliasing); the 3x3 grid kernel that replaced them is a callback (as a
# ``prange`` kernel it took 6.4 s to compile, numba finalizing its body four times).
# ---------------------------------------------------------------------------------------

_BODY = nb.void(nb.int64, nb.int64, nb.int64)  # (t, chunks, address of the operand tuple)
_BODY_FN = ir.FunctionType(ir.VoidType(), [ir.IntType(64)] * 3)
# numpy's error model, as numba gives a ``prange`` body: no zero-division branch in a
# float division (it kept LRN's loop from vectorizing: 4x slower as a callback)
_CALLBACK = dict(cache=True, error_model="numpy")


@intrinsic
def _invoke(typingctx, body, t, chunks, args):
    """Call the body at address ``body`` with (t, chunks, args)."""
    sig = types.void(types.int64, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, values):
        fn = builder.inttoptr(values[0], _BODY_FN.as_pointer())
        builder.call(fn, list(values[1:]))
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(nb.void(nb.int64, nb.int64, nb.int64), parallel=True, cache=True, nogil=True)
def _parallel_for(body, chunks, args):
    """body(t, chunks, args) for t in range(chunks), over numba's thread pool."""
    for t in nb.prange(chunks):
        _invoke(body, t, chunks, args)


@intrinsic
def _pack(typingctx, values, kind):
    """The address of a copy of the tuple ``values`` in the caller's stack frame (valid until
    the caller returns); ``kind`` is the tuple type the body unpacks, which must match."""
    if not isinstance(kind, types.TypeRef) or values != kind.instance_type:
        raise nb.core.errors.TypingError(f"operands {values} do not match the body's {kind}")
    sig = types.int64(values, kind)

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, context.get_value_type(signature.args[0]))
        builder.store(args[0], slot)
        return builder.ptrtoint(slot, ir.IntType(64))

    return sig, codegen


@intrinsic
def _unpack(typingctx, address, kind):
    """The operand tuple ``_pack`` stored at ``address``, its arrays borrowed: no meminfo
    (so no reference counting) and no parent object; valid while the driver runs."""
    tup = kind.instance_type
    sig = tup(types.int64, kind)

    def codegen(context, builder, signature, args):
        slot = builder.inttoptr(args[0], context.get_value_type(tup).as_pointer())
        value = builder.load(slot)
        for i, member in enumerate(tup.types):
            if isinstance(member, types.Array):
                member_value = builder.extract_value(value, i)
                array = context.make_array(member)(context, builder, member_value)
                array.meminfo = cgutils.get_null_value(array.meminfo.type)
                array.parent = cgutils.get_null_value(array.parent.type)
                value = builder.insert_value(value, array._getvalue(), i)
        return value

    return sig, codegen


@nb.cfunc(_BODY, **_CALLBACK)
def _launch(body, chunks, args):
    """``_parallel_for`` as a C callback: the drivers call it by address, so none of them
    links (and compiles again) the parallel loop's code."""
    _parallel_for(body, chunks, args)


def _entry(body) -> tuple[int, int]:
    """The addresses a driver takes last: its loop body's and ``_launch``'s."""
    return body.address, _launch.address


def _thread_getter():
    """numba's thread count getter without ``nb.get_num_threads``'s per-call work (a lock
    taken to launch the pool, then checks: 2 us hot, 5-50 us with cold caches, on every
    kernel call): the threading layer's own getter once the pool is up. The same
    (thread-local) count that ``numba.set_num_threads`` sets; the public function where
    this numba lays its internals out differently."""
    try:
        from numba.np.ufunc import parallel

        parallel._launch_threads()
        getter = parallel._get_num_threads
        if getter() == nb.get_num_threads():
            return getter
    except (AttributeError, ImportError, TypeError):
        pass
    return nb.get_num_threads


def _threads() -> int:
    """The thread count for the next kernel; on its first call (the first kernel's, which
    launches numba's pool anyway, so importing this module starts no threads and a fork
    before the first run stays safe) it swaps itself for ``_thread_getter``'s result."""
    global _threads
    _threads = _thread_getter()
    return _threads()


def _contiguous_output(position: int):
    """For an entry point whose kernels write a C-contiguous float32 output, passed as
    argument ``position``: a strided output (a planned view) is computed into a scratch
    array and copied back, so every kernel can assume contiguity."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args):
            y = args[position]
            if y.flags.c_contiguous:
                return fn(*args)
            out = np.empty(y.shape, np.float32)
            fn(*args[:position], out, *args[position + 1 :])
            y[...] = out

        return call

    return wrap


def packed(owner, w, group: int, pack=None) -> np.ndarray:
    """``w`` packed by ``pack`` (``pack_weights`` if None); kept on ``owner`` for read-only
    (constant) weights."""
    pack = pack_weights if pack is None else pack
    w = np.ascontiguousarray(w, np.float32)
    key = (w.ctypes.data, w.shape, group, pack.__name__)
    cache = owner.__dict__.setdefault("_torsh_packed", {})
    wp = cache.get(key)
    if wp is None:
        wp = pack(w, group)
        if not w.flags.writeable:  # a run-time input may change between calls
            cache[key] = wp
            release_pages(w)
    return wp


def release_pages(w) -> None:
    """Drop the resident pages of a constant read from the memory-mapped weights file once
    its packed copy exists, so the model does not hold every weight twice. The file stays
    mapped read-only: a later read of ``w`` faults its pages back in from the page cache."""
    base = w
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    mm = getattr(base, "_mmap", None)
    if mm is None or base.offset != 0 or not w.flags.c_contiguous:
        return
    page = mmap.PAGESIZE
    low = w.ctypes.data - base.ctypes.data
    first = -(-low // page) * page
    last = (low + w.nbytes) // page * page
    if last > first:
        try:
            mm.madvise(mmap.MADV_DONTNEED, first, last - first)
        except (AttributeError, OSError, ValueError):
            pass  # no madvise here: keep the pages


_NO_BIAS = np.zeros(0, np.float32)
_NO_RES4 = np.zeros((0, 0, 0, 0), np.float32)


@_contiguous_output(5)
def conv2d(owner, x, w, b, z, y, geo, act, lo, hi):
    """y = act(conv(x, w) + b + z) for float32 NCHW ``x`` into the preallocated ``y``.

    ``geo`` is (strides h, w, dilations h, w, begin pads h, w, group). Depthwise
    convolutions (one input channel per group) run a direct kernel (vectorized for 3x3
    with stride 1 or 2); the others run the packed GEMM, one group after the other. What
    depends only on the shapes and a constant ``w`` is worked out once (``_conv_plan``).
    """
    x = np.ascontiguousarray(x)
    plan = _recall(owner, "_torsh_conv_plans", w)
    if plan is None or plan[1] != x.shape or plan[2] != y.shape or plan[3] != geo:
        plan = _conv_plan(owner, x.shape, w, y.shape, geo)
    bias = _NO_BIAS if b is None else b
    res = _NO_RES4 if z is None else np.ascontiguousarray(z)
    plan[4](x, bias, res, y, (b is not None) | (z is not None) << 1 | act << 2, act, lo, hi)


_NO_PLANS = {}


def _keep(owner, attr, w, facts):
    """Store (weak reference to ``w``, *facts) in ``owner``'s dict ``attr`` under ``id(w)``
    and return it. Readers check that the reference still gives ``w``. The entry goes when
    ``w`` does: a read-only view made afresh on every call (a weight sliced at run time)
    leaves no plans behind."""
    table = owner.__dict__.setdefault(attr, {})
    key = id(w)

    def forget(ref):
        if table.get(key, (None,))[0] is ref:
            del table[key]

    entry = table[key] = (weakref.ref(w, forget), *facts)
    return entry


def _recall(owner, attr, w):
    """The entry ``_keep`` stored for ``w`` in ``owner``'s dict ``attr``, or None."""
    entry = owner.__dict__.get(attr, _NO_PLANS).get(id(w))
    return entry if entry is not None and entry[0]() is w else None


def _conv_plan(owner, xshape, w, yshape, geo):
    """How ``conv2d`` runs a convolution: its kernel, its packed weights, the scratch its
    input is copied into and the views that copy writes, bound into one function of the
    per-call operands. Kept on ``owner`` per constant weight (``_keep``) and rebuilt when
    the shapes or the geometry change. In a model the Python work of a call runs with
    caches its kernels just emptied: looking all of this up on every call cost 20-40 us
    per convolution (MobileNetV2: 53 calls, 13 ms in all).

    Returns (weak reference to ``w`` or None, x shape, y shape, geo, run(x, bias, res, y,
    flags, act, lo, hi)).
    """
    sh, sw, dh, dw, ph, pw, group = geo
    c = xshape[1]
    m, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    oh, ow = yshape[2], yshape[3]
    if group > 1 and w.shape[1] == 1 and group == c:
        w3 = np.ascontiguousarray(w.reshape(m, kh, kw))
        if kh == kw == 3 and dh == dw == 1 and sh == sw and sh in (1, 2):
            body, launch = _entry(_depthwise3_rows_body if AVX512[0] else _depthwise3_body)

            def run(x, bias, res, y, flags, act, lo, hi):
                depthwise3(x, w3, bias, res, y, sh, ph, pw, flags, lo, hi, _threads(), body, launch)

        else:

            def run(x, bias, res, y, flags, act, lo, hi):
                depthwise(x, w3, bias, res, y, sh, sw, dh, dw, ph, pw, act, lo, hi)

    elif AVX512[0] and group == 1 and c == 3 and kh == kw == 3 and dh == dw == 1 and sh == sw < 3:
        w27 = np.ascontiguousarray(w, np.float32).reshape(-1)
        body, launch = _entry(_conv_rgb3_body)

        def run(x, bias, res, y, flags, act, lo, hi):
            conv_rgb3(x, w27, bias, res, y, sh, ph, pw, flags, lo, hi, _threads(), body, launch)

    elif sh == sw == 1 and (kh > 1 or kw > 1 or ph or pw) and ow + (kw - 1) * dw >= 8:
        hp, wpad = oh + (kh - 1) * dh, ow + (kw - 1) * dw
        xpad, gplane, fill = _padded(owner, xshape, hp, wpad, ph, pw, group)
        run = _grid_run(
            fill,
            xpad,
            _tap_offsets(owner, c // group, kh, kw, dh, dw, hp, wpad),
            packed(owner, w, group, pack_channels),
            wpad,
            gplane,
            group,
        )
    elif sh == sw > 1 and dh == dw == 1 and (kh > 1 or kw > 1) and ow + (kw - 1) // sh >= 8:
        xq, koffs, wq, gplane, fill = _phased(owner, xshape, sh, kh, kw, ph, pw, oh, ow, group)
        run = _grid_run(fill, xq, koffs, packed(owner, w, group, pack_channels), wq, gplane, group)
    elif _pointwise_on_grid(kh, kw, ph, pw, oh, ow):
        fill = _subsampled(owner, xshape, sh, sw, oh, ow) if sh > 1 or sw > 1 else None
        run = _pointwise_grid_run(owner, fill, w, c, group, oh, ow)
    else:
        wp = packed(owner, w, group)
        body, launch = _entry(_gemm_conv_body)
        gather = _gather_address()
        fill = None
        if kh == kw == 1 and (sh > 1 or sw > 1) and not (ph or pw):
            fill = _subsampled(owner, xshape, sh, sw, oh, ow)
            sh = sw = 1
        k = (kh, kw, sh, sw, dh, dw, ph, pw, group)

        def run(x, bias, res, y, flags, act, lo, hi):
            if fill is not None:
                x = _fill(x, *fill)
            gemm_conv(x, wp, bias, res, y, *k, flags, lo, hi, _threads(), body, launch, gather)

    if w.flags.writeable:  # a run-time input may change between calls: not kept
        return (None, xshape, yshape, geo, run)
    return _keep(owner, "_torsh_conv_plans", w, (xshape, yshape, geo, run))


def _pointwise_on_grid(kh, kw, ph, pw, oh, ow) -> bool:
    """Whether a 1x1 convolution runs on the channel-vector grid tile (its input, or the
    subsample of a strided one, is the grid: no copy) instead of ``gemm_conv``. Only where
    row tiles store whole rows of channels (``_TRANSPOSED_STORES``), the output rows split
    into whole tiles (no tile reads past the input) and ``gemm_conv``'s panels of 16
    positions would compute padding: a 7 x 7 plane took 4 panels (64 positions) for 49.
    Paired on an AMD EPYC Zen 4, for planes up to 14 x 14: resnet50 0.93, mobilenetv2
    0.96; for every 1x1 layer whose rows split into tiles: 1.01-1.05, so not there."""
    return (
        _TRANSPOSED_STORES
        and kh == kw == 1
        and not (ph or pw)
        and ow % MG == 0
        and (oh * ow) % _L != 0
        and oh * ow <= 196
    )


def _pointwise_grid_run(owner, fill, w, c, group, oh, ow):
    """``conv2d``'s run function for a 1x1 convolution on ``gemm_conv_grid``: taps at
    channel offsets of the (subsampled) input itself, rows of ``ow`` positions."""
    koffs = _tap_offsets(owner, c // group, 1, 1, 1, 1, oh, ow)
    wpk = packed(owner, w, group, pack_channels)
    body, launch = _entry(_gemm_conv_grid_body)
    gplane = c // group * oh * ow

    def run(x, bias, res, y, flags, act, lo, hi):
        if fill is not None:
            x = _fill(x, *fill)
        gemm_conv_grid(
            x.reshape(-1),
            koffs,
            wpk,
            bias,
            res,
            y,
            ow,
            gplane,
            group,
            flags,
            lo,
            hi,
            _threads(),
            body,
            launch,
        )

    return run


def _grid_run(fill, grid, koffs, wpk, pitch, gplane, group):
    """``conv2d``'s run function for ``gemm_conv_grid``: the input copied into the padded
    grid (or its phase planes) by ``fill``, then the kernel."""
    body, launch = _entry(_gemm_conv_grid_body)

    def run(x, bias, res, y, flags, act, lo, hi):
        _fill(x, *fill)
        gemm_conv_grid(
            grid,
            koffs,
            wpk,
            bias,
            res,
            y,
            pitch,
            gplane,
            group,
            flags,
            lo,
            hi,
            _threads(),
            body,
            launch,
        )

    return run


def _fill(x, out, buf, pieces, planes, body, launch):
    """Copy the C-contiguous ``x`` into the scratch ``buf`` by ``pieces`` (see
    ``copy_planes``), both cores plane by plane; returns ``out``, the scratch as the
    kernel reads it. numpy's slice assignments did the same copies on one core at
    4 GB/s in a model (ResNet-18: 4.1 ms a run)."""
    copy_planes(x.reshape(-1), buf, pieces, planes, _threads(), body, launch)
    return out


def _copies(out, buf, planes, *rows) -> tuple:
    """``_fill``'s operands after ``x``: the copies ``rows`` (each a row of
    ``copy_planes``'s table) of ``planes`` planes into ``buf``, read back as ``out``."""
    pieces = np.array(rows, np.int64).reshape(-1, 9)
    return (out, buf, pieces, planes, *_entry(_copy_planes_body))


def _phased(owner, xshape, s, kh, kw, ph, pw, oh, ow, group):
    """A stride-``s`` convolution turned into a stride-1 one for ``gemm_conv_grid``: the
    zero-padded input is split into s x s phase planes (phase (a, b) holds the padded
    positions (a + s r, b + s q)), so tap (i, j) reads phase (i % s, j % s) at offset
    (i // s, j // s) and every tap is a contiguous run of the grid again, instead of a
    strided gather. Returns the planes (kept on ``owner``, padding written once), the tap
    offsets in packed-weight order, the grid's row pitch, the floats per group and the
    ``_fill`` operands that copy the input into the planes."""
    n, c, h, w = xshape
    hq, wq = oh + (kh - 1) // s, ow + (kw - 1) // s
    plane = hq * wq
    size = n * c * s * s * plane
    cache = owner.__dict__.setdefault("_torsh_phased", {})
    key = (n, c, h, w, s, kh, kw, ph, pw, oh, ow, group)
    hit = cache.get(key)
    if hit is None:
        cc, i, j = np.meshgrid(np.arange(c // group), np.arange(kh), np.arange(kw), indexing="ij")
        koffs = cc * (s * s * plane) + ((i % s) * s + j % s) * plane + (i // s) * wq + j // s
        hit = (np.zeros(size + NR + 16 + wq, np.float32), koffs.reshape(-1).astype(np.int64))
        cache[key] = hit
    buf, koffs = hit
    pieces = []
    for a in range(s):
        r0 = max(0, -((a - ph) // s))  # first phase row whose source row is >= 0
        r1 = min(hq, (h + ph - a + s - 1) // s)
        for b in range(s):
            q0 = max(0, -((b - pw) // s))
            q1 = min(wq, (w + pw - b + s - 1) // s)
            if r1 > r0 and q1 > q0:
                ya, xb = a + s * r0 - ph, b + s * q0 - pw
                dst = (a * s + b) * plane + r0 * wq + q0
                pieces.append(
                    (dst, s * s * plane, wq, ya * w + xb, h * w, s * w, s, r1 - r0, q1 - q0)
                )
    return buf, koffs, wq, c // group * s * s * plane, _copies(buf, buf, n * c, *pieces)


def _subsampled(owner, xshape, sh, sw, oh, ow):
    """The ``_fill`` operands that gather the positions a 1x1 convolution with strides
    (sh, sw) reads into a contiguous buffer (kept on ``owner`` per shape), so it runs as
    a stride-1 product with vector panel copies."""
    n, c, h, w = xshape
    cache = owner.__dict__.setdefault("_torsh_subsampled", {})
    key = (xshape, sh, sw, oh, ow)
    buf = cache.get(key)
    if buf is None:
        buf = cache[key] = np.empty((n, c, oh, ow), np.float32)
    return _copies(buf, buf.reshape(-1), n * c, (0, oh * ow, ow, 0, h * w, sh * w, sw, oh, ow))


def _padded(owner, xshape, hp, wpad, ph, pw, group):
    """Zero-padded planes of hp x wpad for an input of ``xshape`` (kept on ``owner`` per
    shape: the padding is written once, the interior on every call), the floats per group
    and the ``_fill`` operands that copy the input into the interior."""
    n, c, h, w = xshape
    size = n * c * hp * wpad
    cache = owner.__dict__.setdefault("_torsh_padded", {})
    key = (n, c, h, w, hp, wpad, ph, pw)
    buf = cache.get(key)
    if buf is None:
        buf = np.zeros(size + NR + 16 + wpad, np.float32)
        cache[key] = buf
    rows, cols = max(0, min(h, hp - ph)), max(0, min(w, wpad - pw))
    piece = (ph * wpad + pw, hp * wpad, wpad, 0, h * w, w, 1, rows, cols)
    return buf, c // group * hp * wpad, _copies(buf, buf, n * c, piece)


def _tap_offsets(owner, cg, kh, kw, dh, dw, hp, wpad):
    """Offset of tap (c, i, j) in the padded planes of one group, in packed-weight order."""
    cache = owner.__dict__.setdefault("_torsh_taps", {})
    key = (cg, kh, kw, dh, dw, hp, wpad)
    offs = cache.get(key)
    if offs is None:
        c, i, j = np.meshgrid(np.arange(cg), np.arange(kh), np.arange(kw), indexing="ij")
        offs = (c * hp * wpad + i * dh * wpad + j * dw).reshape(-1).astype(np.int64)
        cache[key] = offs
    return offs


@nb.njit(inline="always")
def _act(v, act, lo, hi):
    if act == 1:
        return np.float32(0.0) if v < 0 else v
    if act == 2:
        v = lo if v < lo else v
        return hi if v > hi else v
    if act == 3:
        return v if v >= 0 else v * lo
    return v


@nb.njit(inline="always")
def _fmax(a, b):
    """max(a, b) with NaN propagated: np.maximum, which LLVM vectorizes (a select on
    ``a >= b or a != a`` kept every pooling loop scalar: 0.85 against 0.21 ns a float)."""
    return np.maximum(a, b)


# ---------------------------------------------------------------------------------------
# Packed GEMM convolution: y[m, p] = act(sum_k W[m, k] * cols[k, p] + bias + res).
#
# The multiply-adds run in a register tile of MR output channels x NR output positions
# (MR * NR / 16 accumulators of 16 lanes) written directly in LLVM IR through numba's
# ``intrinsic``: the tile loads NR columns as vectors, broadcasts MR weights and issues one
# fused multiply-add per accumulator, with bias, residual and activation applied while the
# tile is still in registers. Weights are packed once per model as (M / MR, K, MR); the
# columns of NR output positions are gathered (implicit im2col) into a small panel that
# stays in the L1/L2 cache while every row tile of weights passes over it. Both cores work
# through numba's one thread pool, so no BLAS threads compete with ours.
# ---------------------------------------------------------------------------------------


#: LLVM CPU names whose cores run a 512-bit operation as two 256-bit halves: AVX-512
#: there gives 32 registers but no wider datapath, and the big tile lost to the AVX2 one
#: on every benchmark model (AMD EPYC Zen 4, paired runs: 0.93-0.99 of the time).
_HALF_RATE_512 = ("znver4",)


def _avx512() -> tuple[bool, bool]:
    """(AVX-512 present, its 512-bit operations at full rate) for the CPU numba compiles
    for. A ``NUMBA_CPU_NAME`` other than host counts as AVX-512 only when
    ``NUMBA_CPU_FEATURES`` names avx512f (numba's cache keys on both)."""
    name = nb.config.CPU_NAME
    if name not in (None, "", "host"):
        return "+avx512f" in (nb.config.CPU_FEATURES or ""), name not in _HALF_RATE_512
    try:
        import llvmlite.binding as llb

        present = bool(llb.get_host_cpu_features().get("avx512f", False))
        return present, llb.get_host_cpu_name() not in _HALF_RATE_512
    except Exception:  # noqa: BLE001  (no feature string: the tile that fits every x86-64-v3)
        return False, False


def _wide_registers() -> bool:
    """Whether to use the AVX-512 tile (32 vector registers of 16 float32 lanes).

    With it the tile holds 12 rows x 2 vectors of 16 lanes (24 registers). Without it
    (AVX2: 16 registers of 8 lanes) that tile would need 48 registers and spill on every
    step, so the tile is 6 rows x 1 vector of 16 lanes (12 registers, two per vector),
    leaving room for the inputs and a broadcast: on an AMD EPYC (Zen 3) the 12 x 32 tile
    ran ResNet-50 at 5.4x onnxruntime. Cores that split 512-bit operations in two
    (``_HALF_RATE_512``) take the small tile too."""
    present, full_rate = AVX512
    return present and full_rate


AVX512 = _avx512()
WIDE = _wide_registers()
_L = 16  # float32 lanes of one vector (two registers on AVX2)
#: Output channels (rows) per register tile: 8 on cores with AVX-512's 32 registers but
#: the small tile (8 accumulators leave room, and 8 divides every channel count of the
#: benchmark networks: tiles of 6 computed 18 rows for 16 and 66 for 64), else 6.
MR = 12 if WIDE else (8 if AVX512[0] else 6)
NV = 2 if WIDE else 1  # vectors per tile row
NR = NV * _L  # output positions per register tile
KC = 128 if WIDE else 256  # reduction depth per pass over the panel (NR * KC floats fit in L1)
#: Grid positions per channel-vector tile (``gemm_conv_grid``). With AVX-512's 32
#: registers the small tile takes 7: the planes of most networks are 7, 14, 28, 56 or 112
#: wide, so tiles of 7 along an output row compute no padding column (tiles of 6 along
#: the padded grid computed 9 positions for every 7 outputs on a 7 x 7 plane).
MG = 7 if AVX512[0] and not WIDE else MR

_F = ir.FloatType()
_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V = ir.VectorType(_F, _L)
_MASK = ir.VectorType(_I1, _L)


def _k(v):
    return ir.Constant(_I64, v)


def _splat(builder, scalar, vtype):
    undef = ir.Constant(vtype, ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    zeros = ir.Constant(ir.VectorType(_I32, _L), [0] * _L)
    return builder.shuffle_vector(v, undef, zeros)


def _vec_at(builder, base, offset):
    """A vector pointer at ``base + offset`` (a Python int or an LLVM value)."""
    offset = offset if isinstance(offset, ir.Value) else _k(offset)
    return builder.bitcast(builder.gep(base, [offset]), _V.as_pointer())


def _fn(builder, name, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _masked_load(builder, ptr, mask, fill=0.0):
    """The lanes of ``mask`` loaded from ``ptr``, ``fill`` in the others."""
    fn = _fn(builder, "llvm.masked.load.v16f32.p0v16f32", _V, [_V.as_pointer(), _I32, _MASK, _V])
    return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_V, [fill] * _L)])


def _all_on(builder, mask):
    """An i1: every lane of ``mask`` is on."""
    every = _fn(builder, "llvm.vector.reduce.and.v16i1", _I1, [_MASK])
    return builder.call(every, [mask])


def _masked_store(builder, value, ptr, mask):
    """Store the lanes of ``value`` that ``mask`` selects. Without AVX-512 a masked store
    is ``vmaskmovps``, which AMD's Zen cores run as a slow microcoded sequence, so a full
    mask (every store but a row's last) takes a plain store instead."""
    fn = _fn(
        builder,
        "llvm.masked.store.v16f32.p0v16f32",
        ir.VoidType(),
        [_V, _V.as_pointer(), _I32, _MASK],
    )
    if AVX512[0]:
        builder.call(fn, [value, ptr, ir.Constant(_I32, 4), mask])
        return
    with builder.if_else(_all_on(builder, mask)) as (full, partial):
        with full:
            builder.store(value, ptr, align=4)
        with partial:
            builder.call(fn, [value, ptr, ir.Constant(_I32, 4), mask])


def _lane_masks(builder, nvalid):
    """One mask per tile vector: lanes whose column index is below ``nvalid``."""
    iota = ir.Constant(ir.VectorType(_I64, _L), list(range(_L)))
    vt = ir.VectorType(_I64, _L)
    return [
        builder.icmp_signed("<", iota, _splat(builder, builder.sub(nvalid, _k(v * _L)), vt))
        for v in range(NV)
    ]


def _data(context, builder, typ, value, offset):
    return builder.gep(context.make_array(typ)(context, builder, value).data, [offset])


# Helpers of the row kernels (depthwise planes, RGB stems): vectors of 16 output columns
# read straight from the input with masked loads.
_EVEN = ir.Constant(ir.VectorType(_I32, _L), list(range(0, 2 * _L, 2)))
_ODD = ir.Constant(ir.VectorType(_I32, _L), list(range(1, 2 * _L, 2)))
_TAP_RUNS = {False: (0, 1, 2), True: (0, _L, 2, _L + 2)}  # load offsets: stride 1, stride 2


def _prefetch(builder, ptr):
    """A read prefetch of the cache line at ``ptr`` (a hint: no fault past an array's end)."""
    i8p = ir.IntType(8).as_pointer()
    fn = _fn(builder, "llvm.prefetch.p0i8", ir.VoidType(), [i8p, _I32, _I32, _I32])
    one, three = ir.Constant(_I32, 1), ir.Constant(_I32, 3)
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(_I32, 0), three, one])


def _counted(builder, n, body, init=()):
    """``for v in range(n): carried = body(v, carried)`` as an LLVM loop (nothing when
    n <= 0); ``init`` the values carried into the first step."""
    pre = builder.basic_block
    loop = builder.append_basic_block("rows.loop")
    after = builder.append_basic_block("rows.after")
    builder.cbranch(builder.icmp_signed(">", n, _k(0)), loop, after)
    builder.position_at_end(loop)
    v = builder.phi(_I64)
    v.add_incoming(_k(0), pre)
    carried = []
    for value in init:
        phi = builder.phi(value.type)
        phi.add_incoming(value, pre)
        carried.append(phi)
    new = body(v, carried) or []
    end = builder.basic_block
    for phi, value in zip(carried, new):
        phi.add_incoming(value, end)
    nxt = builder.add(v, _k(1))
    v.add_incoming(nxt, end)
    builder.cbranch(builder.icmp_signed("<", nxt, n), loop, after)
    builder.position_at_end(after)


def _column_masks(builder, starts, width):
    """Per start column: the lanes whose column ``start + lane`` lies in [0, width)."""
    vi = ir.VectorType(_I64, _L)
    iota = ir.Constant(vi, list(range(_L)))
    zero = _splat(builder, _k(0), vi)
    wide = _splat(builder, width, vi)
    masks = []
    for start in starts:
        cols = builder.add(_splat(builder, start, vi), iota)
        masks.append(
            builder.and_(
                builder.icmp_signed(">=", cols, zero), builder.icmp_signed("<", cols, wide)
            )
        )
    return masks


def _row_taps(builder, row_base, starts, col_on, inside, strided, fill=0.0):
    """The three tap vectors (columns c0 + j, stride 2: c0 + j + 2 lane) of one input row
    at ``row_base``, ``fill`` outside the plane (``col_on``, and ``inside``: the row
    exists). Stride 2 takes the even and odd lanes of 32 consecutive floats."""
    on = _splat(builder, inside, _MASK)
    runs = [
        _masked_load(builder, _vec_at(builder, row_base, start), builder.and_(m, on), fill)
        for start, m in zip(starts, col_on)
    ]
    if strided:
        return [
            builder.shuffle_vector(runs[0], runs[1], _EVEN),
            builder.shuffle_vector(runs[0], runs[1], _ODD),
            builder.shuffle_vector(runs[2], runs[3], _EVEN),
        ]
    return runs


def _row_inside(builder, r, h):
    return builder.and_(builder.icmp_signed(">=", r, _k(0)), builder.icmp_signed("<", r, h))


def _activation(builder, flags, lo, hi):
    """The epilogue's activation (codes as ``_act``, from ``flags``) as a function of one
    vector: a clamp [floor, ceil] for none, ReLU and Clip, or the leaky slope, its bounds
    chosen once (NaN passes through, as ``_act``)."""
    act = builder.and_(builder.lshr(flags, _k(2)), _k(3))
    zero = ir.Constant(_V, [0.0] * _L)
    is_clip = builder.icmp_signed("==", act, _k(2))
    low = builder.select(
        builder.icmp_signed("==", act, _k(1)), ir.Constant(_F, 0.0), ir.Constant(_F, float("-inf"))
    )
    floor = _splat(builder, builder.select(is_clip, lo, low), _V)
    ceil = _splat(builder, builder.select(is_clip, hi, ir.Constant(_F, float("inf"))), _V)
    is_leaky = builder.icmp_signed("==", act, _k(3))
    slope = _splat(builder, lo, _V)

    def apply(v):
        lower = builder.select(builder.fcmp_ordered("<", v, floor), floor, v)
        upper = builder.select(builder.fcmp_ordered(">", lower, ceil), ceil, lower)
        leaky = builder.select(builder.fcmp_ordered("<", v, zero), builder.fmul(v, slope), v)
        return builder.select(is_leaky, leaky, upper)

    return apply


def _over_column_blocks(builder, s, ow, block):
    """``block(strided, b)`` for every block b of 16 output columns of a row kernel, the
    IR built once for stride 1 and once for stride 2, chosen by ``s`` at run time."""

    def blocks(strided):
        count = builder.sdiv(builder.add(ow, _k(_L - 1)), _k(_L))
        _counted(builder, count, lambda b, _: block(strided, b))

    with builder.if_else(builder.icmp_signed("==", s, _k(2))) as (strided, unit):
        with strided:
            blocks(True)
        with unit:
            blocks(False)


def _block_columns(builder, b, s, pw, w, ow, strided):
    """Block b of 16 output columns of a row kernel: its first output column, the input
    column of each tap run's lane 0 (``_TAP_RUNS``), their masks of columns inside the
    input row (``_column_masks``) and the mask of output columns below ``ow``."""
    ox0 = builder.mul(b, _k(_L))
    c0 = builder.sub(builder.mul(ox0, s), pw)  # input column of tap 0, lane 0
    starts = [builder.add(c0, _k(d)) for d in _TAP_RUNS[strided]]
    col_on = _column_masks(builder, starts, w)
    store_on = _lane_masks(builder, builder.sub(ow, ox0))[0]
    return ox0, starts, col_on, store_on


def _store_row(builder, acc, at, mask, has_res, rbase, ybase, activation):
    """A row kernel's tail: ``y[at + lane] = activation(acc + residual[at + lane])`` for
    the lanes of ``mask``, the residual read only when there is one (``has_res``)."""
    zero = ir.Constant(_V, [0.0] * _L)
    before = builder.basic_block
    with builder.if_then(has_res):
        res = _masked_load(builder, _vec_at(builder, rbase, at), mask)
        res_at = builder.basic_block
    rv = builder.phi(_V)
    rv.add_incoming(zero, before)
    rv.add_incoming(res, res_at)
    _masked_store(builder, activation(builder.fadd(acc, rv)), _vec_at(builder, ybase, at), mask)


def _epilogue(
    builder,
    vals,
    bias_ptr,
    has_bias,
    col_ptr,
    col_bias,
    res_row,
    has_res,
    act,
    lo,
    hi,
    masks,
    res_vals=None,
):
    """Bias (per row or per column), then residual, then the activation (codes as ``_act``)
    on one tile row. ``res_vals``: the residual vectors already loaded (else read at
    ``res_row`` when ``has_res``)."""
    entry = builder.basic_block
    with builder.if_then(has_bias):
        loaded = builder.load(bias_ptr)
        then = builder.basic_block
    b = builder.phi(_F)
    b.add_incoming(ir.Constant(_F, 0.0), entry)
    b.add_incoming(loaded, then)
    bv = _splat(builder, b, _V)
    col_on = _splat(builder, col_bias, _MASK)
    lov = _splat(builder, lo, _V)
    hiv = _splat(builder, hi, _V)
    res_on = _splat(builder, has_res, _MASK)
    out = []
    for v, x in enumerate(vals):
        x = builder.fadd(x, bv)
        col = _masked_load(
            builder, _vec_at(builder, col_ptr, v * _L), builder.and_(masks[v], col_on)
        )
        x = builder.fadd(x, col)
        if res_vals is None:
            r = _masked_load(
                builder, _vec_at(builder, res_row, v * _L), builder.and_(masks[v], res_on)
            )
        else:
            r = res_vals[v]
        x = builder.fadd(x, r)
        out.append(_activate(builder, x, act, lov, hiv))
    return out


def _activate(builder, x, act, lov, hiv):
    """The activation of code ``act`` (a Python int: code known when the IR is built; an
    LLVM value: chosen at run time by selects)."""
    zero = ir.Constant(_V, [0.0] * _L)
    neg = builder.fcmp_ordered("<", x, zero)
    if isinstance(act, int):
        if act == 1:
            return builder.select(neg, zero, x)
        if act == 2:
            clip = builder.select(builder.fcmp_ordered("<", x, lov), lov, x)
            return builder.select(builder.fcmp_ordered(">", clip, hiv), hiv, clip)
        if act == 3:
            return builder.select(neg, builder.fmul(x, lov), x)
        return x
    y = x
    for code in (1, 2, 3):
        y = builder.select(
            builder.icmp_signed("==", act, _k(code)), _activate(builder, x, code, lov, hiv), y
        )
    return y


def _build_tile(
    builder,
    wbase,
    x_row,
    kdim,
    mvalid,
    masks,
    flags,
    lo,
    hi,
    bbase,
    col_bias,
    y_io,
    scalar_row=None,
    row_on=None,
    rows=MR,
    store_rows=None,
    prefetch=None,
):
    """The IR every register tile shares: accumulators (zero, or read from ``y`` when flags
    has 16), ``kdim`` steps of NV vector loads from ``x_row(k)`` times MR broadcast weights
    from ``wbase[k*MR + r]``, then one epilogue per activation code, chosen once per tile,
    and the store of rows r < mvalid. ``y_io`` gives ``load(r, v, mask)``,
    ``store(r, v, value, mask)`` and ``load_res(r, v, mask)``: contiguous or per-lane.
    ``scalar_row(k)``, when given, points at step k's MR broadcast values instead of
    ``wbase + k*MR``, and ``row_on(r)`` says whether row r is stored instead of r < mvalid
    (the channel-vector convolution tile: its ``rows`` rows are grid positions).
    ``store_rows(outs)``, when given, stores every row's epilogue result at once (rows
    whose ``row_on`` is off included: it masks them) instead of ``store`` row by row.
    ``prefetch(k)``, when given, is called in step k (software prefetch of what comes next)."""
    load, store, load_res = y_io
    if row_on is None:

        def row_on(r):
            return builder.icmp_signed("<", _k(r), mvalid)

    if scalar_row is None:

        def scalar_row(k):
            return builder.gep(wbase, [builder.mul(k, _k(MR))])

    fma = _fn(builder, "llvm.fma.v16f32", _V, [_V, _V, _V])
    accumulate = builder.icmp_signed("!=", builder.and_(flags, _k(16)), _k(0))
    zero = ir.Constant(_V, [0.0] * _L)
    start = builder.basic_block
    with builder.if_then(accumulate):
        loaded = []
        for r in range(rows):
            on = _splat(builder, row_on(r), _MASK)
            loaded.append([load(r, v, builder.and_(masks[v], on)) for v in range(NV)])
        loaded_block = builder.basic_block
    init = []
    for r in range(rows):
        row = []
        for v in range(NV):
            phi = builder.phi(_V)
            phi.add_incoming(zero, start)
            phi.add_incoming(loaded[r][v], loaded_block)
            row.append(phi)
        init.append(row)
    pre = builder.basic_block
    loop = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    builder.branch(loop)
    builder.position_at_end(loop)
    k = builder.phi(_I64)
    k.add_incoming(_k(0), pre)
    acc = [[builder.phi(_V) for _ in range(NV)] for _ in range(rows)]
    for r in range(rows):
        for v in range(NV):
            acc[r][v].add_incoming(init[r][v], pre)
    if prefetch is not None:
        prefetch(k)
    xrow = x_row(k)
    xs = [builder.load(_vec_at(builder, xrow, v * _L), align=4) for v in range(NV)]
    wrow = scalar_row(k)
    new = []
    for r in range(rows):
        wv = _splat(builder, builder.load(builder.gep(wrow, [_k(r)]), align=4), _V)
        new.append([builder.call(fma, [xs[v], wv, acc[r][v]]) for v in range(NV)])
    k1 = builder.add(k, _k(1))
    k.add_incoming(k1, loop)
    for r in range(rows):
        for v in range(NV):
            acc[r][v].add_incoming(new[r][v], loop)
    builder.cbranch(builder.icmp_signed("<", k1, kdim), loop, done)
    builder.position_at_end(done)
    has_bias = builder.icmp_signed("!=", builder.and_(flags, _k(1)), _k(0))
    has_res = builder.icmp_signed("!=", builder.and_(flags, _k(2)), _k(0))
    act = builder.and_(builder.lshr(flags, _k(2)), _k(3))
    merge = builder.append_basic_block("tile.stored")
    cases = [builder.append_basic_block(f"tile.act{code}") for code in range(4)]
    switch = builder.switch(act, cases[0])
    for code in range(1, 4):
        switch.add_case(_k(code), cases[code])
    for code, block in enumerate(cases):
        builder.position_at_end(block)

        def row_out(r, on, code=code):
            return _row_epilogue(
                builder,
                new[r],
                r,
                has_res,
                has_bias,
                bbase,
                col_bias,
                code,
                lo,
                hi,
                masks,
                load_res,
                on,
            )

        if store_rows is None:
            for r in range(rows):
                with builder.if_then(row_on(r), likely=True):
                    out = row_out(r, ir.Constant(_I1, 1))
                    for v in range(NV):
                        store(r, v, out[v], masks[v])
        else:
            store_rows([row_out(r, row_on(r)) for r in range(rows)])
        builder.branch(merge)
    builder.position_at_end(merge)


def _row_epilogue(
    builder, vals, r, has_res, has_bias, bbase, col_bias, code, lo, hi, masks, load_res, on
):
    """``_epilogue`` for tile row r, the residual read only when there is one and the row
    is ``on``: a masked gather or load with every lane off still costs a test and branch per
    lane where LLVM emulates it (gathers on AMD cores)."""
    zero = ir.Constant(_V, [0.0] * _L)
    before = builder.basic_block
    with builder.if_then(builder.and_(has_res, on)):
        loaded = [load_res(r, v, masks[v]) for v in range(NV)]
        loaded_at = builder.basic_block
    res = []
    for v in range(NV):
        phi = builder.phi(_V)
        phi.add_incoming(zero, before)
        phi.add_incoming(loaded[v], loaded_at)
        res.append(phi)
    return _epilogue(
        builder,
        vals,
        builder.gep(bbase, [_k(r)]),
        has_bias,
        bbase,
        col_bias,
        None,
        has_res,
        code,
        lo,
        hi,
        masks,
        res_vals=res,
    )


@intrinsic
def _tile(
    typingctx,
    wp,
    woff,
    xp,
    xoff,
    ldx,
    kdim,
    y,
    yoff,
    ldy,
    mvalid,
    nvalid,
    bias,
    boff,
    res,
    roff,
    flags,
    lo,
    hi,
):
    """One MR x NR register tile over ``kdim`` reduction steps.

    ``wp[woff + k*MR + r]`` and ``xp[xoff + k*ldx + j]`` are the operands, ``xp`` the
    address of float32 data (a packed panel with ``ldx`` = NR, or a 1x1 convolution's
    input read in place, ``ldx`` its plane size: one compiled tile serves both); the tile
    goes to ``y[yoff + r*ldy + j]`` (and reads ``res`` at the same offsets from ``roff``)
    for rows r < mvalid and columns j < nvalid. ``flags``: 1 bias, 2 residual, 4 * act
    (0 none, 1 Relu, 2 Clip, 3 LeakyRelu), 16 accumulate onto what ``y`` holds, 32 bias per
    column (``bias[boff + j]`` instead of ``bias[boff + r]``).
    """
    ip = types.intp
    f4 = types.float32
    sig = types.void(wp, ip, ip, ip, ip, ip, y, ip, ip, ip, ip, bias, ip, res, ip, ip, f4, f4)

    def codegen(context, builder, signature, args):
        (
            wa,
            woff,
            xa,
            xoff,
            ldx,
            kdim,
            ya,
            yoff,
            ldy,
            mvalid,
            nvalid,
            ba,
            boff,
            ra,
            roff,
            flags,
            lo,
            hi,
        ) = args
        types_ = signature.args
        wbase = _data(context, builder, types_[0], wa, woff)
        xbase = builder.gep(builder.inttoptr(xa, _F.as_pointer()), [xoff])
        ybase = _data(context, builder, types_[6], ya, yoff)
        bbase = _data(context, builder, types_[11], ba, boff)
        rbase = _data(context, builder, types_[13], ra, roff)
        masks = _lane_masks(builder, nvalid)
        col_bias = builder.icmp_signed("!=", builder.and_(flags, _k(32)), _k(0))
        rows = [builder.gep(ybase, [builder.mul(_k(r), ldy)]) for r in range(MR)]
        res_rows = [builder.gep(rbase, [builder.mul(_k(r), ldy)]) for r in range(MR)]

        def x_row(k):
            return builder.gep(xbase, [builder.mul(k, ldx)])

        def load(r, v, mask):
            return _masked_load(builder, _vec_at(builder, rows[r], v * _L), mask)

        def store(r, v, value, mask):
            _masked_store(builder, value, _vec_at(builder, rows[r], v * _L), mask)

        def load_res(r, v, mask):
            return _masked_load(builder, _vec_at(builder, res_rows[r], v * _L), mask)

        y_io = (load, store, load_res)
        _build_tile(
            builder, wbase, x_row, kdim, mvalid, masks, flags, lo, hi, bbase, col_bias, y_io
        )
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(inline="always")
def _shares(jobs, tiles, threads):
    """How the GEMM drivers split work: each of ``jobs`` (a panel of positions) is cut into
    ``split`` shares of its ``tiles`` row tiles when there are too few jobs to keep every
    thread busy; ``items`` shares in all, handed out in ``chunks`` contiguous runs."""
    split = min(tiles, (4 * threads + jobs - 1) // jobs) if jobs < 4 * threads else 1
    items = jobs * split
    return split, items, min(threads, items)


_PIECES = nb.types.Array(nb.int64, 2, "C", readonly=True)
_COPY_ARGS = nb.types.Tuple((_X1, _Y1, _PIECES, _I8))


@nb.njit(nb.void(_X1, _Y1, _PIECES, _I8, _I8, _I8, _I8), **_SERIAL)
def copy_planes(xf, buf, pieces, planes, threads, body, launch):
    """The copies that put a convolution's input where its kernel reads it (the padded
    grid's interior, phase planes, a subsample), on every thread. Row k of ``pieces`` is
    (destination offset, destination plane stride, destination row pitch, source offset,
    source plane stride, source row pitch, source column step, rows, columns): for each of
    ``planes`` planes, ``rows`` runs of ``columns`` floats.

    Thread t copies the t-th share of every plane's rows, not a share of the planes: the
    grid kernels split their work by output rows too, so each core reads back mostly what
    it copied itself. Measured on an AMD EPYC Zen 4 host (paired, in one process): 0.99-1.00
    per 3x3 layer and 0.994 on ResNet-18 when its two cores share a cache; the host
    sometimes places them 170-340 ns apart (core-to-core), where every line one core
    writes and the other reads costs that latency, and a plane-wise copy crossed half of
    each layer's input that way."""
    rows = 0
    for k in range(pieces.shape[0]):
        rows = max(rows, pieces[k, 7])
    operands = (xf, buf, pieces, planes)
    _invoke(launch, body, max(1, min(threads, rows)), _pack(operands, _COPY_ARGS))


@nb.cfunc(_BODY, **_CALLBACK)
def _copy_planes_body(t, chunks, args):
    """Share ``t`` of ``copy_planes``'s rows (see "Parallel loops")."""
    xf, buf, pieces, planes = _unpack(args, _COPY_ARGS)
    for k in range(pieces.shape[0]):
        dpitch, spitch, step = pieces[k, 2], pieces[k, 5], pieces[k, 6]
        cols = pieces[k, 8]
        r0 = t * pieces[k, 7] // chunks
        r1 = (t + 1) * pieces[k, 7] // chunks
        for p in range(planes):
            d = pieces[k, 0] + p * pieces[k, 1] + r0 * dpitch
            s = pieces[k, 3] + p * pieces[k, 4] + r0 * spitch
            for _ in range(r1 - r0):
                if step == 1:
                    for q in range(cols):
                        buf[_U(d + q)] = xf[_U(s + q)]
                else:
                    for q in range(cols):
                        buf[_U(d + q)] = xf[_U(s + q * step)]
                d += dpitch
                s += spitch


@intrinsic
def _copy_panel_row(typingctx, src, soff, dst, doff, nvalid):
    """dst[doff : doff + NR] = src[soff : soff + nvalid], zero-filled past nvalid."""
    sig = types.void(src, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        sa, soff, da, doff, nvalid = args
        s = _data(context, builder, signature.args[0], sa, soff)
        d = _data(context, builder, signature.args[2], da, doff)
        masks = _lane_masks(builder, nvalid)
        for v in range(NV):
            builder.store(
                _masked_load(builder, _vec_at(builder, s, v * _L), masks[v]),
                _vec_at(builder, d, v * _L),
                align=4,
            )
        return context.get_dummy_value()

    return sig, codegen


def pack_weights(w, group: int) -> np.ndarray:
    """``w`` (M, Cg, KH, KW) as row tiles: wp[g*T + t, k, r] = w[g*Mg + t*MR + r, k] (k over
    Cg*KH*KW), rows past Mg zero. numpy, not numba: it runs once per constant weight, and
    as a kernel it cost 0.7 s of a cold build."""
    m_n = w.shape[0]
    mg, k_n = m_n // group, w.size // max(m_n, 1)
    tiles = (mg + MR - 1) // MR
    rows = np.zeros((group, tiles * MR, k_n), np.float32)
    rows[:, :mg] = w.reshape(group, mg, k_n)
    tiled = rows.reshape(group, tiles, MR, k_n).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(tiled).reshape(group * tiles, k_n, MR)


_GATHER_ARGS = nb.types.Tuple((_X1, _Y1, *(_I8,) * 15))  # xf, buf, x0, cg, h, w, geo, ow, p0, nv


def _gather_address() -> int:
    """``_gather_panel_body``'s address when this package has it (the compiler adds it for
    models with a convolution that gathers), else 0, which ``gemm_conv`` refuses for such
    a convolution."""
    body = globals().get("_gather_panel_body")
    return 0 if body is None else body.address


_GEO = (_I8,) * 9  # kh, kw, sh, sw, dh, dw, ph, pw, group


_GEMM_CONV_ARGS = nb.types.Tuple(
    (_X1, _X1, _Y1, _X1, _X1, *(_I8,) * 12, nb.boolean, nb.boolean, *(_I8,) * 13, _F4, _F4, _I8)
)
JB = 8  # panels per run when the weights do not fit in L2
_RUN_FLOATS = 131072  # or more panels, as many as fit in half an L2 (512 KiB)
#: A 1x1 convolution with at most this many output channels per group reads its input in
#: place (rows of the input planes, a plane apart) instead of copying each panel of NR
#: positions: the copy is amortized over only a few row tiles. Per layer on an AMD EPYC
#: Zen 4 (paired): 16-32 channels 0.80-0.89, 96-144 channels 0.90-0.95; 192 and 256
#: channels 1.04 and 1.14 (their tiles reread the panel from x's scattered rows). The
#: AVX2 build on the same host (tiles of 6 rows): 16 channels 0.90-0.94, 24-32 channels
#: 1.07, 64-144 channels 0.98-1.02, so there only 16.
_IN_PLACE_CHANNELS = 144 if AVX512[0] else 16
_L2_FLOATS = 65536  # weights up to 256 KiB stay in L2 between panels
_STREAM_RUN = 32  # panels per run when the output does not fit in L2 (the weights do)


@nb.njit(nb.void(_X4, _X3, _B1, _R4, _Y4, *_GEO, _I8, _F4, _F4, _I8, _I8, _I8, _I8), **_SERIAL)
def gemm_conv(
    x,
    wp,
    bias,
    res,
    y,
    kh,
    kw,
    sh,
    sw,
    dh,
    dw,
    ph,
    pw,
    group,
    flags,
    lo,
    hi,
    threads,
    body,
    launch,
    gather,
):
    """y = act(conv(x, W) + bias + res), W packed by ``pack_weights``.

    A job is one panel of NR output positions of one (image, group). Work items are (a run
    of consecutive jobs, share of the row tiles): each thread gathers the run's panels once
    and runs every row tile of its share over them, K in blocks of KC so the panel block
    stays in cache while the tiles accumulate in ``y``. Weights larger than an L2 cache
    take runs of up to JB panels, so that each block of weights read from memory serves
    JB panels instead of one (ResNet-50's 7x7 layers read 4 MB of weights per panel).
    Outputs larger than an L2 cache take runs of up to _STREAM_RUN panels (their buffer
    kept within L2), so that a row tile writes MR output planes as MR sequential runs
    instead of one cache line to every plane per panel: with one panel per run a 16 -> 96
    1x1 layer at 112x112 wrote 96 planes a line at a time and ran 2.4x slower.
    """
    n, c_n, h, w = x.shape
    _, m_n, oh, ow = y.shape
    cg, mg = c_n // group, m_n // group
    p_n = oh * ow
    k_n = cg * kh * kw
    mt = wp.shape[0] // group
    xf, yf, rf, wf = x.reshape(-1), y.reshape(-1), res.reshape(-1), wp.reshape(-1)
    direct = kh == kw == sh == sw == 1 and ph == pw == 0 and oh == h and ow == w
    in_place = direct and mg <= _IN_PLACE_CHANNELS
    if not direct and gather == 0:
        raise ValueError("this convolution gathers its input, and the package has no gather")
    panels = (p_n + NR - 1) // NR
    jobs = n * group * panels
    if wp.size > _L2_FLOATS:
        per_run = max(JB, min(jobs, _RUN_FLOATS // (k_n * NR)))
    elif m_n * p_n > _L2_FLOATS:
        per_run = max(1, min(_STREAM_RUN, _L2_FLOATS // (k_n * NR)))
    else:
        per_run = 1
    runs = (jobs + per_run - 1) // per_run
    if jobs > runs >= threads:
        runs = min(jobs, (runs + threads - 1) // threads * threads)  # equal shares
    split, items, chunks = _shares(runs, mt, threads)
    operands = (
        xf,
        wf,
        yf,
        bias,
        rf,
        k_n,
        items,
        split,
        runs,
        jobs,
        panels,
        group,
        p_n,
        c_n,
        cg,
        h,
        w,
        direct,
        in_place,
        kh,
        kw,
        sh,
        sw,
        dh,
        dw,
        ph,
        pw,
        ow,
        flags,
        mt,
        mg,
        m_n,
        lo,
        hi,
        gather,
    )
    _invoke(launch, body, chunks, _pack(operands, _GEMM_CONV_ARGS))


@nb.cfunc(_BODY, **_CALLBACK)
def _gemm_conv_body(t, chunks, args):
    """Share ``t`` of ``gemm_conv``'s loop (see "Parallel loops")."""
    (
        xf,
        wf,
        yf,
        bias,
        rf,
        k_n,
        items,
        split,
        runs,
        jobs,
        panels,
        group,
        p_n,
        c_n,
        cg,
        h,
        w,
        direct,
        in_place,
        kh,
        kw,
        sh,
        sw,
        dh,
        dw,
        ph,
        pw,
        ow,
        flags,
        mt,
        mg,
        m_n,
        lo,
        hi,
        gather,
    ) = _unpack(args, _GEMM_CONV_ARGS)
    panel = k_n * NR
    buf = np.empty(((jobs + runs - 1) // runs) * panel, np.float32)
    x_at, buf_at = xf.ctypes.data, buf.ctypes.data
    packed = -1
    for item in range(t * items // chunks, (t + 1) * items // chunks):
        run = item // split
        part = item - run * split
        j0 = run * jobs // runs
        j1 = (run + 1) * jobs // runs
        if run != packed:
            for j in range(j0, j1):
                img_g = j // panels
                img, g = img_g // group, img_g % group
                p0 = (j - img_g * panels) * NR
                nv = min(NR, p_n - p0)
                x0 = (img * c_n + g * cg) * h * w
                base = (j - j0) * panel
                if in_place and nv == NR:
                    continue  # the tiles read this panel from x
                if direct:
                    for k in range(k_n):
                        _copy_panel_row(xf, x0 + k * p_n + p0, buf, base + k * NR, nv)
                else:
                    view = buf[base : base + panel]
                    operands = (xf, view, x0, cg, h, w, kh, kw, sh, sw, dh, dw, ph, pw, ow, p0, nv)
                    _invoke(gather, 0, 0, _pack(operands, _GATHER_ARGS))
            packed = run
        for k0 in range(0, k_n, KC):
            kc = min(KC, k_n - k0)
            fl = (flags if k0 + kc == k_n else 0) | (16 if k0 > 0 else 0)
            for tm in range(part * mt // split, (part + 1) * mt // split):
                for j in range(j0, j1):
                    img_g = j // panels
                    img, g = img_g // group, img_g % group
                    p0 = (j - img_g * panels) * NR
                    m0 = g * mg + tm * MR
                    off = (img * m_n + m0) * p_n + p0
                    woff = ((g * mt + tm) * k_n + k0) * MR
                    if in_place and p0 + NR <= p_n:
                        src, soff, ld = x_at, (img * c_n + g * cg) * p_n + p0 + k0 * p_n, p_n
                    else:
                        src, soff, ld = buf_at, (j - j0) * panel + k0 * NR, NR
                    _tile(
                        wf,
                        woff,
                        src,
                        soff,
                        ld,
                        kc,
                        yf,
                        off,
                        p_n,
                        min(MR, mg - tm * MR),
                        min(NR, p_n - p0),
                        bias,
                        m0,
                        rf,
                        off,
                        fl,
                        lo,
                        hi,
                    )


# Stride-1 convolutions read their operand straight from a zero-padded copy of the input:
# over the padded width, output position q = oy * Wp + ox and tap k = (c, i, j) read input
# element q + offset(k), so a tile's MG positions are MG consecutive floats per tap (no
# gathered panel). Positions ox >= ow (the padded grid's extra columns, or a row's last
# tile past its end) are computed and dropped: their destination is -1.

_VP = ir.VectorType(_F.as_pointer(), _L)
_VI = ir.VectorType(_I64, _L)


def _lane_ptrs(builder, base, idx):
    """Pointers base + idx (per lane) for gathers and scatters."""
    start = _splat(builder, builder.ptrtoint(base, _I64), _VI)
    return builder.inttoptr(builder.add(start, builder.mul(idx, ir.Constant(_VI, [4] * _L))), _VP)


def _gather(builder, base, idx, mask):
    fn = _fn(builder, "llvm.masked.gather.v16f32.v16p0f32", _V, [_VP, _I32, _MASK, _V])
    return builder.call(
        fn,
        [_lane_ptrs(builder, base, idx), ir.Constant(_I32, 4), mask, ir.Constant(_V, [0.0] * _L)],
    )


def _scatter(builder, value, base, idx, mask):
    fn = _fn(builder, "llvm.masked.scatter.v16f32.v16p0f32", ir.VoidType(), [_V, _VP, _I32, _MASK])
    builder.call(fn, [value, _lane_ptrs(builder, base, idx), ir.Constant(_I32, 4), mask])


# Convolutions on the padded grid use the tile turned around: its vectors are NR output
# channels of a weight panel (packed, aligned, read in order) and its broadcasts MG grid
# positions of the input (scalar loads, never split across cache lines). With positions
# as vectors, every step loaded them unaligned from a different plane of the input at a
# tap offset read from a table; on an AMD EPYC (Zen 3) the turned tile made ResNet-18
# 12 % faster (benchmarks/NOTES.md, seventeenth session). Outputs are written per lane (a
# channel is a plane of y), which costs little next to a reduction over every tap.


def _strided(builder, base, pitch, lane):
    """A pointer at ``base + lane * pitch``."""
    return builder.gep(base, [builder.mul(_k(lane), pitch)])


def _lane_offsets(builder, pitch, first):
    """The offsets ``(first + j) * pitch`` of lanes j, as one vector (for a gather or
    scatter)."""
    return builder.mul(
        ir.Constant(_VI, list(range(first, first + _L))), _splat(builder, pitch, _VI)
    )


def _scatter_rows(builder, value, base, pitch, first, mask):
    """Lane j of ``value`` to ``base[(first + j) * pitch]`` where ``mask`` is on: plain
    scalar stores when every lane is on (AVX2 has no scatter, and LLVM's emulation builds
    and extracts a vector of pointers and tests every lane), a masked scatter otherwise."""
    with builder.if_else(_all_on(builder, mask), likely=True) as (full, partial):
        with full:
            for j in range(_L):
                lane = builder.extract_element(value, ir.Constant(_I32, j))
                builder.store(lane, _strided(builder, base, pitch, first + j))
        with partial:
            _scatter(builder, value, base, _lane_offsets(builder, pitch, first), mask)


def _gather_rows(builder, base, pitch, first, mask):
    """The loads ``_scatter_rows`` stores (zero where ``mask`` is off)."""
    with builder.if_else(_all_on(builder, mask), likely=True) as (full, partial):
        with full:
            value = ir.Constant(_V, ir.Undefined)
            for j in range(_L):
                lane = builder.load(_strided(builder, base, pitch, first + j))
                value = builder.insert_element(value, lane, ir.Constant(_I32, j))
            full_end = builder.basic_block
        with partial:
            masked = _gather(builder, base, _lane_offsets(builder, pitch, first), mask)
            partial_end = builder.basic_block
    out = builder.phi(_V)
    out.add_incoming(value, full_end)
    out.add_incoming(masked, partial_end)
    return out


#: Grid tiles whose positions are consecutive outputs of one row (row tiles) store each
#: channel's positions as one masked vector store after transposing the tile in registers,
#: where AVX-512 makes masked stores cheap and the tile is one vector of channels wide:
#: the 16 single-lane stores per position cost as much as the reduction on short ones (a
#: 3 x 3 stem over 3 channels: 27 steps of 7 multiply-adds a tile).
_TRANSPOSED_STORES = AVX512[0] and NV == 1 and MG <= 8
_V8 = ir.VectorType(_F, 8)
_MASK8 = ir.VectorType(_I1, 8)


def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(lanes)), lanes))


def _store_transposed(builder, outs, base, pitch, dsts, row_on, nvalid):
    """Tile rows ``outs`` (up to 8 positions, lane j = channel j) stored as channel j's
    positions ``base[j * pitch + dsts[0] + r]``: an 8 x 16 transpose in three rounds of
    two-source shuffles, then one 8-lane masked store per channel below ``nvalid`` (lanes
    of rows that are off masked)."""
    zero = ir.Constant(_V, [0.0] * _L)
    a = [out[0] for out in outs] + [zero] * (8 - len(outs))
    # round 1: position pairs interleaved: lanes (p, c) -> p0 c0, p1 c0, p0 c1, p1 c1, ...
    pairs = []
    for k in range(4):
        lo = [x for i in range(8) for x in (i, 16 + i)]
        hi = [x for i in range(8, 16) for x in (i, 16 + i)]
        pairs.append(
            (
                _shuffle(builder, a[2 * k], a[2 * k + 1], lo),
                _shuffle(builder, a[2 * k], a[2 * k + 1], hi),
            )
        )
    # round 2: four positions per channel, four channels per vector
    quads = []
    for k in range(2):
        group = []
        for half in range(2):
            p, q = pairs[2 * k][half], pairs[2 * k + 1][half]
            for part in range(2):
                lanes = [
                    x
                    for c in range(4 * part, 4 * part + 4)
                    for x in (2 * c, 2 * c + 1, 16 + 2 * c, 17 + 2 * c)
                ]
                group.append(_shuffle(builder, p, q, lanes))
        quads.append(group)  # channels 0-3, 4-7, 8-11, 12-15
    # round 3: eight positions per channel, two channels per vector
    on = ir.Constant(_MASK8, [False] * 8)
    for r in range(len(outs)):
        on = builder.insert_element(on, row_on(r), ir.Constant(_I32, r))
    fn = _fn(
        builder,
        "llvm.masked.store.v8f32.p0v8f32",
        ir.VoidType(),
        [_V8, _V8.as_pointer(), _I32, _MASK8],
    )
    start = builder.gep(base, [dsts[0]])
    rows = []  # channel j's positions, in order
    for g in range(4):
        for pair in range(2):
            lanes = [
                x
                for c in (2 * pair, 2 * pair + 1)
                for x in (
                    4 * c,
                    4 * c + 1,
                    4 * c + 2,
                    4 * c + 3,
                    16 + 4 * c,
                    17 + 4 * c,
                    18 + 4 * c,
                    19 + 4 * c,
                )
            ]
            both = _shuffle(builder, quads[0][g], quads[1][g], lanes)
            for half in range(2):
                rows.append(_shuffle(builder, both, both, list(range(8 * half, 8 * half + 8))))

    def store(j, mask):
        ptr = builder.bitcast(_strided(builder, start, pitch, j), _V8.as_pointer())
        builder.call(fn, [rows[j], ptr, ir.Constant(_I32, 4), mask])

    # a whole block of channels (every tile but a layer's last) tests nothing per channel
    with builder.if_else(builder.icmp_signed(">=", nvalid, _k(_L)), likely=True) as (full, part):
        with full:
            for j in range(_L):
                store(j, on)
        with part:
            for j in range(_L):
                with builder.if_then(builder.icmp_signed("<", _k(j), nvalid)):
                    store(j, on)


@intrinsic
def _tile_grid(
    typingctx,
    wp,
    woff,
    xp,
    xoff,
    koffs,
    k0,
    kdim,
    y,
    yoff,
    ldy,
    nvalid,
    dst,
    bias,
    boff,
    res,
    flags,
    lo,
    hi,
    pf,
    pfs,
):
    """An MG-position x NR-channel tile of a stride-1 convolution over the padded grid.

    Step k broadcasts ``xp[xoff + koffs[k0 + k] + r]`` for position r and loads the
    channels' weights ``wp[woff + k*NR + j]``; channel j of position r goes to
    ``y[yoff + j*ldy + dst[r]]`` (``res`` read at the same place) for dst[r] >= 0 and
    j < nvalid. ``flags`` as for ``_tile`` (the bias is per channel: flag 32). Step k
    prefetches ``wp[pf + (k >> pfs)*NR]``: the caller points ``pf`` at this tile's part of
    the weights it reads next, so that the tiles of a pass fetch the next pass's weights
    from memory between them instead of the next pass's first tile waiting for all of them.
    """
    ip = types.intp
    sig = types.void(
        wp,
        ip,
        xp,
        ip,
        koffs,
        ip,
        ip,
        y,
        ip,
        ip,
        ip,
        dst,
        bias,
        ip,
        res,
        ip,
        types.float32,
        types.float32,
        ip,
        ip,
    )

    def codegen(context, builder, signature, args):
        wa, woff, xa, xoff, ka, k0, kdim, ya, yoff, ldy, nvalid, da, ba, boff, ra, flags, lo, hi = (
            args[:18]
        )
        pf, pfs = args[18:]
        t = signature.args
        wbase = _data(context, builder, t[0], wa, woff)
        pfbase = _data(context, builder, t[0], wa, pf)
        xbase = _data(context, builder, t[2], xa, xoff)
        kbase = _data(context, builder, t[4], ka, k0)
        ybase = _data(context, builder, t[7], ya, yoff)
        dbase = _data(context, builder, t[11], da, _k(0))
        bbase = _data(context, builder, t[12], ba, boff)
        rbase = _data(context, builder, t[14], ra, yoff)
        dsts = [builder.load(builder.gep(dbase, [_k(r)])) for r in range(MG)]
        masks = _lane_masks(builder, nvalid)
        col_bias = builder.icmp_signed("!=", builder.and_(flags, _k(32)), _k(0))

        def row_on(r):
            return builder.icmp_signed(">=", dsts[r], _k(0))

        def panel_row(k):
            return builder.gep(wbase, [builder.mul(k, _k(NR))])

        def grid_row(k):
            return builder.gep(xbase, [builder.load(builder.gep(kbase, [k]))])

        def load(r, v, mask):
            return _gather_rows(builder, builder.gep(ybase, [dsts[r]]), ldy, v * _L, mask)

        def store(r, v, value, mask):
            _scatter_rows(builder, value, builder.gep(ybase, [dsts[r]]), ldy, v * _L, mask)

        def load_res(r, v, mask):
            return _gather_rows(builder, builder.gep(rbase, [dsts[r]]), ldy, v * _L, mask)

        y_io = (load, store, load_res)
        store_rows = None
        if _TRANSPOSED_STORES:
            row_tile = builder.icmp_signed("!=", builder.and_(flags, _k(64)), _k(0))

            def store_rows(outs):
                with builder.if_else(row_tile, likely=True) as (transposed, scattered):
                    with transposed:
                        _store_transposed(builder, outs, ybase, ldy, dsts, row_on, nvalid)
                    with scattered:
                        for r in range(MG):
                            with builder.if_then(row_on(r), likely=True):
                                store(r, 0, outs[r][0], masks[0])

        _build_tile(
            builder,
            wbase,
            panel_row,
            kdim,
            _k(MG),
            masks,
            flags,
            lo,
            hi,
            bbase,
            col_bias,
            y_io,
            scalar_row=grid_row,
            row_on=row_on,
            rows=MG,
            store_rows=store_rows,
            prefetch=lambda k: _prefetch(
                builder, builder.gep(pfbase, [builder.mul(builder.ashr(k, pfs), _k(NR))])
            ),
        )
        return context.get_dummy_value()

    return sig, codegen


def pack_channels(w, group: int) -> np.ndarray:
    """``w`` (M, Cg, KH, KW) as channel panels for ``gemm_conv_grid``:
    wc[g*B + b, k, j] = w[g*Mg + b*NR + j, k] (k over Cg*KH*KW), channels past Mg zero,
    64-byte aligned so that every vector load of a panel row is aligned (numpy)."""
    m_n = w.shape[0]
    mg, k_n = m_n // group, w.size // max(m_n, 1)
    blocks = (mg + NR - 1) // NR
    rows = np.zeros((group, blocks * NR, k_n), np.float32)
    rows[:, :mg] = w.reshape(group, mg, k_n)
    size = group * blocks * k_n * NR
    raw = np.empty(size + 16, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    out = raw[start : start + size].reshape(group * blocks, k_n, NR)
    out[...] = rows.reshape(group, blocks, NR, k_n).transpose(0, 1, 3, 2).reshape(out.shape)
    return out


_BAND = 65536  # floats of input a band of grid positions may touch (a quarter of an L2)
KV = 1536 // NV  # reduction steps per pass: a block's weights for one pass stay in L2 (96 KiB)
_GEMM_CONV_GRID_ARGS = nb.types.Tuple((_X1, _X1, _I1D, _Y1, _X1, _X1, *(_I8,) * 16, _F4, _F4))


@nb.njit(
    nb.void(_X1, _I1D, _X3, _B1, _R4, _Y4, _I8, _I8, _I8, _I8, _F4, _F4, _I8, _I8, _I8), **_SERIAL
)
def gemm_conv_grid(
    xpad, koffs, wc, bias, res, y, wpad, gplane, group, flags, lo, hi, threads, body, launch
):
    """Stride-1 convolution from the padded input ``xpad`` (the N x C planes of
    (OH + taps) x ``wpad`` floats, flattened, slack at the end; ``gplane`` floats per
    (image, group)), ``koffs`` the offset of each tap (c, i, j) within a group's planes,
    with channel-vector tiles (weights packed by ``pack_channels``). Work is cut into
    bands of grid positions (a band's input stays in the L2 cache) times channel blocks (a
    block's weights are reused by every position group of the band), band-major, and
    handed out in contiguous runs."""
    n = y.shape[0]
    m_n, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    k_n = koffs.shape[0]
    mg = m_n // group
    blocks = wc.shape[0] // group
    p_n = oh * ow
    qv = oh * wpad
    # tiles along each output row (tpr of them) or along the flat grid (tpr = 0), whichever
    # computes fewer positions (the grid's padding columns are work thrown away); row tiles
    # on a tie, since their outputs are consecutive (``_store_transposed``)
    groups_n = (qv + MG - 1) // MG
    tpr = (ow + MG - 1) // MG
    if oh * tpr <= groups_n:
        groups_n = oh * tpr
    else:
        tpr = 0
    column = max(1, gplane // max(qv, 1))  # floats of input per grid position
    # a plane of at most 64 grid positions (7 x 7 outputs) is one band: split by input
    # size, ResNet-50's 2048 -> 512 layer made two bands, each streaming all 4 MB of
    # weights (one band: 0.81 -> 0.62 ms in the model)
    bg = max(1, _BAND // (column * MG)) if qv > 64 else groups_n
    per_band = n * group * blocks
    want = 4 * threads
    if per_band * ((groups_n + bg - 1) // bg) < want:
        bg = max(1, groups_n * per_band // want)
    bg = min(bg, groups_n)
    nbands = (groups_n + bg - 1) // bg
    bg = (groups_n + nbands - 1) // nbands  # bands of equal size: shares of equal work
    items = per_band * nbands
    chunks = min(threads, items)
    fl = (flags & ~1) | (32 if flags & 1 else 0)  # the bias is per channel: a column of the tile
    operands = (
        wc.reshape(-1),
        xpad,
        koffs,
        y.reshape(-1),
        bias,
        res.reshape(-1),
        items,
        blocks,
        nbands,
        bg,
        groups_n,
        group,
        wpad,
        ow,
        qv,
        tpr,
        k_n,
        fl,
        mg,
        m_n,
        p_n,
        gplane,
        lo,
        hi,
    )
    _invoke(launch, body, chunks, _pack(operands, _GEMM_CONV_GRID_ARGS))


@nb.cfunc(_BODY, **_CALLBACK)
def _gemm_conv_grid_body(t, chunks, args):
    """Share ``t`` of ``gemm_conv_grid``'s loop (see "Parallel loops")."""
    (
        wf,
        xpad,
        koffs,
        yf,
        bias,
        rf,
        items,
        blocks,
        nbands,
        bg,
        groups_n,
        group,
        wpad,
        ow,
        qv,
        tpr,
        k_n,
        flags,
        mg,
        m_n,
        p_n,
        gplane,
        lo,
        hi,
    ) = _unpack(args, _GEMM_CONV_GRID_ARGS)
    dst = np.empty(MG, np.int64)
    for item in range(t * items // chunks, (t + 1) * items // chunks):
        job = item // blocks
        blk = item - job * blocks
        img_g = job // nbands
        band = job - img_g * nbands
        img, g = img_g // group, img_g % group
        m0 = g * mg + blk * NR
        yoff = (img * m_n + m0) * p_n
        woff = (g * blocks + blk) * k_n * NR
        for k0 in range(0, k_n, KV):
            kc = min(KV, k_n - k0)
            fl = (flags if k0 + kc == k_n else 0) | (16 if k0 > 0 else 0) | (64 if tpr > 0 else 0)
            # the band's tiles share the prefetch of the next pass: 2**pfs parts of it
            tiles = min(groups_n, (band + 1) * bg) - band * bg
            pfs = 0 if tiles < 2 else (1 if tiles < 4 else (2 if tiles < 8 else 3))
            q = band * bg * MG
            oy = q // wpad
            ox = q - oy * wpad
            for pg in range(band * bg, min(groups_n, (band + 1) * bg)):
                if tpr > 0:  # MG positions of one output row from column x0
                    row = pg // tpr
                    x0 = (pg - row * tpr) * MG
                    q0 = row * wpad + x0
                    for r in range(MG):
                        dst[r] = row * ow + x0 + r if x0 + r < ow else -1
                else:
                    q0 = pg * MG
                    for r in range(MG):  # stepping (oy, ox) along: no division per position
                        dst[r] = oy * ow + ox if q < qv and ox < ow else -1
                        q += 1
                        ox += 1
                        if ox == wpad:
                            ox = 0
                            oy += 1
                _tile_grid(
                    wf,
                    woff + k0 * NR,
                    xpad,
                    img_g * gplane + q0,
                    koffs,
                    k0,
                    kc,
                    yf,
                    yoff,
                    p_n,
                    min(NR, mg - blk * NR),
                    dst,
                    bias,
                    m0,
                    rf,
                    fl,
                    lo,
                    hi,
                    woff + (k0 + kc + (pg - band * bg) % (1 << pfs) * (kc >> pfs)) * NR,
                    pfs,
                )


# ---------------------------------------------------------------------------------------
# Packed GEMM for products with a constant matrix: y[r, n] = act(x[r, :] @ w[:, n] + ...).
# The same register tile with the roles swapped: MR rows of x are broadcast, NR columns of
# w are the vectors. w is packed once into column panels (N / NR, K, NR); x is packed per
# call into row tiles (R / MR, K, MR).
# ---------------------------------------------------------------------------------------


def pack_panels(w) -> np.ndarray:
    """``w`` (K, N) as column panels: wpn[p, k, j] = w[k, p*NR + j], columns past N zero
    (numpy: it runs once per constant weight)."""
    k_n, n = w.shape
    count = (n + NR - 1) // NR
    cols = np.zeros((k_n, count * NR), np.float32)
    cols[:, :n] = w
    return np.ascontiguousarray(cols.reshape(k_n, count, NR).transpose(1, 0, 2))


_GEMM_ROWS_ARGS = nb.types.Tuple(
    (_Y1, _X1, _Y1, _X1, _X1, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _F4, _F4)
)


@nb.njit(nb.void(_R2, _X3, _B1, _R2, _Y2, _I8, _F4, _F4, _I8, _I8, _I8), **_SERIAL)
def gemm_rows(x, wpn, bias, res, y, flags, lo, hi, threads, body, launch):
    """y = act(x @ W + bias[col] + res) for x (R, K), W packed by ``pack_panels``."""
    r_n, k_n = x.shape
    n = y.shape[1]
    rt = (r_n + MR - 1) // MR
    panels = wpn.shape[0]
    xp = np.empty(rt * k_n * MR, np.float32)
    for t in range(rt):
        for k in range(k_n):
            for r in range(MR):
                row = t * MR + r
                xp[(t * k_n + k) * MR + r] = x[row, k] if row < r_n else np.float32(0.0)
    yf = y.reshape(-1)
    rf = res.reshape(-1)
    wf = wpn.reshape(-1)
    split, items, chunks = _shares(panels, rt, threads)
    operands = (xp, wf, yf, bias, rf, items, split, n, rt, k_n, flags, r_n, lo, hi)
    _invoke(launch, body, chunks, _pack(operands, _GEMM_ROWS_ARGS))


@nb.cfunc(_BODY, **_CALLBACK)
def _gemm_rows_body(c, chunks, args):
    """Share ``c`` of ``gemm_rows``'s loop (see "Parallel loops")."""
    xp, wf, yf, bias, rf, items, split, n, rt, k_n, flags, r_n, lo, hi = _unpack(
        args, _GEMM_ROWS_ARGS
    )
    for item in range(c * items // chunks, (c + 1) * items // chunks):
        p = item // split
        part = item - p * split
        nv = min(NR, n - p * NR)
        t0 = part * rt // split
        t1 = (part + 1) * rt // split
        for k0 in range(0, k_n, KC):
            kc = min(KC, k_n - k0)
            fl = (flags if k0 + kc == k_n else 0) | (16 if k0 > 0 else 0)
            for t in range(t0, t1):
                off = t * MR * n + p * NR
                _tile(
                    xp,
                    (t * k_n + k0) * MR,
                    wf.ctypes.data,
                    (p * k_n + k0) * NR,
                    NR,
                    kc,
                    yf,
                    off,
                    n,
                    min(MR, r_n - t * MR),
                    nv,
                    bias,
                    p * NR,
                    rf,
                    off,
                    fl,
                    lo,
                    hi,
                )


def panels(owner, w) -> np.ndarray:
    """Constant ``w`` (K, N) packed for ``gemm_rows``, kept on ``owner`` when read-only
    (looked up by identity: a key of its address, shape and strides cost 15 us a call with
    the caches a kernel just emptied)."""
    hit = _recall(owner, "_torsh_panels", w)
    if hit is not None:
        return hit[1]
    wpn = pack_panels(w)
    if not w.flags.writeable:
        _keep(owner, "_torsh_panels", w, (wpn,))
        release_pages(w)
    return wpn


_NO_RES2 = np.zeros((0, 0), np.float32)


@_contiguous_output(5)
def matmul(owner, x, w, b, z, y, act, lo, hi):
    """y = act(x @ w + b + z) into the preallocated ``y``, float32 x (..., K) and w (K, N).

    ``w`` is packed once when it is read-only (a weight); ``b`` is (N,) or None, ``z`` has
    ``y``'s shape or is None.
    """
    k, n = w.shape
    x2 = np.ascontiguousarray(x, np.float32).reshape(-1, k)
    y2 = y.reshape(-1, n)
    res = _NO_RES2 if z is None else np.ascontiguousarray(z, np.float32).reshape(-1, n)
    bias = _NO_BIAS if b is None else np.ascontiguousarray(b, np.float32).reshape(-1)
    flags = (b is not None) << 5 | (z is not None) << 1 | act << 2
    gemm_rows(
        x2,
        panels(owner, w),
        bias,
        res,
        y2,
        flags,
        lo,
        hi,
        _threads(),
        *_entry(_gemm_rows_body),
    )


# ---------------------------------------------------------------------------------------
# 2-d max pooling, one (image, channel) plane per task: the kernel rows are reduced first
# into a row buffer (contiguous, vectorized), then the kernel columns per output.
# ---------------------------------------------------------------------------------------


_MAX_POOL2D_ARGS = nb.types.Tuple((_X4, _Y4, *(_I8,) * 13, _F4, _I8, _I8, nb.boolean, *(_I8,) * 3))


@nb.njit(nb.void(_X4, _Y4, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _I8, _I8), **_SERIAL)
def max_pool2d(x, y, kh, kw, sh, sw, dh, dw, ph, pw, threads, body, launch):
    """y = max over each window of x (N, C, H, W); positions in the padding are -inf.

    The common 3-wide, stride-2 window reads the reduced row through its even and odd
    halves, so the three taps of consecutive outputs are contiguous runs (vector loads)
    instead of loads two apart; stride-1 windows read the reduced row padded with -inf,
    one contiguous run per tap; other windows and the border columns loop over taps."""
    n, c_n, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    low = np.float32(-np.inf)
    fast = sw == 2 and kw == 3 and dw == 1
    half = (w + 1) // 2
    lo_x = min(ow, (pw + 1) // 2)  # output columns whose three taps lie inside the row
    hi_x = max(lo_x, min(ow, (w - 3 + pw) // 2 + 1)) if fast else lo_x
    span = (ow - 1) * sw + (kw - 1) * dw + 1  # padded row positions the windows read
    unit = sw == 1 and not fast
    operands = (
        x,
        y,
        n,
        c_n,
        w,
        half,
        span,
        pw,
        oh,
        kh,
        sh,
        ph,
        dh,
        h,
        ow,
        low,
        hi_x,
        lo_x,
        unit,
        kw,
        dw,
        sw,
    )
    _invoke(launch, body, min(threads, n * c_n), _pack(operands, _MAX_POOL2D_ARGS))


@nb.cfunc(_BODY, **_CALLBACK)
def _max_pool2d_body(t, chunks, args):
    """Share ``t`` of ``max_pool2d``'s loop (see "Parallel loops")."""
    (
        x,
        y,
        n,
        c_n,
        w,
        half,
        span,
        pw,
        oh,
        kh,
        sh,
        ph,
        dh,
        h,
        ow,
        low,
        hi_x,
        lo_x,
        unit,
        kw,
        dw,
        sw,
    ) = _unpack(args, _MAX_POOL2D_ARGS)
    row = np.empty(w + 1, np.float32)  # scratch, one set per share (as numba hoists them)
    ev = np.empty(half + 1, np.float32)
    od = np.empty(half + 1, np.float32)
    rp = np.empty(max(span, pw + w) + 1, np.float32)
    for r in range(t * (n * c_n) // chunks, (t + 1) * (n * c_n) // chunks):
        b = r // c_n
        c = r - b * c_n
        for oy in range(oh):
            found = False
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= h:
                    continue
                if not found:
                    for ix in range(w):
                        row[ix] = x[b, c, iy, ix]
                    found = True
                else:
                    for ix in range(w):
                        row[ix] = _fmax(row[ix], x[b, c, iy, ix])
            if not found:
                for ox in range(ow):
                    y[b, c, oy, ox] = low
                continue
            if hi_x > lo_x:
                row[w] = low
                for i in range(half):
                    ev[i] = row[2 * i]
                    od[i] = row[2 * i + 1]
                if pw % 2 == 0:  # taps 2j, 2j+1, 2j+2 with j = ox - pw/2
                    for ox in range(lo_x, hi_x):
                        j = ox - pw // 2
                        y[b, c, oy, ox] = _fmax(_fmax(ev[j], od[j]), ev[j + 1])
                else:  # taps 2j+1, 2j+2, 2j+3 with j = ox - (pw+1)/2
                    for ox in range(lo_x, hi_x):
                        j = ox - (pw + 1) // 2
                        y[b, c, oy, ox] = _fmax(_fmax(od[j], ev[j + 1]), od[j + 1])
            if unit:  # stride 1: the row padded with -inf, every tap one contiguous run
                for q in range(span):
                    rp[q] = low
                for ix in range(max(0, -pw), min(w, span - pw)):
                    rp[_U(ix + pw)] = row[ix]
                out = y[b, c, oy]
                for ox in range(ow):
                    out[ox] = rp[ox]
                for j in range(1, kw):
                    off = j * dw
                    for ox in range(ow):
                        out[ox] = _fmax(out[ox], rp[_U(ox + off)])
                continue
            for ox in range(ow):
                if ox >= lo_x and ox < hi_x:
                    continue
                m = low
                for j in range(kw):
                    ix = ox * sw - pw + j * dw
                    if ix >= 0 and ix < w:
                        m = _fmax(m, row[ix])
                y[b, c, oy, ox] = m


@_contiguous_output(1)
def max_pool(x, y, geo):
    """MaxPool of float32 NCHW ``x`` into the preallocated ``y``; ``geo`` is (kh, kw, sh,
    sw, dh, dw, ph, pw)."""
    x = np.ascontiguousarray(x, np.float32)
    max_pool2d(x, y, *geo, _threads(), *_entry(_max_pool2d_body))
