"""Bad .tflite input: one clear line each, the right exit code, no traceback, nothing written."""

from __future__ import annotations

import random
import sys

import pytest

from tests.cli.test_cli import cli
from tests.frontends.tflite.helpers import fixture

pytest.importorskip("ai_edge_litert")

from torsh_gen.errors import ModelLoadError, TorshGenError, UnsupportedOpError  # noqa: E402
from torsh_gen.frontends.tflite import load_tflite, unsupported_ops  # noqa: E402
from torsh_gen.frontends.tflite.reader import read_tflite  # noqa: E402
from torsh_gen.tools.loading import load_model  # noqa: E402


def test_not_a_flatbuffer(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_text("this is not a model\n")
    with pytest.raises(ModelLoadError, match="not a TFLite model"):
        load_model(bad)


def test_onnx_file_named_tflite(tmp_path):
    from tests.conftest import EXAMPLE

    bad = tmp_path / "model.tflite"
    bad.write_bytes(EXAMPLE.read_bytes())
    with pytest.raises(ModelLoadError, match="no 'TFL3' flatbuffer identifier"):
        load_model(bad)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a TFLite model"):
        load_model(empty)
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "missing.tflite")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, keep):
    data = fixture("mobilenet_float").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError, match="corrupted or truncated"):
        load_model(bad)


def test_every_truncation_is_a_clear_error():
    data = fixture("int8_ops").read_bytes()
    for cut in range(8, len(data), 53):
        with pytest.raises(ModelLoadError):
            load_tflite(data[:cut])


def test_random_corruption_never_escapes_as_a_crash():
    """Flipped bytes: the model loads (weights changed) or fails with a torsh-gen error."""
    data = fixture("mobilenet_int8").read_bytes()
    rng = random.Random(1)
    for _ in range(150):
        b = bytearray(data)
        for _ in range(4):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            load_tflite(bytes(b))
        except TorshGenError:
            pass


def test_unsupported_ops_are_listed_all_at_once():
    path = fixture("unsupported")
    assert unsupported_ops(read_tflite(path)) == ["#0 LOCAL_RESPONSE_NORMALIZATION", "#2 CUMSUM"]
    with pytest.raises(UnsupportedOpError) as e:
        load_tflite(path)
    msg = str(e.value)
    assert "2 unsupported TFLite operator(s): #0 LOCAL_RESPONSE_NORMALIZATION, #2 CUMSUM" in msg
    assert "\n" not in msg


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'torsh-gen\[tflite\]'"):
        read_tflite(fixture("mlp"))


def test_cli_bad_tflite_is_one_line(capsys, tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(fixture("mlp").read_bytes()[:500])
    code, out, err = cli(capsys, "inspect", str(bad))
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "truncated" in err


def test_cli_unsupported_ops_exit_code(capsys):
    code, _, err = cli(capsys, "inspect", str(fixture("unsupported")))
    assert code == UnsupportedOpError.exit_code
    assert "#0 LOCAL_RESPONSE_NORMALIZATION, #2 CUMSUM" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_convert_bad_input_writes_nothing(capsys, tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"TFL3" * 10)
    out = tmp_path / "out.onnx"
    code, _, err = cli(capsys, "convert", str(bad), "-o", str(out))
    assert code == 2 and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_16_bit_activations_are_refused_clearly():
    with pytest.raises(
        UnsupportedOpError, match="16-bit quantized activations .* int8 activations"
    ):
        load_tflite(fixture("mlp_int16x8"))
