"""Calibration and evaluation data: read, check against the model, split into feeds.

``quantize --calib``, ``optimize --precision mixed --calib`` and ``--eval`` all take DATA
in one of these forms, and all of it is checked before any work is done (names, dtypes,
shapes, emptiness, NaN/inf), so a long calibration never fails half-way:

- an ``.npz`` keyed by input name (or a single ``.npy`` for one-input models); arrays
  hold one or more samples stacked along the first axis;
- a folder of such ``.npz``/``.npy`` files, read in sorted name order;
- a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``) for one-input image
  models, turned into tensors by a preprocessing spec (:class:`ImagePreprocess`).

When the model's first dimension is a fixed number (say 1) and the data stacks more
samples than that, the data is cut into feeds of that size; when it is symbolic, the
data is cut into feeds of ``batch_size`` samples (all at once when not given).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import TensorType
from torsh_gen.tools.run import check_inputs, load_inputs, model_inputs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class ImagePreprocess:
    """How image files become an input tensor.

    Written on the command line as ``key=value`` pairs separated by ``;``, e.g.
    ``size=224,224;mean=0.485,0.456,0.406;std=0.229,0.224,0.225;layout=nchw``.
    ``size`` defaults to the model's input height and width, ``layout`` to NCHW when
    the model's second dimension is 1 or 3 and NHWC otherwise; pixels are divided by
    ``scale`` (default 255) before ``mean`` and ``std`` apply; ``color`` is ``rgb`` or
    ``gray`` (default: gray for one channel).
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 255.0
    layout: str | None = None
    color: str | None = None

    @classmethod
    def parse(cls, spec: str | None) -> ImagePreprocess:
        """Read the ``key=value;...`` form; unknown keys and bad values are input errors."""
        if not spec:
            return cls()
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            key, sep, value = part.partition("=")
            key = key.strip()
            try:
                if not sep:
                    raise ValueError("expected key=value")
                if key == "size":
                    h, w = (int(v) for v in value.split(","))
                    fields["size"] = (h, w)
                elif key in ("mean", "std"):
                    fields[key] = tuple(float(v) for v in value.split(","))
                elif key == "scale":
                    fields["scale"] = float(value)
                elif key == "layout" and value.lower() in ("nchw", "nhwc"):
                    fields["layout"] = value.lower()
                elif key == "color" and value.lower() in ("rgb", "gray"):
                    fields["color"] = value.lower()
                else:
                    raise ValueError("unknown key or value")
            except ValueError as e:
                raise InputError(
                    f"bad preprocessing item {part!r} ({e}); use size=H,W;mean=..;std=..;scale=S;layout=nchw|nhwc;color=rgb|gray"
                ) from None
        return cls(**fields)


@dataclass(frozen=True)
class CalibrationData:
    """Checked feeds ready to run, and how many samples they hold in total."""

    feeds: tuple[dict[str, np.ndarray], ...]
    samples: int
    source: str

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)


def load_calibration(
    source: str | Path,
    graph: Graph,
    *,
    preprocess: str | ImagePreprocess | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
) -> CalibrationData:
    """Read DATA for ``graph``, check it and cut it into feeds (at most ``limit`` samples)."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such calibration data; give an .npz, an .npy, or a folder of them or of images")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".npz", ".npy", *IMAGE_SUFFIXES))
        if not files:
            raise InputError(f"{path}: no .npz, .npy or image files in this folder")
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if images and len(images) != len(files):
            raise InputError(f"{path}: mixes images with .npy/.npz files; keep one kind per folder")
        if images:
            pre = preprocess if isinstance(preprocess, ImagePreprocess) else ImagePreprocess.parse(preprocess)
            chunks = [_images(images, graph, pre)]
        else:
            chunks = [load_inputs(p) for p in files]
    else:
        chunks = [load_inputs(path)]
    feeds: list[dict[str, np.ndarray]] = []
    total = 0
    for chunk in chunks:
        for feed in _split(chunk, graph, batch_size):
            if limit is not None and total >= limit:
                break
            feeds.append(_checked(feed, graph, path))
            total += _count(feeds[-1])
    if not feeds or total == 0:
        raise InputError(f"{path}: the calibration data holds no samples")
    return CalibrationData(tuple(feeds), total, str(path))


def _checked(feed: dict[str, np.ndarray], graph: Graph, path: Path) -> dict[str, np.ndarray]:
    try:
        checked = check_inputs(graph, feed)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    for name, arr in checked.items():
        if isinstance(arr, np.ndarray) and arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise InputError(f"{path}: input {name!r} contains NaN or infinity; clean the calibration data")
    return checked


def _split(feed: dict[str, np.ndarray], graph: Graph, batch_size: int | None) -> Iterator[dict[str, np.ndarray]]:
    """Cut stacked samples into feeds the model accepts (see the module docstring)."""
    required = model_inputs(graph)
    if set(feed) == {""} and len(required) == 1:
        feed = {required[0].name: feed[""]}
    first = {v.name: v.type.shape[0] for v in required if isinstance(v.type, TensorType) and v.type.shape}
    step = None
    for name, arr in feed.items():
        dim = first.get(name)
        if not isinstance(arr, np.ndarray) or arr.ndim == 0:
            continue
        if isinstance(dim, int) and arr.shape[0] > dim and arr.shape[0] % dim == 0:
            step = dim
        elif isinstance(dim, str) and batch_size:
            step = batch_size
    n = min((a.shape[0] for a in feed.values() if isinstance(a, np.ndarray) and a.ndim), default=0)
    if step is None or n <= step:
        yield feed
        return
    for start in range(0, n, step):
        yield {k: (v[start : start + step] if isinstance(v, np.ndarray) and v.ndim else v) for k, v in feed.items()}


def _count(feed: dict[str, np.ndarray]) -> int:
    sizes = [a.shape[0] for a in feed.values() if isinstance(a, np.ndarray) and a.ndim]
    return min(sizes) if sizes else 1


def _images(files: list[Path], graph: Graph, pre: ImagePreprocess) -> dict[str, np.ndarray]:
    """Stack image files into one array shaped for the model's single image input."""
    from PIL import Image, UnidentifiedImageError

    required = model_inputs(graph)
    if len(required) != 1 or not isinstance(required[0].type, TensorType) or len(required[0].type.shape or ()) != 4:
        raise InputError("image folders need a model with one 4-d image input; give .npz files instead")
    v = required[0]
    shape = v.type.shape
    layout = pre.layout or ("nchw" if shape[1] in (1, 3) else "nhwc")
    channels = shape[1] if layout == "nchw" else shape[3]
    hw = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    size = pre.size or (hw if all(isinstance(d, int) for d in hw) else None)
    if size is None:
        raise InputError("the model's image size is not fixed; give it with size=H,W in the preprocessing spec")
    color = pre.color or ("gray" if channels == 1 else "rgb")
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if color == "gray" else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32)
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"{f}: cannot read this image ({e})") from None
        a = a[:, :, None] if a.ndim == 2 else a
        a = (a / pre.scale - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
        arrays.append(a.transpose(2, 0, 1) if layout == "nchw" else a)
    return {v.name: np.stack(arrays).astype(v.type.dtype.numpy)}
