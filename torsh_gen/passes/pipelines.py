"""Named pass pipelines O0..O3: the one place that orders passes.

- O0: nothing (the graph as imported).
- O1: cleanup: constant folding and dead-code elimination.
- O2: standard-op optimizations: also simplification, CSE, BatchNorm folding (the
  BatchNorms left become Mul + Add) and recognition of decomposed Softmax/LayerNorm/GELU
  as their ONNX ops. The output is plain ONNX that any runtime executes.
- O3: O2 plus fusion into ``ai.torsh`` kernels (conv/GEMM epilogues, elementwise chains);
  what ``compile`` uses. ``optimize`` keeps those only when asked for custom ops.
"""

from __future__ import annotations

from collections.abc import Sequence

from torsh_gen.errors import InputError

PIPELINES: dict[str, list[str]] = {
    "O0": [],
    "O1": ["fold_constants", "eliminate_dead_code"],
    "O2": [
        "fold_constants",
        "simplify",
        "eliminate_common_subexpressions",
        "fold_batchnorm",
        "batchnorm_to_affine",
        "recognize_patterns",
        "fold_constants",
        "simplify",
        "eliminate_dead_code",
    ],
}
PIPELINES["O3"] = ["fuse_quant"] + PIPELINES["O2"] + ["fuse_epilogues", "fuse_elementwise", "eliminate_dead_code"]


def pipeline(level: str = "O2", passes: Sequence[str] | None = None) -> list[str]:
    """The pass names for ``level``, or the explicit ``passes`` list when given."""
    from torsh_gen.passes.manager import get_pass

    if passes:
        names = [p.strip() for p in passes if p.strip()]
        for name in names:
            get_pass(name)  # raises with the list of known passes
        return names
    try:
        return list(PIPELINES[level.upper()])
    except KeyError:
        raise InputError(f"unknown optimization level '{level}'; use one of {', '.join(PIPELINES)}") from None
