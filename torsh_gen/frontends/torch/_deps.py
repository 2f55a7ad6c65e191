"""The optional PyTorch dependency: one place that imports it and says how to install it."""

from __future__ import annotations

from types import ModuleType

from torsh_gen.errors import InputError

INSTALL_HINT = "pip install 'torsh-gen[torch]'"


def require_torch() -> ModuleType:
    """Import torch, or raise one line naming the extra that installs it."""
    try:
        import torch
    except ImportError:
        raise InputError(f"PyTorch is not installed; run: {INSTALL_HINT}") from None
    if not hasattr(torch, "export") or not hasattr(torch.export, "export"):
        raise InputError(
            f"PyTorch {torch.__version__} has no torch.export; torsh-gen needs PyTorch 2.x "
            f"with torch.export ({INSTALL_HINT})"
        )
    return torch
