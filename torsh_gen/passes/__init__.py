"""Optimization passes: plain ``(Graph) -> bool`` functions, and the pipelines that order them."""

from torsh_gen.passes import (  # noqa: F401  (imported for their registrations)
    bn_fold,
    cse,
    dce,
    fold,
    fuse_elementwise,
    fuse_epilogues,
    fuse_quant,
    memplan,
    patterns,
    precision,
    simplify,
)
from torsh_gen.passes.manager import (
    PassReport,
    register_pass,
    registered_passes,
    run_measured,
    run_passes,
)
from torsh_gen.passes.pipelines import PIPELINES, pipeline

__all__ = ["PIPELINES", "PassReport", "pipeline", "register_pass", "registered_passes", "run_measured", "run_passes"]
