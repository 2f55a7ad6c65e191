"""Pruning: zero small weights (magnitude) or remove whole channels (structured).

These are graph helpers with parameters rather than registered ``(Graph) -> bool``
passes, since every call needs a sparsity, a scope and a node filter; ``torsh-gen prune``
(``tools/prune.py``) calls them and measures what they cost.

- :func:`magnitude_prune` zeroes the smallest-magnitude entries of the constant weights
  of Conv, Gemm and MatMul nodes, per layer or with one threshold for all of them.
- :func:`find_channel_groups` finds the channels that can be removed as a unit, and
  :func:`structured_prune` removes the lowest-scoring ones and shrinks every layer that
  reads them.
"""

from torsh_gen.passes.prune.channels import ChannelGroup, Consumer, find_channel_groups
from torsh_gen.passes.prune.magnitude import (
    LayerSparsity,
    NodeFilter,
    magnitude_prune,
    prunable_weights,
)
from torsh_gen.passes.prune.structured import GroupResult, channel_scores, structured_prune

__all__ = [
    "ChannelGroup",
    "Consumer",
    "GroupResult",
    "LayerSparsity",
    "NodeFilter",
    "channel_scores",
    "find_channel_groups",
    "magnitude_prune",
    "prunable_weights",
    "structured_prune",
]
