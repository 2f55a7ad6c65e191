"""The benchmark model set, built locally without downloads.

- ``light_resnet50``, ``light_squeezenet``, ``light_densenet121``, ``light_inception_v1``: the
  zoo models shipped in the onnx package, with their constant weight generators replaced by
  seeded random initializers (``torsh_gen.tools.testmodels.randomized_light_model``).
- ``mobilenetv2``, ``resnet18``, ``bert_encoder``, ``mlp`` (and ``resnet50``, for the GPU
  check only: ``GPU_SUITE``): built here in PyTorch with seeded
  random weights (BatchNorm statistics randomized too, so folding them is not a no-op) and
  exported to ONNX (opset 17) with the TorchScript exporter (``dynamo=False``). The PyTorch
  modules stay available through ``torch_module(name)`` so ``bench`` can run them eagerly:
  the same seed gives the same weights as the exported file.

Everything has static shapes and batch 1, unless ``build_models(..., batch=N)`` asks for
another fixed batch (image models and the MLP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIGHT = ("light_resnet50", "light_squeezenet", "light_densenet121", "light_inception_v1")
TORCH = ("mobilenetv2", "resnet18", "bert_encoder", "mlp")
SUITE = LIGHT + TORCH
#: Built in PyTorch: the CPU suite's models and ResNet-50, which only the GPU check runs.
TORCH_BUILT = TORCH + ("resnet50",)
GPU_SUITE = ("resnet50", "mobilenetv2", "resnet18", "bert_encoder", "mlp")
OPSET = 17
SEED = 0


@dataclass(frozen=True)
class BenchModel:
    """One model of the suite: its ONNX file and, for PyTorch-built ones, how to rebuild it."""

    name: str
    onnx_path: Path
    torch_built: bool


def build_models(folder: str | Path, names: tuple[str, ...] = SUITE, batch: int = 1) -> list[BenchModel]:
    """Write the ONNX file of each model in ``names`` into ``folder``; the suite in order.

    ``batch`` other than 1 (PyTorch-built image models and the MLP) is fixed in the export
    and named in the file: ``resnet50_b64.onnx``.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    models = []
    for name in names:
        path = out / (f"{name}.onnx" if batch == 1 else f"{name}_b{batch}.onnx")
        if name in LIGHT and batch == 1:
            import onnx

            from torsh_gen.tools.testmodels import randomized_light_model

            onnx.save(randomized_light_model(name, seed=SEED), path)
        elif name in TORCH_BUILT:
            export_onnx(name, path, batch)
        elif name in LIGHT:
            raise ValueError(f"'{name}' is a zoo model of batch 1; batch {batch} is for PyTorch-built models")
        else:
            raise ValueError(f"unknown benchmark model '{name}'; choose from {', '.join(SUITE + ('resnet50',))}")
        models.append(BenchModel(name, path, name in TORCH_BUILT))
    return models


def export_onnx(name: str, path: Path, batch: int = 1) -> Path:
    """Export the PyTorch model ``name`` (fixed ``batch``) to ONNX with the TorchScript exporter."""
    import torch

    module = torch_module(name)
    args = example_inputs(name, batch)
    names = ["input_ids"] if name == "bert_encoder" else ["input"]
    tmp = path.with_name(f".{path.name}.tmp")
    torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=OPSET, input_names=names, output_names=["output"], do_constant_folding=True)
    tmp.replace(path)
    return path


def example_inputs(name: str, batch: int = 1) -> tuple[Any, ...]:
    """Seeded inputs with the shapes the suite benchmarks; ``batch`` for image models and the
    MLP (the BERT encoder stays at batch 1)."""
    import torch

    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    g = torch.Generator().manual_seed(SEED)
    if name == "bert_encoder":
        if batch != 1:
            raise ValueError("bert_encoder is benchmarked at batch 1 only")
        return (torch.randint(0, VOCAB, (1, SEQ), generator=g),)
    if name == "mlp":
        return (torch.randn(batch, 784, generator=g),)
    return (torch.randn(batch, 3, 224, 224, generator=g),)


def torch_module(name: str) -> Any:
    """The PyTorch module ``name`` in eval mode, with the suite's seeded random weights."""
    import torch

    builders = {"mobilenetv2": _mobilenetv2, "resnet18": _resnet18, "resnet50": _resnet50, "bert_encoder": _bert_encoder, "mlp": _mlp}
    if name not in builders:
        raise ValueError(f"'{name}' is not built in PyTorch; choose from {', '.join(TORCH_BUILT)}")
    torch.manual_seed(SEED)
    module = builders[name]()
    _randomize_norms(module)
    return module.eval()


def _randomize_norms(module: Any) -> None:
    """BatchNorm running statistics and affine terms (and LayerNorm's) away from identity."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, nn.BatchNorm2d | nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)


# --------------------------------------------------------------------- architectures
def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: Any = None) -> Any:
    from torch import nn

    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def _mobilenetv2() -> Any:
    """MobileNetV2 (width 1.0, 224x224, 1000 classes): inverted residuals with depthwise 3x3."""
    from torch import nn

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.ReLU6)]
            layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), _conv_bn(hidden, cout, 1)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            return x + self.body(x) if self.residual else self.body(x)

    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    layers: list[Any] = [_conv_bn(3, 32, 3, 2, act=nn.ReLU6)]
    cin = 32
    for t, c, n, s in settings:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [_conv_bn(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    return nn.Sequential(*layers)


def _residual(body: Any, cin: int, cout: int, stride: int) -> Any:
    """``relu(body(x) + shortcut(x))``: the ResNets' block around ``body`` (built first, so
    the seeded weights come in the order they always did), with a projection shortcut where
    the shape changes."""
    from torch import nn

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.shortcut = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
            self.relu = nn.ReLU()

        def forward(self, x: Any) -> Any:
            return self.relu(self.body(x) + self.shortcut(x))

    return Residual()


def _resnet18() -> Any:
    """ResNet-18 (224x224, 1000 classes): basic blocks with projection shortcuts."""
    from torch import nn

    def BasicBlock(cin: int, cout: int, stride: int) -> Any:  # noqa: N802  (reads as the class it builds)
        return _residual(nn.Sequential(_conv_bn(cin, cout, 3, stride, act=nn.ReLU), _conv_bn(cout, cout, 3)), cin, cout, stride)

    layers: list[Any] = [_conv_bn(3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def _resnet50() -> Any:
    """ResNet-50 v1.5 (224x224, 1000 classes): bottleneck blocks, the stride on the 3x3."""
    from torch import nn

    def Bottleneck(cin: int, width: int, stride: int) -> Any:  # noqa: N802  (reads as the class it builds)
        body = nn.Sequential(
            _conv_bn(cin, width, 1, act=nn.ReLU), _conv_bn(width, width, 3, stride, act=nn.ReLU), _conv_bn(width, 4 * width, 1)
        )
        return _residual(body, cin, 4 * width, stride)

    layers: list[Any] = [_conv_bn(3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
    return nn.Sequential(*layers)


HIDDEN, LAYERS, HEADS, SEQ, VOCAB, FFN = 384, 6, 6, 128, 30522, 1536


def _bert_encoder() -> Any:
    """A BERT-style encoder: embeddings + 6 post-LayerNorm layers (hidden 384, 6 heads, GELU)."""
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.ModuleList(nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
            self.out, self.ln1 = nn.Linear(HIDDEN, HIDDEN), nn.LayerNorm(HIDDEN, eps=1e-12)
            self.ffn = nn.Sequential(nn.Linear(HIDDEN, FFN), nn.GELU(), nn.Linear(FFN, HIDDEN))
            self.ln2 = nn.LayerNorm(HIDDEN, eps=1e-12)

        def forward(self, x: Any) -> Any:
            b, s, _ = x.shape
            q, k, v = (lin(x).view(b, s, HEADS, HIDDEN // HEADS).transpose(1, 2) for lin in self.qkv)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HIDDEN // HEADS)
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, s, HIDDEN)
            x = self.ln1(x + self.out(ctx))
            return self.ln2(x + self.ffn(x))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words, self.positions = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(512, HIDDEN)
            self.ln = nn.LayerNorm(HIDDEN, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

        def forward(self, input_ids: Any) -> Any:
            pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            x = self.ln(self.words(input_ids) + self.positions(pos))
            for layer in self.layers:
                x = layer(x)
            return x

    return Encoder()


def _mlp() -> Any:
    """An MLP 784-256-256-10 with ReLU."""
    from torch import nn

    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
