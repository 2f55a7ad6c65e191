"""Launches a CUDA plan leaves out: what the GPU program builder (``program.py``) fuses or
skips beyond one kernel per node.

- a Cast from or to a 16-bit float around Softmax/LogSoftmax/LayerNormalization is done by
  the row kernel (``_row_io``);
- a Transpose read only by matrix products is read in place by cuBLAS through leading
  dimensions and batch strides (``_defer_transpose``, ``_operand``), and a product read
  only by the Transpose after it writes the permuted tensor (``_gemm_output``);
- a product's Div/Mul by a constant is its alpha, a FusedElementwise reading only a
  product runs in the product's epilogue (``_fused_after``), and cuBLASLt may run the
  epilogue itself (``lt_epilogue``);
- a convolution read only by a 3x3 convolution leaves its epilogue to that convolution's
  im2col (``_im2col_reader``).

Each is taken only where the memory plan, made for the graph as it is, keeps the tensors
involved apart; ``PlanRewrites`` holds the decisions, mixed into the builder.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.lower import prod, row_major_strides
from torsh_gen.backends.kernel.lower.conv_operands import conv_geometry
from torsh_gen.backends.kernel.lower.scalar_ops import SCALAR_OPS
from torsh_gen.backends.kernel.program import TensorRef, _tensor_info
from torsh_gen.ir.graph import Graph, Node
from torsh_gen.ops.registry import lookup

if TYPE_CHECKING:
    from torsh_gen.backends.cuda.program import GemmCall

#: Storage types cuBLAS multiplies (float32 accumulation).
GEMM_DTYPES = ("f32", "f16", "bf16")
#: Row reductions whose kernels compute in float32 whatever they read and write, so a Cast
#: from a 16-bit float just before one, or to one just after, can be left to the kernel.
ROW_OPS = ("LayerNormalization", "Softmax", "LogSoftmax")
NARROW_FLOATS = ("f16", "bf16")


class PlanRewrites:
    """The builder's decisions on what to leave out (mixed into ``_GpuBuilder``, before
    the native builder, whose ``node`` and ``ref`` these methods call through ``super``)."""

    def _init_rewrites(self, graph: Graph) -> None:
        self._readers = _readers(graph)
        self._order = {id(n): i for i, n in enumerate(graph.nodes)}
        self._casts_in, self._casts_out = _row_casts(graph, self._readers)
        self._views: dict[int, tuple[Node, TensorRef, list[int]]] = {}  # deferred Transposes
        self._raw: dict[int, tuple] = {}  # convolution outputs whose epilogue the next im2col does
        self._held: Node | None = None  # a widening Cast waiting for the row node after it
        self._absorbed: set[int] = set()  # nodes a kernel before them already computed

    def _next(self, node: Node) -> Node | None:
        """The node lowered right after ``node``, or None for the last."""
        i = self._order[id(node)] + 1
        return self.graph.nodes[i] if i < len(self.graph.nodes) else None

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
            if (use_in or use_out) and (overlaps(x, y) or (use_out and any(overlaps(y, r) for r in params))):
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
        return self.slot_ref(v, dtype, shape) if v.name else None

    def _untouched(self, src: TensorRef, after: Node, until: int) -> bool:
        """Whether no node after ``after`` up to node index ``until`` writes where ``src``
        lies (the plan let them: it thinks ``src`` dead once ``after`` has read it)."""
        nodes = self.graph.nodes
        for i in range(self._order[id(after)] + 1, until + 1):
            for v in nodes[i].outputs:
                at = self._planned(v) if v is not None and v.name else None
                if at is not None and overlaps(at, src):
                    return False
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

    def transpose_perm(self, node: Node, rank: int) -> list[int] | None:
        """A Transpose's permutation of ``rank`` axes (reversed when not given), or None
        when it is not one."""
        attrs = lookup(node.op_type, node.domain, self.opset).resolve_attrs(node)
        perm = list(range(rank))[::-1] if attrs.perm is None else [int(p) % rank for p in attrs.perm]
        return perm if sorted(perm) == list(range(rank)) else None

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
        nxt = self._next(node)
        out = node.outputs[0]
        if nxt is None or nxt.op_type != "FusedElementwise" or id(out) in self.out_index:
            return None
        if self._readers.get(id(out)) != [nxt] or len(nxt.inputs) != 1 or len(nxt.outputs) != 1:
            return None
        body = nxt.attrs.get("body")
        body = getattr(body, "value", None)
        try:
            dtype, shape = _tensor_info(nxt.outputs[0])
        except Exception:  # unknown types: the chain runs as planned
            return None
        if body is None or shape != tuple(ys) or dtype not in ("f32", "f16", "bf16") or not _scalar_body(body):
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
        after = self._next(node)
        if after is None or after.domain or self._readers.get(id(out)) != [after]:
            return plain
        if after.op_type in ("Div", "Mul") and self._scale_of(after) is not None:
            target = self.out_ref(after.outputs[0])  # the scaled product, alpha doing the scaling
            if _tensor_info(after.outputs[0]) != _tensor_info(out) or any(overlaps(target, r) for r in reads):
                return plain
            self._absorbed.add(id(after))
            return target, n, m * n, after
        if after.op_type != "Transpose":
            return plain
        rank = len(ys)
        perm = self.transpose_perm(after, rank)
        if perm is None:
            return plain
        target = self.out_ref(after.outputs[0])
        placed = row_major_strides(target.shape)
        strides = [0] * rank
        for j, d in enumerate(perm):
            strides[d] = placed[j]  # where dim d of the product steps in the Transpose's output
        step = _batch_stride(list(ys[:-2]), strides[:-2])
        if strides[-1] != 1 or strides[-2] < n or step is None or any(overlaps(target, r) for r in reads):
            return plain
        self._absorbed.add(id(after))
        return target, strides[-2], step, after


def lt_epilogue(call: GemmCall, in_place: bool, extras, act: str, ys) -> dict | None:
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


def same_place(a: TensorRef, b: TensorRef) -> bool:
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


def overlaps(a: TensorRef, b: TensorRef) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind in ("input", "output"):
        return a.index == b.index
    return a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes
