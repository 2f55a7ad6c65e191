"""Small models trained on scikit-learn's bundled digits dataset, for accuracy figures.

Precision, quantization and pruning must report what they cost in accuracy, and the
``light_*`` models (constant weights) or random-weight nets cannot show that. The 8x8
digits images ship inside scikit-learn, so nothing is downloaded: an MLP and a small CNN
are trained here in PyTorch (seconds on one core, seeded, so the same weights every
time), written out as plain ONNX with ``onnx.helper`` (no exporter involved), and a
held-out test split comes with them. Models are cached on disk by kind and seed.

    split = digits_split()
    model = digits_model("cnn")              # onnx.ModelProto, input "image" [N,1,8,8]
    acc = accuracy(logits, split.y_test)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from torsh_gen.errors import TorshGenError

KINDS = ("mlp", "cnn")
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
_RECIPE_VERSION = "1"  # bump when the architecture or training changes, to retire caches


@dataclass(frozen=True)
class DigitsSplit:
    """Train and test images (float32, [N, 1, 8, 8], pixel values scaled to [0, 1]) and labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def inputs(self, part: str = "test", limit: int | None = None) -> dict[str, np.ndarray]:
        """The model input feed for one part of the split (``train`` or ``test``)."""
        x = self.x_test if part == "test" else self.x_train
        return {INPUT_NAME: x[:limit] if limit else x}


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> DigitsSplit:
    """The digits dataset split into train and test parts by a seeded shuffle."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - dev extra is installed by make
        raise TorshGenError("the digits dataset needs scikit-learn: pip install 'torsh-gen[dev]'") from e
    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return DigitsSplit(x[train], y[train], x[test], y[test])


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(np.mean(np.argmax(logits, axis=-1) == labels) * 100.0)


def digits_model(kind: str = "cnn", seed: int = 0, cache_dir: Path | None = None) -> onnx.ModelProto:
    """A trained digits classifier (``mlp`` or ``cnn``) as ONNX, from the cache when there."""
    if kind not in KINDS:
        raise TorshGenError(f"unknown digits model {kind!r}: choose one of {', '.join(KINDS)}")
    folder = cache_dir or _default_cache()
    path = folder / f"digits_{kind}_s{seed}_v{_RECIPE_VERSION}.onnx"
    if path.is_file():
        return onnx.load(path)
    weights = _train(kind, digits_split(seed), seed)
    model = _to_onnx(kind, weights)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    onnx.save(model, tmp)
    tmp.replace(path)
    return model


def _default_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.sha256(np.__version__.encode()).hexdigest()[:8]
    return base / "torsh-gen" / "digits" / tag


def _train(kind: str, split: DigitsSplit, seed: int) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise TorshGenError("training the digits models needs PyTorch: pip install 'torsh-gen[torch]'") from e
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread gives the same weights on every machine size
    try:
        torch.manual_seed(seed)
        net = _net(torch, kind)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        x = torch.from_numpy(split.x_train)
        y = torch.from_numpy(split.y_train)
        gen = torch.Generator().manual_seed(seed)
        for _epoch in range(40 if kind == "cnn" else 60):
            for idx in torch.randperm(len(x), generator=gen).split(64):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                loss.backward()
                opt.step()
        return {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    finally:
        torch.set_num_threads(threads)


def _net(torch, kind: str):  # type: ignore[no-untyped-def]
    nn = torch.nn
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _to_onnx(kind: str, w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The trained net written node by node (the layer indices match ``_net``'s Sequential)."""
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def param(name: str) -> str:
        inits.append(numpy_helper.from_array(w[name], name))
        return name

    def gemm(i: int, x: str, out: str) -> str:
        nodes.append(helper.make_node("Gemm", [x, param(f"{i}.weight"), param(f"{i}.bias")], [out], name=f"fc{i}", transB=1))
        return out

    def relu(x: str, out: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [out], name=f"relu_{out}"))
        return out

    if kind == "mlp":
        h = "flat"
        nodes.append(helper.make_node("Flatten", [INPUT_NAME], [h], name="flatten"))
        h = relu(gemm(1, h, "h1"), "a1")
        h = relu(gemm(3, h, "h2"), "a2")
        gemm(5, h, OUTPUT_NAME)
    else:
        h = INPUT_NAME
        for i, pool in ((0, False), (2, True), (5, True)):
            conv = f"c{i}"
            nodes.append(helper.make_node("Conv", [h, param(f"{i}.weight"), param(f"{i}.bias")], [conv], name=f"conv{i}", pads=[1, 1, 1, 1]))
            h = relu(conv, f"r{i}")
            if pool:
                nodes.append(helper.make_node("MaxPool", [h], [f"p{i}"], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2]))
                h = f"p{i}"
        nodes.append(helper.make_node("Flatten", [h], ["flat"], name="flatten"))
        h = relu(gemm(9, "flat", "h9"), "a9")
        gemm(11, h, OUTPUT_NAME)
    graph = helper.make_graph(
        nodes,
        f"digits_{kind}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="torsh-gen digits")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
