"""The optional PyTorch dependency: one place that imports it and says how to install it."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
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


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence torch's warnings, logs and stderr prints: its failures become our one line."""
    previous = logging.root.manager.disable  # torch sets levels per logger: disable them all
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
