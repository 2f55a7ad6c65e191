"""Checkpoints: model, optimizer, scheduler, grad scaler, position in the data and RNG state.

Files are written to a temporary name and renamed, so a crash never leaves a torn
checkpoint, and read with ``torch.load(weights_only=True)``: only tensors and plain data.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class Progress:
    """Where training stands: optimizer steps done, epoch, micro-batches used in the epoch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    scaler,
    progress: Progress,
    config: dict[str, Any],
) -> None:
    """Write everything a resumed run needs to ``path`` (atomically)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "progress": [progress.step, progress.epoch, progress.batch_in_epoch],
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
        },
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, scaler) -> Progress:
    """Restore a checkpoint written by ``save_checkpoint``; returns the saved progress."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    return Progress(*state["progress"])


def resolve_resume(resume: str, out_dir: Path) -> Path | None:
    """The checkpoint to resume from: a path, or ``auto`` for the latest in ``out_dir``."""
    if not resume:
        return None
    if resume == "auto":
        last = out_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise SystemExit(f"--resume {resume}: no such checkpoint")
    return path
