"""The .torsh format: round trips, memory mapping, backward compatibility, hostile files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EXAMPLE, REPO
from torsh_gen.errors import FormatError
from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.ir.serialize import (
    ALIGN,
    FORMAT_VERSION,
    MAGIC,
    dumps_header,
    load_torsh,
    loads_torsh,
    save_torsh,
)
from torsh_gen.ir.verify import verify
from torsh_gen.ops.execute import run_graph

V1_FILE = REPO / "tests" / "data" / "format_v1.torsh"


def test_round_trip_preserves_graph_and_outputs(tmp_path: Path):
    g = load_onnx(EXAMPLE)
    path = save_torsh(g, tmp_path / "m.torsh")
    g2 = load_torsh(path)
    verify(g2)
    assert [n.op_type for n in g2.nodes] == [n.op_type for n in g.nodes]
    assert g2.info.opset_imports == g.info.opset_imports
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(g2, {"image": x})[0], run_graph(g, {"image": x})[0])
    # same IR → byte-identical file
    save_torsh(g2, tmp_path / "again.torsh")
    assert (tmp_path / "again.torsh").read_bytes() == path.read_bytes()


def test_weights_are_memory_mapped_and_aligned(tmp_path: Path):
    g = load_onnx(EXAMPLE)
    g2 = load_torsh(save_torsh(g, tmp_path / "m.torsh"))
    for v in g2.initializers:
        assert not v.const.flags.writeable  # a view of the read-only map, not a copy
        assert not v.const.flags.owndata
    _, _, table = dumps_header(g)
    assert all(t["offset"] % ALIGN == 0 for t in table if "offset" in t)


def test_format_v1_file_still_loads():
    """A file written by format version 1 must load in every later version."""
    g = load_torsh(V1_FILE)
    verify(g)
    assert FORMAT_VERSION >= 1
    assert any(n.op_type == "If" for n in g.nodes)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    outs = run_graph(g, {"image": x, "flag": np.array(True)})
    assert outs[0].shape == (2, 10)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "too short"),
        (b"NOTTORSH" + bytes(16), "bad magic"),
        (MAGIC + (99).to_bytes(4, "little") + bytes(12), "newer"),
        (MAGIC + (1).to_bytes(4, "little") + bytes(4) + (10**9).to_bytes(8, "little"), "past the end"),
        (MAGIC + (1).to_bytes(4, "little") + bytes(4) + (5).to_bytes(8, "little") + b"{bad}", "corrupted"),
    ],
)
def test_bad_files_give_format_errors(data: bytes, message: str):
    with pytest.raises(FormatError, match=message):
        loads_torsh(data)


def test_truncated_file_is_reported(tmp_path: Path):
    path = save_torsh(load_onnx(EXAMPLE), tmp_path / "m.torsh")
    data = path.read_bytes()
    with pytest.raises(FormatError, match="truncated|past the end"):
        loads_torsh(data[: len(data) - 100])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_never_crash(data):
    """Any mutation of a valid file either loads or raises FormatError: never anything else."""
    base = bytearray(_small_file())
    n = data.draw(st.integers(1, 8))
    for _ in range(n):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    try:
        loads_torsh(bytes(base[:cut]))
    except FormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_crash(blob: bytes):
    try:
        loads_torsh(MAGIC + (1).to_bytes(4, "little") + bytes(4) + len(blob).to_bytes(8, "little") + blob)
    except FormatError:
        pass


_SMALL: list[bytes] = []


def _small_file() -> bytes:
    if not _SMALL:
        import tempfile

        g = load_onnx(_tiny_model())
        with tempfile.TemporaryDirectory() as d:
            _SMALL.append(save_torsh(g, Path(d) / "s.torsh").read_bytes())
    return _SMALL[0]


def _tiny_model() -> onnx.ModelProto:
    from onnx import helper

    from tests.conftest import make_model, tensor_info

    w = onnx.numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    return make_model([node], [tensor_info("x", [1, 2])], [tensor_info("y", [1, 3])], [w])


def test_onnx_torsh_onnx_round_trip_is_valid_onnx(tmp_path: Path):
    g = load_torsh(save_torsh(load_onnx(EXAMPLE), tmp_path / "m.torsh"))
    onnx.checker.check_model(to_onnx(g), full_check=True)
