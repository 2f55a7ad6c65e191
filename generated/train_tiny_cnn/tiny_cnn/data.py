"""Training data: npz arrays, CSV tables or a folder of images, as torch datasets and loaders.

Samples are shaped like one item of the model's input (its first dim is the batch), so any
of the three formats feeds the model without code changes. ``ResumableSampler`` fixes the
order of each epoch from the seed and can skip what a resumed run already consumed; under
torchrun every process reads its own shard.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tiny_cnn.config import Config
from tiny_cnn.model import INPUTS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def sample_shapes() -> list[list[int]]:
    """Each input's per-sample shape (the dims after the batch dim; must be static)."""
    shapes = []
    for key, (_name, dims, _dtype) in INPUTS.items():
        rest = dims[1:]
        if not all(isinstance(d, int) for d in rest):
            raise SystemExit(
                f"input {key} has symbolic dims {rest}; give the data that shape exactly"
            )
        shapes.append(rest)
    return shapes


class ArrayDataset(Dataset):
    """In-memory samples: one array per model input, and the targets."""

    def __init__(self, inputs: list[np.ndarray], targets: np.ndarray, loss: str) -> None:
        n = len(targets)
        if any(len(x) != n for x in inputs):
            raise SystemExit(
                f"inputs and targets differ in length ({[len(x) for x in inputs]} vs {n})"
            )
        self.inputs = [torch.as_tensor(_as_input(x, key)) for x, key in zip(inputs, INPUTS)]
        dtype = torch.int64 if loss == "cross_entropy" else torch.float32
        self.targets = torch.as_tensor(np.asarray(targets)).to(dtype)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return tuple(x[i] for x in self.inputs), self.targets[i]


def _as_input(x: np.ndarray, key: str) -> np.ndarray:
    """``x`` reshaped to [N, *sample shape] (flat samples of a static shape are reshaped;
    symbolic dims take any size) and cast to the input's dtype."""
    _name, dims, dtype = INPUTS[key]
    shape = list(dims[1:])
    x = np.asarray(x)
    fits = x.ndim == len(dims) and all(
        isinstance(d, str) or d == n for d, n in zip(shape, x.shape[1:])
    )
    if not fits:
        static = all(isinstance(d, int) for d in shape)
        if not static or int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise SystemExit(
                f"input {key}: samples of shape {list(x.shape[1:])} do not fit {shape}"
            )
        x = x.reshape(len(x), *shape)
    return x.astype(torch.empty((), dtype=dtype).numpy().dtype, copy=False)


def load_npz(path: Path, cfg: Config) -> ArrayDataset:
    """An npz with ``x_key`` (or one array per input name) and ``y_key``."""
    with np.load(path) as z:
        if len(INPUTS) == 1 and cfg.x_key in z:
            inputs = [z[cfg.x_key]]
        else:
            missing = [k for k in INPUTS if k not in z]
            if missing:
                raise SystemExit(
                    f"{path}: needs arrays {missing} (or {cfg.x_key!r}) and {cfg.y_key!r}"
                )
            inputs = [z[k] for k in INPUTS]
        if cfg.y_key not in z:
            raise SystemExit(f"{path}: no targets array {cfg.y_key!r}; have {sorted(z.files)}")
        return ArrayDataset(inputs, z[cfg.y_key], cfg.loss)


def load_csv(path: Path, cfg: Config) -> ArrayDataset:
    """A CSV of numbers (an optional header row is skipped); ``target_column`` holds targets."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        rows = rows[1:]
    table = np.asarray(rows, dtype=np.float64)
    col = cfg.target_column % table.shape[1]
    targets = table[:, col]
    features = np.delete(table, col, axis=1)
    if len(INPUTS) != 1:
        raise SystemExit(
            "CSV data feeds single-input models only; use npz with one array per input"
        )
    return ArrayDataset([features], targets, cfg.loss)


class ImageFolder(Dataset):
    """``root/<class>/<image>`` files, resized to the model's input and scaled to [0, 1]."""

    def __init__(self, root: Path) -> None:
        (shape,) = sample_shapes() if len(INPUTS) == 1 else [[]]
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise SystemExit(
                f"image folders need a model input of shape [N, 1 or 3, H, W], not {shape}"
            )
        self.channels, self.height, self.width = shape
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [
            (f, label)
            for label, name in enumerate(self.classes)
            for f in sorted((root / name).iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.items:
            raise SystemExit(f"{root}: no images in class sub-folders")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as img:
            img = img.convert("L" if self.channels == 1 else "RGB").resize(
                (self.width, self.height)
            )
            arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[None] if self.channels == 1 else arr.transpose(2, 0, 1)
        return (torch.from_numpy(np.ascontiguousarray(arr)),), torch.tensor(label)


def build_dataset(path: str, cfg: Config) -> Dataset:
    """The dataset at ``path``, by its kind: folder, .npz or .csv."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"{p}: no such file or folder")
    if p.is_dir():
        return ImageFolder(p)
    if p.suffix == ".npz":
        return load_npz(p, cfg)
    if p.suffix == ".csv":
        return load_csv(p, cfg)
    raise SystemExit(f"{p}: use an .npz file, a .csv file or a folder of images")


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch order, sharded across processes, able to skip consumed samples."""

    def __init__(
        self, size: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True
    ) -> None:
        self.size, self.seed, self.rank, self.world, self.shuffle = size, seed, rank, world, shuffle
        self.per_rank = -(-size // world)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start ``epoch``, leaving out this process's first ``skip`` samples."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        order += order[: self.per_rank * self.world - self.size]  # equal shards
        return iter(order[self.rank :: self.world][self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


def collate(batch: list) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Stack samples into (inputs, targets)."""
    inputs = tuple(torch.stack(parts) for parts in zip(*(b[0] for b in batch)))
    return inputs, torch.stack([b[1] for b in batch])


def build_loader(
    dataset: Dataset, sampler: Sampler, cfg: Config, device: torch.device
) -> DataLoader:
    """A DataLoader with ``cfg.workers`` worker processes (pinned memory on GPU)."""
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        drop_last=False,
    )
