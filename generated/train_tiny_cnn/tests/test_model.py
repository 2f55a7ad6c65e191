"""The module reproduces the source model: golden inputs and outputs saved at generation time."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tiny_cnn.model import INPUTS, load_pretrained

GOLDEN = Path(__file__).with_name("golden.safetensors")


def test_matches_source_model_outputs():
    golden = load_file(str(GOLDEN))
    model = load_pretrained().eval()
    with torch.no_grad():
        outputs = model(*(golden[f"input.{key}"] for key in INPUTS))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    for i, out in enumerate(outputs):
        torch.testing.assert_close(out, golden[f"output.{i}"], rtol=1e-5, atol=1e-5)


def test_logits_feed_the_final_softmax():
    golden = load_file(str(GOLDEN))
    inputs = [golden[f"input.{key}"] for key in INPUTS]
    with torch.no_grad():
        logits = load_pretrained(output_logits=True).eval()(*inputs)
        probs = load_pretrained().eval()(*inputs)
    torch.testing.assert_close(torch.softmax(logits, dim=1), probs)
