"""PyTorch frontend: modules, ``.pt2`` programs, TorchScript ``.pt`` files and checkpoints → IR.

Everything goes through ``torch.export`` and the core ATen op set, lowered to IR ops by
torsh-gen itself (never ``torch.onnx``). Torch is imported only when a function runs, so
importing this package costs nothing when the ``torch`` extra is missing.
"""

from __future__ import annotations

from torsh_gen.frontends.torch.checkpoint import load_checkpoint, refuse_bare_checkpoint
from torsh_gen.frontends.torch.export import from_exported, from_torch, load_pt2
from torsh_gen.frontends.torch.torchscript import load_torchscript

__all__ = [
    "from_exported",
    "from_torch",
    "load_checkpoint",
    "load_pt2",
    "load_torchscript",
    "refuse_bare_checkpoint",
]
