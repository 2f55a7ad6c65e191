"""The training loop: ``python train.py [--config config.toml] [--flags]``, or under torchrun.

One optimizer step consumes ``grad_accum`` micro-batches; gradients are clipped, the LR
schedule advances, metrics go to ``OUT_DIR/metrics.jsonl``, TensorBoard and (optionally)
MLflow, checkpoints to ``OUT_DIR/checkpoints``. Under ``torchrun`` the model runs in
DistributedDataParallel (gloo on CPU, nccl on GPU) and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tiny_cnn.checkpoint import Progress, load_checkpoint, resolve_resume, save_checkpoint
from tiny_cnn.config import Config, load_config
from tiny_cnn.data import ResumableSampler, build_dataset, build_loader
from tiny_cnn.model import Model, load_pretrained


def setup_distributed(cfg: Config) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def build_model(cfg: Config) -> Model:
    """The model with the source weights (or re-initialized layers), prepared for QAT if asked."""
    model = load_pretrained(output_logits=True)
    if cfg.init == "random":
        for module in model.modules():
            if module is not model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    if cfg.qat:
        from torch.ao.quantization import get_default_qat_qconfig, prepare_qat

        # version 0: plain FakeQuantize modules, which torch.onnx exports as Q/DQ pairs
        qconfig = get_default_qat_qconfig("x86", version=0)
        # exact types: nn.MultiheadAttention's out_proj (a Linear subclass) has no QAT form
        quantized = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
        for module in model.modules():
            module.qconfig = qconfig if type(module) in quantized else None
        model.train()
        model = prepare_qat(model)
    return model


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config
) -> torch.optim.lr_scheduler.LRScheduler:
    """The LR schedule per optimizer step: optional linear warm-up, then step/cosine/constant,
    or one-cycle (which has its own warm-up)."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "one_cycle":
        pct = min(max(cfg.warmup_steps / cfg.steps, 0.01), 0.99) if cfg.warmup_steps else 0.3
        return sched.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=pct)
    rest = max(cfg.steps - cfg.warmup_steps, 1)
    if cfg.schedule == "step":
        main = sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    elif cfg.schedule == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=rest)
    else:
        main = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.warmup_steps <= 0:
        return main
    warm = sched.LinearLR(
        optimizer, start_factor=1.0 / (cfg.warmup_steps + 1), total_iters=cfg.warmup_steps
    )
    return sched.SequentialLR(optimizer, [warm, main], milestones=[cfg.warmup_steps])


def compute_loss(output: torch.Tensor, target: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Cross-entropy over the last dim (any leading dims), or mean squared error."""
    output = output[0] if isinstance(output, tuple) else output
    if cfg.loss == "cross_entropy":
        return F.cross_entropy(output.reshape(-1, output.shape[-1]).float(), target.reshape(-1))
    return F.mse_loss(output.float(), target.reshape(output.shape).float())


class Logger:
    """Metrics to stdout, OUT_DIR/metrics.jsonl, TensorBoard and MLflow (rank 0 only)."""

    def __init__(self, cfg: Config, out_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.tb = None
        self.mlflow = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(out_dir / "metrics.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            print("tensorboard is not installed; skipping TensorBoard logs")
        if cfg.mlflow:
            try:
                import mlflow
            except ImportError:
                print("mlflow is not installed (pip install mlflow); skipping MLflow tracking")
            else:
                self.mlflow = mlflow
                mlflow.start_run()
                mlflow.log_params(dataclasses.asdict(cfg))

    def log(self, step: int, **metrics: float) -> None:
        """Record ``metrics`` at ``step``."""
        if not self.enabled:
            return
        line = json.dumps({"step": step, **metrics})
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()
        for key, value in metrics.items():
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
            if self.mlflow is not None:
                self.mlflow.log_metric(key, value, step=step)

    def close(self) -> None:
        """Flush and close every sink."""
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run()


@torch.no_grad()
def evaluate(model: nn.Module, loader, cfg: Config, device: torch.device) -> dict[str, float]:
    """Mean loss (and accuracy for cross-entropy) over a validation loader."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    for inputs, target in loader:
        inputs = tuple(x.to(device) for x in inputs)
        target = target.to(device)
        output = model(*inputs)
        output = output[0] if isinstance(output, tuple) else output
        total += compute_loss(output, target, cfg).item() * len(target)
        if cfg.loss == "cross_entropy":
            correct += (output.argmax(-1).reshape(-1) == target.reshape(-1)).sum().item()
        count += len(target)
    model.train()
    metrics = {"val_loss": total / max(count, 1)}
    if cfg.loss == "cross_entropy":
        metrics["val_accuracy"] = correct / max(count, 1)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Train as configured; returns 0 when done."""
    cfg = load_config(argv)
    rank, world, device = setup_distributed(cfg)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    progress = Progress()
    resume = resolve_resume(cfg.resume, out_dir)
    if resume is not None:
        progress = load_checkpoint(resume, model, optimizer, scheduler, scaler)
    dataset = build_dataset(cfg.data, cfg)
    sampler = ResumableSampler(len(dataset), cfg.seed, rank, world)
    loader = build_loader(dataset, sampler, cfg, device)
    val_loader = None
    if cfg.val_data and rank == 0:
        val_set = build_dataset(cfg.val_data, cfg)
        val_loader = build_loader(
            val_set, ResumableSampler(len(val_set), 0, shuffle=False), cfg, device
        )
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    logger = Logger(cfg, out_dir, enabled=rank == 0)
    if rank == 0 and resume is not None:
        print(f"resumed from {resume} at step {progress.step}")
    model.train()
    started = time.perf_counter()
    while progress.step < cfg.steps:
        sampler.set_epoch(progress.epoch, skip=progress.batch_in_epoch * cfg.batch_size)
        optimizer.zero_grad(set_to_none=True)  # an epoch's leftover micro-batches are dropped
        micro, step_loss = 0, 0.0
        for inputs, target in loader:
            inputs = tuple(x.to(device, non_blocking=True) for x in inputs)
            target = target.to(device, non_blocking=True)
            micro += 1
            last_micro = micro == cfg.grad_accum
            sync = contextlib.nullcontext() if last_micro or world == 1 else net.no_sync()
            with sync:
                with torch.autocast(
                    device.type,
                    dtype=autocast_dtype or torch.float32,
                    enabled=autocast_dtype is not None,
                ):
                    loss = compute_loss(net(*inputs), target, cfg) / cfg.grad_accum
                scaler.scale(loss).backward()
            step_loss += loss.item()
            progress.batch_in_epoch += 1
            if not last_micro:
                continue
            scaler.unscale_(optimizer)
            grad_norm = nn.utils.clip_grad_norm_(
                model.parameters(), cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else math.inf
            )
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            progress.step += 1
            micro = 0
            if world > 1:
                import torch.distributed as dist

                mean = torch.tensor([step_loss], device=device)
                dist.all_reduce(mean)
                step_loss = mean.item() / world
            if progress.step % cfg.log_every == 0 or progress.step == cfg.steps:
                logger.log(
                    progress.step,
                    loss=step_loss,
                    lr=lr,
                    grad_norm=float(grad_norm),
                    world_size=world,
                )
            step_loss = 0.0
            if rank == 0 and (
                progress.step % cfg.checkpoint_every == 0 or progress.step == cfg.steps
            ):
                path = out_dir / "checkpoints" / f"step_{progress.step}.pt"
                save_checkpoint(
                    path, model, optimizer, scheduler, scaler, progress, dataclasses.asdict(cfg)
                )
                shutil.copyfile(path, out_dir / "checkpoints" / "last.pt")
            if progress.step >= cfg.steps:
                break
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    if val_loader is not None:
        logger.log(progress.step, **evaluate(model, val_loader, cfg, device))
    if rank == 0:
        print(
            f"trained {progress.step} steps in {time.perf_counter() - started:.1f} s; outputs in {out_dir}"
        )
        finish(model, cfg, out_dir)
    logger.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


def finish(model: Model, cfg: Config, out_dir: Path) -> None:
    """Save the trained weights and export ONNX (QAT models keep their fake-quant nodes)."""
    from safetensors.torch import save_file

    if not cfg.qat:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            str(out_dir / "weights.safetensors"),
        )
    if cfg.export_onnx:
        from tiny_cnn.export import export_onnx

        print(f"exported {export_onnx(model.cpu(), out_dir / 'model.onnx')}")
