"""The op registry. Importing this package registers every op family."""

from torsh_gen.ops import (  # noqa: F401  (imported for their registrations)
    activation,
    attention,
    control,
    elementwise,
    fused,
    fused_quant,
    image,
    indexing,
    linalg,
    losses,
    ml,
    nn,
    normalization,
    plugins,
    pooling,
    quant,
    reduce,
    registry,
    rnn,
    sampling,
    sequence,
    spectral,
    stochastic,
    tensor,
    tensor_layout,
    text,
    training,
)
from torsh_gen.ops.registry import OpSpec, is_supported, lookup, op, registered_ops

registry.plugin_loader = plugins.load_plugins  # entry-point plugins load on the first lookup

__all__ = ["OpSpec", "is_supported", "lookup", "op", "registered_ops"]
