"""Training configuration: defaults here, overridden by a TOML file, then by command-line flags.

Every field is a flag (``lr`` → ``--lr``, ``grad_accum`` → ``--grad-accum``); ``--config``
names the TOML file (default ``config.toml`` when it exists), whose ``[train]`` table uses
the field names.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

CHOICES = {
    "loss": ("cross_entropy", "mse"),
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("constant", "step", "cosine", "one_cycle"),
    "precision": ("fp32", "bf16", "fp16"),
    "init": ("pretrained", "random"),
}


@dataclass
class Config:
    """Everything a run needs; ``asdict`` of it is stored in checkpoints and logs."""

    data: str = ""  # training data: .npz, .csv, or a folder with one sub-folder of images per class
    val_data: str = ""  # optional validation data, same formats
    x_key: str = "x"  # npz: the inputs array (models with several inputs: one array per input name)
    y_key: str = "y"  # npz: the targets array
    target_column: int = -1  # csv: the column holding targets; the others are features
    workers: int = 2  # DataLoader worker processes
    batch_size: int = 32  # per process
    steps: int = 1000  # optimizer steps
    grad_accum: int = 1  # micro-batches per optimizer step
    loss: str = "cross_entropy"
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9  # sgd momentum
    schedule: str = "cosine"
    warmup_steps: int = 0  # linear warm-up before step/cosine/constant schedules
    step_size: int = 1000  # step schedule: decay every step_size steps
    gamma: float = 0.1  # step schedule: decay factor
    clip_grad_norm: float = 1.0  # 0 disables clipping
    precision: str = "fp32"  # bf16/fp16 run forward passes under torch.autocast
    init: str = "pretrained"  # start from the source model's weights, or re-initialize layers
    qat: bool = False  # quantization-aware training with torch.ao fake-quant
    seed: int = 0
    out_dir: str = "runs/default"
    log_every: int = 10
    checkpoint_every: int = 100
    resume: str = ""  # a checkpoint file, or "auto" for OUT_DIR/checkpoints/last.pt when present
    export_onnx: bool = True  # write OUT_DIR/model.onnx at the end
    mlflow: bool = False  # also log to MLflow (needs mlflow installed)
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...


def parser() -> argparse.ArgumentParser:
    """The command-line parser: ``--config`` plus one flag per Config field."""
    p = argparse.ArgumentParser(description="Train the tiny_cnn model.")
    p.add_argument(
        "--config", help="TOML file with a [train] table (default: config.toml if present)"
    )
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=None, choices=CHOICES.get(f.name))
    return p


def load_config(argv: list[str] | None = None) -> Config:
    """Defaults, then the TOML file, then flags; unknown keys and bad choices are errors."""
    args = parser().parse_args(argv)
    values: dict[str, object] = {}
    path = Path(args.config) if args.config else Path("config.toml")
    if args.config or path.is_file():
        table = tomllib.loads(path.read_text()).get("train", {})
        known = {f.name for f in fields(Config)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise SystemExit(f"{path}: unknown keys in [train]: {', '.join(unknown)}")
        values.update(table)
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    cfg = dataclasses.replace(Config(), **values)
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise SystemExit(
                f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}"
            )
    if cfg.qat and cfg.precision != "fp32":
        raise SystemExit("--qat trains with float32 fake-quant; use --precision fp32 with it")
    if not cfg.data:
        raise SystemExit("no training data: pass --data PATH (.npz, .csv or an image folder)")
    return cfg
