"""TorchScript files written by PyTorch 1.13 (fixtures made by tests/data/torch/make_torch1_fixtures.py).

Each file is imported through ``torsh-gen convert`` and the ONNX result is run in
onnxruntime; the outputs must match what PyTorch 1.13 computed when it saved the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("torch")

from torsh_gen.cli.main import main  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data" / "torch"


@pytest.mark.parametrize(("name", "shape"), [("cnn_torch1", "x=2x3x12x12"), ("mlp_torch1", "x=3x12")])
def test_pytorch1_torchscript_file_matches_its_saved_outputs(tmp_path: Path, capsys, name: str, shape: str) -> None:
    out = tmp_path / f"{name}.onnx"
    with pytest.raises(SystemExit) as done:
        main(["convert", str(DATA / f"{name}.pt"), "--input-shape", shape, "-o", str(out)])
    assert done.value.code in (0, None), capsys.readouterr().err
    io = np.load(DATA / f"{name}_io.npz")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: io["x"]})
    np.testing.assert_allclose(got, io["y"], rtol=1e-5, atol=1e-5)
