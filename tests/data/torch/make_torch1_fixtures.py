"""Make the TorchScript fixtures saved by PyTorch 1.x (run once with torch 1.13; committed).

    python3 -m venv /tmp/t1x && /tmp/t1x/bin/pip install "torch==1.13.1" "numpy<2"
    /tmp/t1x/bin/python tests/data/torch/make_torch1_fixtures.py

Writes ``cnn_torch1.pt`` (a traced small CNN: conv, batch norm, ReLU, pooling, linear) and
``mlp_torch1.pt`` (a scripted MLP with GELU), each with ``*_io.npz`` holding a seeded input
and the outputs PyTorch 1.13 computed for it, so the suite checks our import of files
written by an old PyTorch against that PyTorch's own numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class SmallMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(nn.functional.gelu(self.fc1(x))), dim=-1)


def main() -> None:
    torch.manual_seed(0)
    cnn = SmallCNN().eval()
    with torch.no_grad():  # BatchNorm statistics away from identity, so the fold is not a no-op
        cnn.bn1.running_mean.uniform_(-0.5, 0.5)
        cnn.bn1.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 12, 12)
    traced = torch.jit.trace(cnn, (x,))
    traced.save(str(HERE / "cnn_torch1.pt"))
    with torch.no_grad():
        np.savez(HERE / "cnn_torch1_io.npz", x=x.numpy(), y=cnn(x).numpy())
    mlp = SmallMLP().eval()
    v = torch.randn(3, 12)
    torch.jit.script(mlp).save(str(HERE / "mlp_torch1.pt"))
    with torch.no_grad():
        np.savez(HERE / "mlp_torch1_io.npz", x=v.numpy(), y=mlp(v).numpy())
    print("torch", torch.__version__)


if __name__ == "__main__":
    main()
