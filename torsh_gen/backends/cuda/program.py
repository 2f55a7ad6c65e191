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
from torsh_gen.backends.cuda.rewrites import (
    GEMM_DTYPES,
    PlanRewrites,
    lt_epilogue,
    overlaps,
    same_place,
)
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
from torsh_gen.backends.kernel.lower.scalar_ops import activation
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
    #: (``rewrites.lt_epilogue``): bias, residual (as C with beta) and ReLU; None: no such offer
    lt: dict | None = field(default=None, repr=False)

    @property
    def dtype(self) -> str:
        """The storage type of the three matrices."""
        return self.args[2].dtype


class _GpuBuilder(PlanRewrites, _Builder):
    """The native program builder with matrix products routed to cuBLAS and the launches
    ``rewrites.py`` leaves out."""

    def __init__(self, graph: Graph, store: WeightStore | None = None) -> None:
        super().__init__(graph, GPU_SCHEDULE, store)
        self._scratch_at = 0  # scratch used by the node being built
        self._init_rewrites(graph)

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

    # memory ------------------------------------------------------------------
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
        c = self.scratch(yd, prod(ys)) if any(overlaps(r, yr) for r in reads) else yr
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
        perm = self.transpose_perm(node, len(_tensor_info(node.inputs[0])[1]))
        if perm is None:
            return False
        if self._defer_transpose(node, perm):
            return True
        return self._transpose_kernel(node, perm)

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
        c = self.scratch(yd, prod(ys)) if any(overlaps(r, yr) for r in reads) else yr
        call = GemmCall(
            [ar, br, c], n=n, k=k, trans_a=ta, trans_b=tb, lda=lda, ldb=ldb, ldc=ldc if c is yr else n,
            alpha=alpha, node=node.name, op_type=node.op_type, **geom,
        )
        self.program.calls.append(call)
        if chain is not None:
            target = self.out_ref(chain.outputs[0])
            if any(overlaps(target, e[0]) for e in extras) or (overlaps(target, c) and not same_place(target, c)):
                chain = None
        if chain is not None:  # the epilogue applies the chain too and writes its output
            self._absorbed.add(id(chain))
            self._epilogue(node, ys, c, target, extras, act, params, chain.attrs["body"].value)
            self.refs[id(chain.outputs[0])] = target
            return True
        if extras or act or c is not yr:
            self._epilogue(node, ys, c, yr, extras, act, params)
            offer = lt_epilogue(call, c is yr, extras, act, ys)
            if offer is not None:
                call.lt = {**offer, "epilogue": self.program.calls[-1]}
        self.refs[id((after or node).outputs[0])] = yr
        return True

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
