"""The com.example::MyGelu op spec: schema, type/shape rule, kernels.

torsh-gen imports this module through the ``torsh_gen.ops`` entry point (see
pyproject.toml) the first time it looks an op up; ``@op`` registers the spec. Edit
``attrs`` to declare the op's attributes (with their defaults) and ``infer`` to give the
output types; the kernels receive the attributes as keyword arguments.
"""

from __future__ import annotations

from typing import Any

from torsh_gen.errors import GraphError
from torsh_gen.ir.types import DType, TensorType, Type
from torsh_gen.ops.registry import FLOAT, InferContext, OpSpec, RunContext, op

from . import DOMAIN, OP_TYPE, reference

#: Element types the kernels accept.
FLOAT_TYPES = (DType.FLOAT16, DType.FLOAT, DType.DOUBLE)


@op(OP_TYPE, since=1, domain=DOMAIN)
class MyGeluOp(OpSpec):
    """One input ``x``, one output ``y`` of the same type and shape; attribute ``alpha``."""

    attrs = {"alpha": FLOAT(1.0)}
    flops_per_element = 4
    #: What compiled artifacts call instead of ``run`` (it needs no torsh-gen).
    artifact_kernel = "torsh_op_my_gelu.kernels:compute"

    def infer(self, ctx: InferContext) -> list[Type | None]:
        """The output has the input's element type and shape (an elementwise op)."""
        t = ctx.input_type(0)
        if t is None:
            return [None]
        if not isinstance(t, TensorType):
            raise GraphError(f"{OP_TYPE} takes a tensor, got {t}")
        if t.dtype not in FLOAT_TYPES and t.dtype != DType.UNDEFINED:
            raise GraphError(
                f"{OP_TYPE} takes float16, float or double tensors, got {t.dtype.name.lower()}"
            )
        return [TensorType(t.dtype, t.shape)]

    def run(self, ctx: RunContext, x: Any) -> Any:
        """The numpy reference kernel (``reference.py``)."""
        return reference.compute(x, alpha=ctx.attrs.alpha)
