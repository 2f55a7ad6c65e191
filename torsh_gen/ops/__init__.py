"""The op registry. Importing this package registers every op family."""

from torsh_gen.ops import (  # noqa: F401  (imported for their registrations)
    activation,
    attention,
    control,
    elementwise,
    fused,
    image,
    indexing,
    linalg,
    losses,
    ml,
    nn,
    normalization,
    pooling,
    quant,
    reduce,
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

__all__ = ["OpSpec", "is_supported", "lookup", "op", "registered_ops"]
