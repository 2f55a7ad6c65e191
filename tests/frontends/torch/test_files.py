"""PyTorch files through the CLI: .pt2 programs, TorchScript, checkpoints, and their bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402

from tests.frontends.torch import models  # noqa: E402
from tests.frontends.torch.helpers import assert_close, feeds, torch_outputs  # noqa: E402
from torsh_gen.cli.main import main  # noqa: E402
from torsh_gen.frontends.torch import load_torchscript  # noqa: E402
from torsh_gen.frontends.torch.inputs import parse_input_specs  # noqa: E402
from torsh_gen.ops.execute import run_graph  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
FACTORY = "tests.frontends.torch.models:MLP"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process from the repository root; (exit code, stdout, stderr)."""
    old = Path.cwd()
    os.chdir(REPO)
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return code, out, err


def ort_run(path: Path, *args: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: a.numpy() for n, a in zip(names, args)})


@pytest.fixture(scope="module")
def resnet_pt2(tmp_path_factory):
    module = models.seeded(models.TinyResNet)
    batch = torch.export.Dim("batch", max=64)
    ep = torch.export.export(module, (torch.randn(2, 3, 16, 16),), dynamic_shapes={"x": {0: batch}})
    path = tmp_path_factory.mktemp("pt2") / "resnet.pt2"
    torch.export.save(ep, str(path))
    return module, path


def test_pt2_converts_to_onnx_with_report(resnet_pt2, tmp_path, capsys):
    module, path = resnet_pt2
    out = tmp_path / "resnet.onnx"
    code, stdout, err = cli(capsys, "convert", str(path), "-o", str(out))
    assert code == 0, err
    assert "aten.convolution" in stdout and "precision: unchanged" in stdout
    for b in (1, 3):  # the batch dim stayed symbolic
        x = torch.randn(b, 3, 16, 16)
        assert_close(ort_run(out, x), torch_outputs(module, (x,)))


def test_pt2_inspect_shows_module_paths(resnet_pt2, capsys):
    _, path = resnet_pt2
    code, stdout, err = cli(capsys, "inspect", str(path), "-f", "json")
    assert code == 0, err
    report = json.loads(stdout)
    assert "layer1.0.conv1" in json.dumps(report["layers"])
    assert isinstance(report["inputs"][0]["shape"][0], str)  # symbolic batch


@pytest.mark.slow
def test_pt2_to_torsh_and_back(resnet_pt2, tmp_path, capsys):
    module, path = resnet_pt2
    out = tmp_path / "resnet.torsh"
    assert cli(capsys, "convert", str(path), "-o", str(out))[0] == 0
    from torsh_gen.tools.loading import load_model

    graph = load_model(out)
    x = torch.randn(2, 3, 16, 16)
    assert_close(run_graph(graph, feeds(graph, (x,))), torch_outputs(module, (x,)))


@pytest.mark.slow
def test_torchscript_traced_cnn(tmp_path):
    cnn = models.seeded(models.TinyMobileNetV2)
    torch.jit.trace(cnn, (torch.randn(2, 3, 16, 16),)).save(str(tmp_path / "cnn.pt"))
    x = torch.randn(2, 3, 16, 16)
    graph = load_torchscript(tmp_path / "cnn.pt", parse_input_specs(["x=2x3x16x16"]))
    loaded = torch.jit.load(str(tmp_path / "cnn.pt"))
    assert_close(run_graph(graph, feeds(graph, (x,))), torch_outputs(loaded, (x,)))
    assert "features.1.conv.3" in {n.metadata.get("torch.module") for n in graph.nodes}


def test_torchscript_scripted_mlp(tmp_path, capsys):
    torch.jit.script(models.seeded(models.MLP)).save(str(tmp_path / "mlp.pt"))
    out = tmp_path / "mlp.onnx"
    code, stdout, err = cli(
        capsys, "convert", str(tmp_path / "mlp.pt"), "--input-shape", "x=3x16", "-o", str(out)
    )
    assert code == 0, err
    v = torch.randn(3, 16)
    assert_close(ort_run(out, v), torch_outputs(torch.jit.load(str(tmp_path / "mlp.pt")), (v,)))
    assert "aten.addmm" in stdout
    assert "fc2" in {n.name.split("/")[1] for n in _onnx_nodes(out)}


def _onnx_nodes(path: Path) -> list:
    import onnx

    return list(onnx.load(str(path)).graph.node)


def test_torchscript_without_shapes_says_how(tmp_path, capsys):
    torch.jit.script(models.seeded(models.MLP)).save(str(tmp_path / "mlp.pt"))
    code, _, err = cli(capsys, "inspect", str(tmp_path / "mlp.pt"))
    assert code == 2
    assert "--input-shape x=" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".safetensors"])
def test_checkpoint_convert(suffix, tmp_path, capsys):
    module = models.seeded(models.MLP, seed=3)
    ckpt = tmp_path / f"mlp{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(module.state_dict(), str(ckpt))
    else:
        torch.save(
            {"state_dict": module.state_dict()} if suffix == ".bin" else module.state_dict(),
            str(ckpt),
        )
    out = tmp_path / "mlp.onnx"
    code, stdout, err = cli(
        capsys, "convert", str(ckpt), "--module", FACTORY, "--input-shape", "x=4x16", "-o", str(out)
    )
    assert code == 0, err
    assert "6 tensors" in stdout and "aten.addmm" in stdout
    x = torch.randn(4, 16)
    assert_close(ort_run(out, x), torch_outputs(module, (x,)))


def test_checkpoint_key_mismatch_lists_keys(tmp_path, capsys):
    state = models.seeded(models.MLP).state_dict()
    del state["fc1.bias"]
    state["extra.weight"] = torch.zeros(2)
    ckpt = tmp_path / "bad.pth"
    torch.save(state, str(ckpt))
    out = tmp_path / "bad.onnx"
    code, _, err = cli(
        capsys, "convert", str(ckpt), "--module", FACTORY, "--input-shape", "x=1x16", "-o", str(out)
    )
    assert code == 2
    assert "missing 1: fc1.bias" in err and "unexpected 1: extra.weight" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


class _Evil:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_hostile_pickle_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    torch.save({"fc1.weight": _Evil(marker)}, str(ckpt))
    out = tmp_path / "evil.onnx"
    code, _, err = cli(
        capsys, "convert", str(ckpt), "--module", FACTORY, "--input-shape", "x=1x16", "-o", str(out)
    )
    assert code == 2
    assert "refused" in err and "GLOBAL getattr" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("no_such_pkg.models:MLP", "cannot import 'no_such_pkg.models'"),
        ("tests.frontends.torch.models:Nope", "has no attribute 'Nope'"),
        ("tests.frontends.torch.models", "expected pkg.module:factory"),
        ("tests.frontends.torch.models:TOL", "has no attribute"),
    ],
)
def test_bad_factory_path(factory, expected, tmp_path, capsys):
    ckpt = tmp_path / "mlp.pth"
    torch.save(models.seeded(models.MLP).state_dict(), str(ckpt))
    code, _, err = cli(
        capsys,
        "convert",
        str(ckpt),
        "--module",
        factory,
        "--input-shape",
        "x=1x16",
        "-o",
        str(tmp_path / "o.onnx"),
    )
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1


def test_checkpoint_without_module_explains(tmp_path, capsys):
    ckpt = tmp_path / "weights.pth"
    torch.save(models.seeded(models.MLP).state_dict(), str(ckpt))
    code, _, err = cli(capsys, "convert", str(ckpt), "-o", str(tmp_path / "o.onnx"))
    assert code == 2 and "--module pkg.module:factory" in err


@pytest.mark.parametrize("suffix", [".pt2", ".pt"])
def test_file_that_is_not_a_model(suffix, tmp_path, capsys):
    bad = tmp_path / f"junk{suffix}"
    bad.write_bytes(b"not a model at all" * 10)
    code, _, err = cli(
        capsys, "convert", str(bad), "--input-shape", "x=1x2", "-o", str(tmp_path / "o.onnx")
    )
    assert code == 2
    assert "not a" in err and len(err.strip().splitlines()) == 1


def test_unsupported_op_exit_code_and_one_line(tmp_path, capsys):
    class Sorts(torch.nn.Module):
        def forward(self, x):
            return x.sort(-1)[0]

    ep = torch.export.export(Sorts(), (torch.randn(2, 3),))
    path = tmp_path / "sorts.pt2"
    torch.export.save(ep, str(path))
    code, _, err = cli(capsys, "convert", str(path), "-o", str(tmp_path / "o.onnx"))
    assert code == 3 and "aten.sort" in err and len(err.strip().splitlines()) == 1


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_missing_torch_extra_is_one_line(tmp_path):
    model = tmp_path / "m.pt2"
    model.write_bytes(b"x")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from torsh_gen.cli.main import main\n"
        f"main(['inspect', {str(model)!r}])\n"
    )
    result = _python(code)
    assert result.returncode == 2
    assert (
        "pip install 'torsh-gen[torch]'" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )


def test_from_torch_is_lazy():
    result = _python(
        "import sys, torsh_gen; assert 'torch' not in sys.modules; "
        "print(torsh_gen.from_torch.__name__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from_torch"
