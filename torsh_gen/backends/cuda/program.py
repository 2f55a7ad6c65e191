"""Graph → CUDA program: kernel calls (GPU-scheduled kernel IR) and cuBLAS GEMM calls.

Every node is lowered as for the native targets (``kernel/program.py``: the same memory
plan, weights store and lowerings) but with the GPU schedule (``Schedule(gpu=True)``),
except the matrix products, which go to cuBLAS:

- ``Conv``/``FusedConv`` with one group: an im2col kernel of ours writes the column
  matrix (pointwise convolutions need none: the input already is one), one strided-batched
  GEMM per image (the weights' stride 0), then one epilogue kernel for the bias, the
  residual and the activation;
- ``MatMul``/``FusedMatMul`` with a 2-d right operand or equal batch dims, and ``Gemm``:
  one GEMM (batched where there are batch dims) plus the epilogue.

Where cuBLAS would write over an operand the epilogue still reads (the memory plan may
give a residual and the output one slot), the GEMM writes to scratch first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torsh_gen.backends.cuda.attention import AttentionShape, warp_attention
from torsh_gen.backends.cuda.attention import fits as attention_fits
from torsh_gen.backends.cuda.rows import (
    Rows,
    warp_fits,
    warp_layer_norm,
    warp_reduce,
    warp_softmax,
)
from torsh_gen.backends.cuda.rows import layer_norm as row_layer_norm
from torsh_gen.backends.cuda.rows import softmax as row_softmax
from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import Expr, Select, as_expr, idx, logical_and
from torsh_gen.backends.kernel.lower import (
    LoweringDeclined,
    Schedule,
    broadcast_strides,
    prod,
    row_major_strides,
)
from torsh_gen.backends.kernel.lower.conv_operands import conv_geometry
from torsh_gen.backends.kernel.lower.elementwise import fused_values
from torsh_gen.backends.kernel.lower.reduce import softmax_split, split_at
from torsh_gen.backends.kernel.lower.scalar_ops import SCALAR_OPS, activation
from torsh_gen.backends.kernel.program import (
    KernelCall,
    Program,
    TensorRef,
    WeightStore,
    _align,
    _Builder,
    _tensor_info,
    check_lowerable,
)
from torsh_gen.ir.graph import Graph, Node
from torsh_gen.ops.registry import lookup

#: The schedule every GPU lowering sees: no vectors, every independent loop parallel.
GPU_SCHEDULE = Schedule(lanes=1, threads=True, parallel_min=1, gpu=True)
#: Storage types cuBLAS multiplies (float32 accumulation).
GEMM_DTYPES = ("f32", "f16", "bf16")
#: Row reductions whose kernels compute in float32 whatever they read and write, so a Cast
#: from a 16-bit float just before one, or to one just after, can be left to the kernel.
ROW_OPS = ("LayerNormalization", "Softmax", "LogSoftmax")
NARROW_FLOATS = ("f16", "bf16")


@dataclass
class GemmCall:
    """Row-major ``C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b]``; ``args`` = [A, B, C]."""

    args: list[TensorRef]
    m: int
    n: int
    k: int
    batch: int = 1
    trans_a: bool = False
    trans_b: bool = False
    lda: int = 0
    ldb: int = 0
    ldc: int = 0
    stride_a: int = 0
    stride_b: int = 0
    stride_c: int = 0
    alpha: float = 1.0
    beta: float = 0.0
    node: str = ""
    op_type: str = ""
    kernel: str = field(default="", repr=False)  # no kernel: a library call
    #: the epilogue cuBLASLt may do instead of the kernel call after this GEMM
    #: (``_lt_epilogue``): bias, residual (as C with beta) and ReLU; None: no such offer
    lt: dict | None = field(default=None, repr=False)

    @property
    def dtype(self) -> str:
        """The storage type of the three matrices."""
        return self.args[2].dtype


def _overlaps(a: TensorRef, b: TensorRef) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind in ("input", "output"):
        return a.index == b.index
    return a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes


class _GpuBuilder(_Builder):
    """The native program builder with matrix products routed to cuBLAS."""

    def __init__(self, graph: Graph, store: WeightStore | None = None) -> None:
        super().__init__(graph, GPU_SCHEDULE, store)
        self._scratch_at = 0  # scratch used by the node being built
        self._readers = _readers(graph)
        self._order = {id(n): i for i, n in enumerate(graph.nodes)}
        self._casts_in, self._casts_out = _row_casts(graph, self._readers)
        self._views: dict[int, tuple[Node, TensorRef, list[int]]] = {}  # deferred Transposes
        self._raw: dict[int, tuple] = {}  # convolution outputs whose epilogue the next im2col does
        self._held: Node | None = None  # a widening Cast waiting for the row node after it
        self._absorbed: set[int] = set()  # narrowing Casts a row kernel already did

    #: op type -> the method that lowers it with a GPU kernel of its own (returns False
    #: to leave the node to the generic lowering).
    OWN_KERNELS = {
        "Conv": "_conv", "FusedConv": "_conv", "MatMul": "_matmul", "FusedMatMul": "_matmul",
        "Gemm": "_matmul", "Transpose": "_transpose", "Softmax": "_softmax", "LogSoftmax": "_softmax",
        "LayerNormalization": "_layer_norm", "GlobalAveragePool": "_global_pool",
        "GlobalMaxPool": "_global_pool", "Attention": "_attention",
    }

    def node(self, node: Node) -> None:
        self._scratch_at = 0
        if id(node) in self._absorbed:
            return
        if id(node) in self._casts_in:  # decided by the row node next (``_row_io``)
            self._held = node
            return
        method = self.OWN_KERNELS.get(node.op_type)
        try:
            if method is not None and getattr(self, method)(node):
                return
        except LoweringDeclined:
            pass
        self._release_held()
        super().node(node)

    def _release_held(self) -> None:
        """Lower the held widening Cast after all (its row node did not take it)."""
        held, self._held = self._held, None
        if held is not None:
            super().node(held)
            self._scratch_at = 0

    def _row_io(self, node: Node) -> tuple[TensorRef, TensorRef, Node | None]:
        """Input and output of a row kernel (Softmax, LayerNormalization), and the Cast
        after it that its output stands for (or None).

        The float32 precision passes keep these ops in float32 between a Cast from float16
        before and a Cast back after; the kernel reads and writes any float type and computes
        in float32, so it can read the float16 tensor and write the float16 result itself:
        the same values, two launches fewer. The memory plan placed the skipped tensors, not
        these, so a pairing is taken only where the kernel's input and output (and its
        parameters) do not share memory; else the Casts run as planned."""
        held, after = self._held, self._casts_out.get(id(node))
        planned_x = self.out_ref(held.outputs[0]) if held is not None else self.ref(node.inputs[0])
        planned_y = self.out_ref(node.outputs[0])
        params = [self.ref(v) for v in node.inputs[1:] if v is not None and v.name]
        options = [(i, o) for i in (held is not None, False) for o in (after is not None, False)]
        for use_in, use_out in dict.fromkeys(options):
            x = self.ref(held.inputs[0]) if use_in else planned_x
            y = self.out_ref(after.outputs[0]) if use_out else planned_y
            if (use_in or use_out) and (_overlaps(x, y) or (use_out and any(_overlaps(y, r) for r in params))):
                continue
            if not use_in:
                self._release_held()
            self._held = None
            if use_out:
                self._absorbed.add(id(after))
            return x, y, after if use_out else None
        raise AssertionError("unreachable: the planned tensors are always an option")

    def row_kernel(self, kb: KernelBuilder, refs: dict[str, TensorRef], node: Node, after: Node | None, op: str) -> bool:
        """``node_kernel`` for a row kernel whose output may stand for the Cast after it."""
        self.kernel_call(kb, refs, node, op)
        self.refs[id((after or node).outputs[0])] = refs["y0"]
        return True

    # memory ------------------------------------------------------------------
    def ref(self, v):
        """As the native builder's, but a deferred Transpose's output read by anything that
        cannot take it as a strided operand is computed now (``_materialize``)."""
        if v is not None and id(v) in self._views:
            self._materialize(v)
        if v is not None and id(v) in self._raw:
            self._epilogue(*self._raw.pop(id(v)))  # in place, where the GEMM left it
        return super().ref(v)

    def _planned(self, v) -> TensorRef | None:
        """Where the memory plan put ``v`` (None where it has no place of its own), without
        allocating anything: ``out_ref`` makes a region for an unplanned tensor."""
        dtype, shape = _tensor_info(v)
        j = self.out_index.get(id(v))
        if j is not None:
            return TensorRef("output", j, 0, dtype, shape)
        slot = self.plan.slot_of(v.name) if self.plan is not None and v.name else None
        if slot is None:
            return None
        return TensorRef("workspace", 0, self.arena_offsets[slot] + self.plan.offsets.get(v.name, 0), dtype, shape)

    def _untouched(self, src: TensorRef, after: Node, until: int) -> bool:
        """Whether no node after ``after`` up to node index ``until`` writes where ``src``
        lies (the plan let them: it thinks ``src`` dead once ``after`` has read it)."""
        nodes = self.graph.nodes
        for i in range(self._order[id(after)] + 1, until + 1):
            for v in nodes[i].outputs:
                at = self._planned(v) if v is not None and v.name else None
                if at is not None and _overlaps(at, src):
                    return False
        return True

    def scratch(self, dtype: str, n: int) -> TensorRef:
        """Scratch of this node (offsets past what the node already took)."""
        from torsh_gen.backends.kernel.ir import itemsize

        ref = TensorRef("scratch", 0, self._scratch_at, dtype, (n,))
        self._scratch_at += _align(max(n * itemsize(dtype), 1))
        self.scratch_bytes = max(self.scratch_bytes, self._scratch_at)
        return ref

    def kernel_call(self, kb: KernelBuilder, refs: dict[str, TensorRef], node: Node, op: str) -> None:
        """Add the kernel ``kb`` built and a call of it on ``refs`` (buffer name -> tensor)."""
        kernel = kb.build()
        name = self.add_kernel(kernel, op)
        self.program.calls.append(KernelCall(name, [refs[b.name] for b in kernel.buffers], node.name, node.op_type))

    def node_kernel(self, kb: KernelBuilder, refs: dict[str, TensorRef], node: Node, op: str) -> bool:
        """The kernel computing ``node`` whole: its call, and output 0 found at ``y0``."""
        self.kernel_call(kb, refs, node, op)
        self.refs[id(node.outputs[0])] = refs["y0"]
        return True

    # convolutions ------------------------------------------------------------
    def _conv(self, node: Node) -> bool:
        x, w = node.inputs[0], node.inputs[1]
        xd, xs = _tensor_info(x)
        wd, ws = _tensor_info(w)
        yd, ys = _tensor_info(node.outputs[0])
        attrs = lookup(node.op_type, node.domain, self.opset).resolve_attrs(node)
        geo = conv_geometry(xs, ws, attrs)
        if xd not in GEMM_DTYPES or yd != xd or wd != xd:
            return False
        if geo.group != 1:
            return self._direct_conv(node, geo, attrs)
        raw = self._raw.pop(id(x), None) if not geo.pointwise else None  # its epilogue: ours
        xr, wr, yr = self.ref(x), self.ref(w), self.out_ref(node.outputs[0])
        bias = self.ref(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        resid = self.ref(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
        positions = prod(geo.out)
        depth = geo.cin * geo.taps
        if geo.pointwise:
            col, col_stride = xr, geo.cin * positions
        else:
            col = self.scratch(xd, geo.batch * depth * positions)
            col_stride = depth * positions
            self._im2col(node, geo, xr, col, raw)
        act = attrs.activation if node.op_type == "FusedConv" else ""
        params = list(attrs.activation_params or []) if node.op_type == "FusedConv" else []
        needs_epilogue = bias is not None or resid is not None or bool(act)
        reads = [r for r in (xr, wr, col, resid) if r is not None]
        c = self.scratch(yd, prod(ys)) if any(_overlaps(r, yr) for r in reads) else yr
        self.program.calls.append(GemmCall(
            [wr, col, c], geo.cout, positions, depth, geo.batch, lda=depth, ldb=positions, ldc=positions,
            stride_a=0, stride_b=col_stride, stride_c=geo.cout * positions, node=node.name, op_type=node.op_type,
        ))
        extras = []
        if bias is not None:
            extras.append((bias, [0, 1] + [0] * (len(ys) - 2), 1.0))
        if resid is not None:
            extras.append((resid, broadcast_strides(resid.shape, ys), 1.0))
        if needs_epilogue and c is yr and resid is None and self._im2col_reader(node):
            self._raw[id(node.outputs[0])] = (node, ys, yr, yr, extras, act, params)
        elif needs_epilogue or c is not yr:
            self._epilogue(node, ys, c, yr, extras, act, params)
        self.refs[id(node.outputs[0])] = yr
        return True

    def _im2col_reader(self, node: Node) -> bool:
        """Whether the convolution's output is read by one convolution alone, through
        im2col: that kernel then adds the bias and applies the activation as it gathers
        (each element is read once per tap anyway), and this convolution's epilogue, a
        launch and a pass over the tensor, is left out (ResNet's 1x1 -> 3x3 pairs)."""
        out = node.outputs[0]
        readers = self._readers.get(id(out), [])
        if len(readers) != 1 or id(out) in self.out_index:
            return False
        (nxt,) = readers
        if nxt.op_type not in ("Conv", "FusedConv") or nxt.inputs[0] is not out:
            return False
        if any(v is out for v in nxt.inputs[1:]):
            return False
        try:
            xd, xs = _tensor_info(out)
            types = [_tensor_info(v)[0] for v in (nxt.inputs[1], nxt.outputs[0])]
            geo = conv_geometry(xs, _tensor_info(nxt.inputs[1])[1], lookup(nxt.op_type, nxt.domain, self.opset).resolve_attrs(nxt))
        except Exception:  # anything unusual: the epilogue runs as planned
            return False
        return xd in GEMM_DTYPES and types == [xd, xd] and geo.group == 1 and not geo.pointwise

    def _direct_conv(self, node: Node, geo, attrs) -> bool:
        """A grouped (depthwise) convolution: one thread per output, taps unrolled."""
        ys = _tensor_info(node.outputs[0])[1]
        refs = {"x0": self.ref(node.inputs[0]), "x1": self.ref(node.inputs[1])}
        for i in (2, 3):
            if len(node.inputs) > i and node.inputs[i] is not None:
                refs[f"x{i}"] = self.ref(node.inputs[i])
        refs["y0"] = self.out_ref(node.outputs[0])
        kb = KernelBuilder("gconv")
        buf = {k: kb.buffer(k, r.dtype, prod(r.shape), writable=k == "y0") for k, r in refs.items()}
        cin_g, cout_g, positions = geo.cin // geo.group, geo.cout // geo.group, prod(geo.out)
        with kb.loop(geo.batch, kind="parallel", hint="n") as n, kb.loop(geo.cout, kind="parallel", hint="oc") as oc:
            with kb.loop(positions, kind="parallel", hint="p") as p:
                acc = kb.local("f32", as_expr(0.0, "f32"))
                with kb.loop(cin_g, hint="ci") as ci:
                    plane = kb.let(n * geo.cin + (oc // cout_g) * cin_g + ci, "pl")
                    wrow = kb.let((oc * cin_g + ci) * geo.taps, "wr")
                    for t in range(geo.taps):
                        at, inside = _tap_source(kb, geo, plane, p, t)
                        tap = Select(inside, buf["x0"][Select(inside, at, idx(0))], as_expr(0.0, "f32"))
                        kb.assign(acc, acc + tap * buf["x1"][wrow + t])
                o = kb.let((n * geo.cout + oc) * positions + p, "o")
                v: Expr = acc
                if "x2" in buf:
                    v = v + buf["x2"][oc]
                if "x3" in buf:
                    v = v + buf["x3"][_broadcast_index(o, ys, broadcast_strides(refs["x3"].shape, ys))]
                act = attrs.activation if node.op_type == "FusedConv" else ""
                params = list(attrs.activation_params or []) if node.op_type == "FusedConv" else []
                buf["y0"][o] = activation(kb, kb.let(v, "v"), act, params)
        return self.node_kernel(kb, refs, node, "gconv")

    def _transpose(self, node: Node) -> bool:
        """One thread per output element, reading through the permuted strides (or none:
        ``_defer_transpose``)."""
        xs = _tensor_info(node.inputs[0])[1]
        attrs = lookup(node.op_type, node.domain, self.opset).resolve_attrs(node)
        perm = list(range(len(xs)))[::-1] if attrs.perm is None else [int(p) % len(xs) for p in attrs.perm]
        if sorted(perm) != list(range(len(xs))):
            return False
        if self._defer_transpose(node, perm):
            return True
        return self._transpose_kernel(node, perm)

    def _defer_transpose(self, node: Node, perm: list[int]) -> bool:
        """Leave a Transpose read only by matrix products to them: cuBLAS reads the
        permuted tensor in place through leading dimensions and batch strides (attention's
        head split and merge), one launch fewer each. Taken only where the source stays
        intact until the last reader runs."""
        out = node.outputs[0]
        readers = self._readers.get(id(out), [])
        if not readers or id(out) in self.out_index or _tensor_info(out)[0] not in GEMM_DTYPES:
            return False
        for r in readers:
            if r.op_type not in ("MatMul", "FusedMatMul") or any(v is out for v in r.inputs[2:]):
                return False
        src = self.ref(node.inputs[0])
        if not self._untouched(src, node, max(self._order[id(r)] for r in readers)):
            return False
        self._views[id(out)] = (node, src, perm)
        return True

    def _materialize(self, v) -> None:
        """Run a deferred Transpose after all, into the place the plan gave its output
        (reserved from the Transpose to its last reader)."""
        node, _, perm = self._views.pop(id(v))
        self._transpose_kernel(node, perm)

    def _view(self, v) -> tuple[TensorRef, tuple[int, ...], list[int]] | None:
        """A deferred Transpose's source and the permuted shape and element strides it is
        read with, or None for a tensor of its own."""
        got = self._views.get(id(v))
        if got is None:
            return None
        node, src, perm = got
        strides = row_major_strides(src.shape)
        return src, tuple(src.shape[p] for p in perm), [strides[p] for p in perm]

    def _transpose_kernel(self, node: Node, perm: list[int]) -> bool:
        xd, xs = _tensor_info(node.inputs[0])
        _, ys = _tensor_info(node.outputs[0])
        src = [row_major_strides(xs)[p] for p in perm]
        refs = {"x0": self.ref(node.inputs[0]), "y0": self.out_ref(node.outputs[0])}
        kb = KernelBuilder("transpose")
        x0 = kb.buffer("x0", xd, prod(xs))
        y0 = kb.buffer("y0", xd, prod(ys), writable=True)
        with kb.loop(prod(ys), kind="parallel", hint="e") as i:
            y0[i] = x0[_broadcast_index(i, ys, src)]
        return self.node_kernel(kb, refs, node, "transpose")

    def _row_buffers(self, kb: KernelBuilder, rows: Rows, refs: dict[str, TensorRef]) -> tuple:
        """The two rows of partials of a two-level row reduction (scratch)."""
        n = rows.count * rows.lanes
        refs["s0"], refs["s1"] = self.scratch("f32", n), self.scratch("f32", n)
        return kb.buffer("s0", "f32", n, writable=True), kb.buffer("s1", "f32", n, writable=True)

    def _softmax(self, node: Node) -> bool:
        """Softmax / LogSoftmax rows reduced by warps of lanes (``rows.py``)."""
        xd, xs = _tensor_info(node.inputs[0])
        if xd not in ("f32", "f16", "bf16") or not xs or prod(xs) == 0:
            return False
        attrs = lookup(node.op_type, node.domain, self.opset).resolve_attrs(node)
        rows = Rows(*softmax_split(xs, node, self.opset, attrs))
        x, y, after = self._row_io(node)
        refs = {"x0": x, "y0": y}
        kb = KernelBuilder("softmax")
        x0 = kb.buffer("x0", x.dtype, prod(xs))
        y0 = kb.buffer("y0", y.dtype, prod(xs), writable=True)
        if warp_fits(rows):
            warp_softmax(kb, rows, x0, y0, node.op_type == "LogSoftmax")
        else:
            row_softmax(kb, rows, x0, y0, self._row_buffers(kb, rows, refs), node.op_type == "LogSoftmax")
        return self.row_kernel(kb, refs, node, after, node.op_type)

    def _attention(self, node: Node) -> bool:
        """Attention of short sequences: one warp per query row (``attention.py``)."""
        if node.domain:
            return False  # another domain's op of that name
        if len(node.inputs) > 3 and any(v is not None and v.name for v in node.inputs[3:]):
            return False  # masks, KV caches, padding lengths: the generic lowering
        if any(v is not None and v.name for v in node.outputs[1:]):
            return False
        types = [_tensor_info(v) for v in node.inputs[:3]]
        (qd, qs), (kd, ks), (vd, vs) = types
        if not (qd == kd == vd == "f32") or not (len(qs) == len(ks) == len(vs) == 4):
            return False
        attrs = lookup(node.op_type, node.domain, self.opset).resolve_attrs(node)
        windows = [int(attrs.get(a, -1)) for a in ("left_window_size", "right_window_size")]
        if float(attrs.get("softcap", 0.0) or 0.0) != 0.0 or windows != [-1, -1]:
            return False
        g = AttentionShape(qs[0], qs[1], qs[2], ks[2], qs[3], vs[3])
        if ks[:2] != qs[:2] or vs[:3] != ks[:3] or ks[3] != qs[3] or not attention_fits(g):
            return False
        scale = float(attrs.get("scale", 0.0) or 0.0) or 1.0 / math.sqrt(g.dk)
        refs = {f"x{i}": self.ref(node.inputs[i]) for i in range(3)}
        refs["y0"] = self.out_ref(node.outputs[0])
        kb = KernelBuilder("attention")
        q, k, v = (kb.buffer(f"x{i}", "f32", prod(t[1])) for i, t in enumerate(types))
        y = kb.buffer("y0", "f32", prod(_tensor_info(node.outputs[0])[1]), writable=True)
        warp_attention(kb, g, q, k, v, y, scale, bool(attrs.get("is_causal", 0)))
        return self.node_kernel(kb, refs, node, "Attention")

    def _global_pool(self, node: Node) -> bool:
        """GlobalAveragePool / GlobalMaxPool: one warp per channel plane."""
        xd, xs = _tensor_info(node.inputs[0])
        if xd not in ("f32", "f16", "bf16") or len(xs) < 3 or prod(xs) == 0:
            return False
        rows = Rows(xs[0] * xs[1], prod(xs[2:]), 1)
        if not warp_fits(rows):
            return False
        refs = {"x0": self.ref(node.inputs[0]), "y0": self.out_ref(node.outputs[0])}
        kb = KernelBuilder("globalpool")
        x0 = kb.buffer("x0", xd, prod(xs))
        y0 = kb.buffer("y0", refs["y0"].dtype, rows.count, writable=True)
        warp_reduce(kb, rows, x0, y0, "max" if node.op_type == "GlobalMaxPool" else "mean")
        return self.node_kernel(kb, refs, node, node.op_type)

    def _layer_norm(self, node: Node) -> bool:
        """LayerNormalization over the trailing dims, rows reduced by lanes (``rows.py``)."""
        xd, xs = _tensor_info(node.inputs[0])
        wants_stats = any(v is not None and v.name for v in node.outputs[1:])
        if xd not in ("f32", "f16", "bf16") or not xs or prod(xs) == 0 or wants_stats:
            return False
        attrs = lookup(node.op_type, node.domain, self.opset).resolve_attrs(node)
        axis = int(attrs.get("axis", -1)) % len(xs)
        outer, n, _ = split_at(xs, axis, True)
        params = [v for v in node.inputs[1:3] if v is not None]
        if any(_tensor_info(v)[0] not in (xd, "f32") or prod(_tensor_info(v)[1]) != n for v in params):
            return False
        rows = Rows(outer, n, 1)
        x, y, after = self._row_io(node)
        refs = {"x0": x, "y0": y}
        kb = KernelBuilder("layernorm")
        x0 = kb.buffer("x0", x.dtype, prod(xs))
        y0 = kb.buffer("y0", y.dtype, prod(xs), writable=True)
        refs["x1"] = self.ref(params[0])
        scale = kb.buffer("x1", refs["x1"].dtype, n)
        bias = None
        if len(params) > 1:
            refs["x2"] = self.ref(params[1])
            bias = kb.buffer("x2", refs["x2"].dtype, n)
        eps = float(attrs.get("epsilon", 1e-5))
        if warp_fits(rows):
            warp_layer_norm(kb, rows, x0, y0, scale, bias, eps)
        else:
            row_layer_norm(kb, rows, x0, y0, scale, bias, self._row_buffers(kb, rows, refs), eps)
        return self.row_kernel(kb, refs, node, after, node.op_type)

    def _im2col(self, node: Node, geo, xr: TensorRef, col: TensorRef, raw: tuple | None = None) -> None:
        """``col[n][(c, taps)][positions]``: the input under each kernel tap, zero outside.

        One thread per (image, channel, output position) writes that position's value for
        every tap, the taps unrolled: the position's coordinates are worked out once and
        each tap is a constant offset from them. With a thread per column element the
        index arithmetic (about 60 integer instructions an element) bounded the kernel at
        a third of the memory's speed; consecutive threads still write consecutive
        positions, so every store stays coalesced. ``raw``: the producing convolution's
        epilogue (bias, activation; ``_im2col_reader``), applied here to every value
        gathered (the padding stays zero)."""
        kb = KernelBuilder("im2col")
        src = kb.buffer("x0", xr.dtype, prod(xr.shape))
        dst = kb.buffer("y0", col.dtype, col.shape[0], writable=True)
        refs = {"x0": xr, "y0": col}
        act, params, bias = "", [], None
        if raw is not None:
            _, _, _, _, extras, act, params = raw
            if extras:
                refs["x1"] = extras[0][0]
                bias = kb.buffer("x1", refs["x1"].dtype, prod(refs["x1"].shape))
        positions = prod(geo.out)
        with kb.loop(geo.batch, kind="parallel", hint="n") as n, kb.loop(geo.cin, kind="parallel", hint="c") as c:
            with kb.loop(positions, kind="parallel", hint="p") as p:
                plane = kb.let(n * geo.cin + c, "pl")
                first = kb.let(plane * (geo.taps * positions) + p, "o")
                shift = kb.let(bias[c], "b") if bias is not None else None
                for t in range(geo.taps):
                    at, inside = _tap_source(kb, geo, plane, p, t)
                    v: Expr = src[Select(inside, at, idx(0))]
                    if raw is not None:
                        v = activation(kb, kb.let(v + shift if shift is not None else v, "v"), act, params)
                    dst[first + t * positions] = Select(inside, v, as_expr(0.0, dst.dtype))
        self.kernel_call(kb, refs, node, "im2col")

    # matrix products ---------------------------------------------------------
    def _matmul(self, node: Node) -> bool:
        a, b = node.inputs[0], node.inputs[1]
        ad, as_ = _tensor_info(a)
        bd, bs = _tensor_info(b)
        yd, ys = _tensor_info(node.outputs[0])
        if not (ad == bd == yd) or ad not in GEMM_DTYPES or len(as_) < 2 or len(bs) < 2:
            return False
        attrs = lookup(node.op_type, node.domain, self.opset).resolve_attrs(node)
        ta = tb = False
        alpha = 1.0
        if node.op_type == "Gemm":
            ta, tb, alpha = bool(attrs.transA), bool(attrs.transB), float(attrs.alpha)
        m, k = (as_[-1], as_[-2]) if ta else (as_[-2], as_[-1])
        n = bs[-2] if tb else bs[-1]
        a_batch, b_batch = as_[:-2], bs[:-2]
        if b_batch and a_batch and a_batch != b_batch:
            return False
        batch = prod(a_batch or b_batch)
        if prod(ys) != m * n * batch:
            return False
        va, vb = self._operand(a, ta), self._operand(b, tb)
        if va is None or vb is None:  # a permuted operand cuBLAS cannot read: its kernel runs
            va = va or self._operand(self._materialized(a), ta)
            vb = vb or self._operand(self._materialized(b), tb)
        (ar, ta, lda, sa), (br, tb, ldb, sb) = va, vb
        extras = []
        act, params = "", []
        if node.op_type == "FusedMatMul":
            act, params = attrs.activation, list(attrs.activation_params or [])
            for i in (2, 3):
                if len(node.inputs) > i and node.inputs[i] is not None:
                    r = self.ref(node.inputs[i])
                    extras.append((r, broadcast_strides(r.shape, ys), 1.0))
        elif node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None and float(attrs.beta) != 0.0:
            r = self.ref(node.inputs[2])
            extras.append((r, broadcast_strides(r.shape, ys), float(attrs.beta)))
        yr, ldc, sc, after = self._gemm_output(node, m, n, ys, (ar, br))
        if after is not None and after.op_type in ("Div", "Mul"):
            alpha *= self._scale_of(after)
        chain = self._fused_after(node, ys) if (extras or act) and after is None else None
        if not b_batch and not ta and sa == m * lda and sc == m * ldc:
            geom = dict(m=batch * m, batch=1, stride_a=0, stride_b=0, stride_c=0)  # rows of one product
        else:
            geom = dict(m=m, batch=batch, stride_a=sa if a_batch else 0, stride_b=sb if b_batch else 0, stride_c=sc)
        reads = [ar, br] + [e[0] for e in extras]
        # (a product written through its Transpose is apart from its operands: _gemm_output)
        c = self.scratch(yd, prod(ys)) if any(_overlaps(r, yr) for r in reads) else yr
        call = GemmCall(
            [ar, br, c], n=n, k=k, trans_a=ta, trans_b=tb, lda=lda, ldb=ldb, ldc=ldc if c is yr else n,
            alpha=alpha, node=node.name, op_type=node.op_type, **geom,
        )
        self.program.calls.append(call)
        if chain is not None:
            target = self.out_ref(chain.outputs[0])
            if any(_overlaps(target, e[0]) for e in extras) or (_overlaps(target, c) and not _same_place(target, c)):
                chain = None
        if chain is not None:  # the epilogue applies the chain too and writes its output
            self._absorbed.add(id(chain))
            self._epilogue(node, ys, c, target, extras, act, params, chain.attrs["body"].value)
            self.refs[id(chain.outputs[0])] = target
            return True
        if extras or act or c is not yr:
            self._epilogue(node, ys, c, yr, extras, act, params)
            offer = _lt_epilogue(call, c is yr, extras, act, ys)
            if offer is not None:
                call.lt = {**offer, "epilogue": self.program.calls[-1]}
        self.refs[id((after or node).outputs[0])] = yr
        return True

    def _scale_of(self, node: Node) -> float | None:
        """The factor of a Div or Mul of the product (input 0; either input for Mul) by a
        one-element constant, or None: attention's score scaling, folded into the GEMM's
        alpha (exact for powers of two such as 1/sqrt(64); else within one rounding)."""
        ins = [v for v in node.inputs if v is not None]
        if len(ins) != 2:
            return None
        consts = [v for v in ins if v.const is not None and v.const.size == 1]
        if node.op_type == "Div" and len(consts) == 1 and consts[0] is ins[1]:
            value = float(ins[1].const.reshape(-1)[0])
            return 1.0 / value if value != 0.0 and math.isfinite(value) else None
        if node.op_type == "Mul" and len(consts) == 1:
            value = float(consts[0].const.reshape(-1)[0])
            return value if math.isfinite(value) else None
        return None

    def _fused_after(self, node: Node, ys) -> Node | None:
        """The FusedElementwise right after a matrix product that reads the product alone
        (and is its only reader): BERT's GELU after the first feed-forward layer. Its body
        then runs inside the product's epilogue, one launch and one pass fewer."""
        i = self._order[id(node)] + 1
        nxt = self.graph.nodes[i] if i < len(self.graph.nodes) else None
        out = node.outputs[0]
        if nxt is None or nxt.op_type != "FusedElementwise" or id(out) in self.out_index:
            return None
        if self._readers.get(id(out)) != [nxt] or len(nxt.inputs) != 1 or len(nxt.outputs) != 1:
            return None
        body = nxt.attrs.get("body")
        body = getattr(body, "value", None)
        try:
            if body is None or _tensor_info(nxt.outputs[0])[1] != tuple(ys) or not _scalar_body(body):
                return None
            if _tensor_info(nxt.outputs[0])[0] not in ("f32", "f16", "bf16"):
                return None
        except Exception:  # unknown types: the chain runs as planned
            return None
        return nxt

    def _operand(self, v, trans: bool) -> tuple[TensorRef, bool, int, int] | None:
        """A matrix-product operand as cuBLAS reads it: (memory, transposed, leading
        dimension, batch stride), for a tensor of its own or a deferred Transpose's source
        (None where the permutation leaves no unit stride in the matrix or the batch dims
        do not step evenly)."""
        view = self._view(v)
        if view is None:
            r = self.ref(v)
            return r, trans, r.shape[-1], r.shape[-1] * r.shape[-2]
        src, shape, strides = view
        rows, cols = strides[-2], strides[-1]
        if cols == 1 and rows >= shape[-1]:
            ld, flipped = rows, False
        elif rows == 1 and cols >= shape[-2]:
            ld, flipped = cols, True
        else:
            return None
        step = _batch_stride(shape[:-2], strides[:-2])
        if step is None:
            return None
        return src, trans != flipped, ld, step

    def _materialized(self, v):
        """``v`` after its deferred Transpose has run (``ref`` runs it)."""
        self.ref(v)
        return v

    def _gemm_output(self, node: Node, m: int, n: int, ys, reads) -> tuple[TensorRef, int, int, Node | None]:
        """Where a matrix product writes: (memory, leading dimension, batch stride, the
        Transpose it stands for or None). A product read only by a Transpose right after it
        (attention's head merge) writes the permuted tensor itself, where the Transpose's
        output was planned, when that place is apart from the product's operands and the
        permutation keeps the product's rows in unit steps."""
        out = node.outputs[0]
        plain = (self.out_ref(out), n, m * n, None)
        if node.op_type != "MatMul" or id(out) in self.out_index:
            return plain
        i = self._order[id(node)] + 1
        after = self.graph.nodes[i] if i < len(self.graph.nodes) else None
        if after is None or after.domain or self._readers.get(id(out)) != [after]:
            return plain
        if after.op_type in ("Div", "Mul") and self._scale_of(after) is not None:
            target = self.out_ref(after.outputs[0])  # the scaled product, alpha doing the scaling
            if _tensor_info(after.outputs[0]) != _tensor_info(out) or any(_overlaps(target, r) for r in reads):
                return plain
            self._absorbed.add(id(after))
            return target, n, m * n, after
        if after.op_type != "Transpose":
            return plain
        attrs = lookup(after.op_type, after.domain, self.opset).resolve_attrs(after)
        rank = len(ys)
        perm = list(range(rank))[::-1] if attrs.perm is None else [int(p) % rank for p in attrs.perm]
        if sorted(perm) != list(range(rank)):
            return plain
        target = self.out_ref(after.outputs[0])
        placed = row_major_strides(target.shape)
        strides = [0] * rank
        for j, d in enumerate(perm):
            strides[d] = placed[j]  # where dim d of the product steps in the Transpose's output
        step = _batch_stride(list(ys[:-2]), strides[:-2])
        if strides[-1] != 1 or strides[-2] < n or step is None or any(_overlaps(target, r) for r in reads):
            return plain
        self._absorbed.add(id(after))
        return target, strides[-2], step, after

    # epilogue ------------------------------------------------------------------
    def _epilogue(self, node: Node, shape, src: TensorRef, dst: TensorRef, extras, act: str, params: list[float], body=None) -> None:
        """``dst = act(src + sum(scale * extra))`` over ``shape`` (extras broadcast by their
        strides), then the FusedElementwise ``body`` where one was merged in (``_fused_after``)."""
        kb = KernelBuilder("epilogue")
        total = prod(shape)
        x0 = kb.buffer("x0", src.dtype, total)
        y0 = kb.buffer("y0", dst.dtype, total, writable=True)
        refs = {"x0": src, "y0": dst}
        bufs = []
        for j, (r, _, _) in enumerate(extras):
            bufs.append(kb.buffer(f"x{j + 1}", r.dtype, prod(r.shape)))
            refs[f"x{j + 1}"] = r
        with kb.loop(total, kind="parallel", hint="e") as i:
            v: Expr = x0[i]
            for (_, strides, scale), buf in zip(extras, bufs):
                term = buf[_broadcast_index(i, shape, strides)]
                v = v + (term * scale if scale != 1.0 else term)
            v = activation(kb, kb.let(v, "v"), act, params)
            if body is not None:
                (v,) = fused_values(kb, body, [kb.let(v, "v")], self.opset)
            y0[i] = v
        self.kernel_call(kb, refs, node, "epilogue")


def _lt_epilogue(call: GemmCall, in_place: bool, extras, act: str, ys) -> dict | None:
    """What cuBLASLt can do of a product's epilogue kernel, or None: a bias along the
    product's columns (one per output feature: cuBLAS's column-major D is our C^T, so that
    is its BIAS epilogue, a vector along D's rows), a residual of the output's own shape
    (cuBLASLt's C with beta), ReLU. One product (no batch), written in place. The kernel
    stays in the plan: the runtime skips it only where cuBLASLt took the epilogue."""
    if call.batch != 1 or not in_place or act not in ("", "Relu"):
        return None
    out = call.args[2]
    bias = resid = None
    beta = 0.0
    per_column = [0] * (len(ys) - 1) + [1]
    for ref, strides, scale in extras:
        if ref.dtype != out.dtype:
            return None
        steps = [st if d != 1 else 0 for st, d in zip(strides, ys)]  # a dim of one never steps
        if bias is None and scale == 1.0 and prod(ref.shape) == call.n and steps == per_column:
            bias = ref
        elif resid is None and tuple(ref.shape) == tuple(ys):
            resid, beta = ref, float(scale)
        else:
            return None
    if bias is None and resid is None and not act:
        return None
    return {"bias": bias, "residual": resid, "beta": beta, "relu": act == "Relu"}


def _same_place(a: TensorRef, b: TensorRef) -> bool:
    """Whether two refs start at the same byte (an elementwise pass may read and write it)."""
    return (a.kind, a.index, a.offset) == (b.kind, b.index, b.offset)


def _scalar_body(body: Graph) -> bool:
    """Whether a FusedElementwise body is scalar ops on its inputs and one-element
    constants only (what ``fused_values`` evaluates)."""
    known = {id(v) for v in body.inputs}
    for n in body.nodes:
        if n.op_type not in SCALAR_OPS or len(n.outputs) != 1:
            return False
        for v in n.inputs:
            if v is not None and id(v) not in known and (v.const is None or v.const.size != 1):
                return False
        known.add(id(n.outputs[0]))
    return len(body.outputs) == 1


def _readers(graph: Graph) -> dict[int, list[Node]]:
    """id(tensor) -> the nodes reading it, in order."""
    readers: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            if v is not None:
                readers.setdefault(id(v), []).append(n)
    return readers


def _batch_stride(shape, strides) -> int | None:
    """The one stride that steps through batch dims ``shape`` (element ``b`` of the flat
    batch at ``b * stride``), or None when they do not step evenly. Dims of one element
    do not count; no batch at all steps by 0."""
    kept = [(d, st) for d, st in zip(shape, strides) if d != 1]
    if not kept:
        return 0
    for (_, outer), (d, inner) in zip(kept, kept[1:]):
        if outer != inner * d:
            return None
    return kept[-1][1]


def _row_casts(graph: Graph, readers: dict[int, list[Node]]) -> tuple[dict[int, Node], dict[int, Node]]:
    """The Casts a row kernel may do itself: {id(widening Cast): the row node right after
    it} and {id(row node): the narrowing Cast right after it}. Each pairing needs the two
    nodes adjacent in the lowering order (so no other kernel runs between them), the
    tensor between them read by the second alone and not a graph output."""
    nodes = graph.nodes
    outputs = {id(v) for v in graph.outputs}

    def sole_link(first: Node, second: Node) -> bool:
        v = first.outputs[0]
        return bool(second.inputs) and second.inputs[0] is v and readers.get(id(v)) == [second] and id(v) not in outputs

    def cast(node: Node, src: tuple[str, ...], dst: tuple[str, ...]) -> bool:
        if node.op_type != "Cast" or node.domain or len(node.inputs) != 1 or len(node.outputs) != 1:
            return False
        try:
            return _tensor_info(node.inputs[0])[0] in src and _tensor_info(node.outputs[0])[0] in dst
        except Exception:  # unknown types: leave the pair to the planned lowering
            return False

    casts_in: dict[int, Node] = {}
    casts_out: dict[int, Node] = {}
    for i, node in enumerate(nodes):
        if node.op_type not in ROW_OPS or node.domain or any(v is not None and v.name for v in node.outputs[1:]):
            continue
        before = nodes[i - 1] if i else None
        if before is not None and cast(before, NARROW_FLOATS, ("f32",)) and sole_link(before, node):
            casts_in[id(before)] = node
        after = nodes[i + 1] if i + 1 < len(nodes) else None
        if after is not None and cast(after, ("f32",), NARROW_FLOATS) and sole_link(node, after):
            casts_out[id(node)] = after
    return casts_in, casts_out


def _in_range(v: Expr, n: int) -> Expr:
    return logical_and(v >= 0, v < n)


def _tap_source(kb: KernelBuilder, geo, plane: Expr, p: Expr, t: Expr | int) -> tuple[Expr, Expr]:
    """Where kernel tap ``t`` of output position ``p`` reads input ``plane`` (an image's
    channel): the flat input index and whether it lies inside the input (else padding)."""
    (d_, h_, w_), (_, kh, kw) = geo.size, geo.kernel
    (_, oh, ow), (sd, sh, sw) = geo.out, geo.strides
    (dd, dh, dw), (bd, bh, bw) = geo.dilations, geo.begin
    tz, ty, tx = t // (kh * kw), (t // kw) % kh, t % kw
    pz, py, px = p // (oh * ow), (p // ow) % oh, p % ow
    iz = kb.let(pz * sd + (tz * dd - bd), "iz")
    iy = kb.let(py * sh + (ty * dh - bh), "iy")
    ix = kb.let(px * sw + (tx * dw - bw), "ix")
    inside = logical_and(logical_and(_in_range(iz, d_), _in_range(iy, h_)), _in_range(ix, w_))
    return (plane * d_ + iz) * (h_ * w_) + iy * w_ + ix, inside


def _broadcast_index(i: Expr, shape, strides: list[int]) -> Expr:
    """The element of an operand with ``strides`` (0 where broadcast) at flat output ``i``."""
    shape = list(shape)
    out: Expr | None = None
    inner = 1
    for d in range(len(shape) - 1, -1, -1):
        if strides[d] and shape[d] != 1:
            q = i if inner == 1 else i // idx(inner)
            if d:
                q = q % idx(shape[d])
            term = q * idx(strides[d]) if strides[d] != 1 else q
            out = term if out is None else out + term
        inner *= shape[d]
    return out if out is not None else idx(0)


def build_cuda_program(graph: Graph) -> Program:
    """Lower the optimized ``graph`` (memory plan attached) for the GPU."""
    from torsh_gen.ops.inference import infer_types

    infer_types(graph)
    check_lowerable(graph)
    return _GpuBuilder(graph).build()
