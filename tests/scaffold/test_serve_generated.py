"""generated/serve_rest and generated/serve_grpc must match what the generator writes now.

`make generated` rebuilds them; this test fails on drift, so a change to the service
templates shows up in review as a diff of the generated projects (the same check as
tests/backends/test_generated_examples.py for the compiler's output).
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO
from torsh_gen.scaffold.serve import PINS, generate_service
from torsh_gen.tools.serve_model import serve_model

GENERATED = REPO / "generated"


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_checked_in_services_have_not_drifted(tmp_path: Path, kind: str):
    if kind == "grpc":
        pytest.importorskip("grpc_tools")
        if version("grpcio-tools") != PINS["grpcio-tools"]:  # the stubs' text depends on it
            pytest.skip(
                f"grpcio-tools {version('grpcio-tools')} installed; generated/ used {PINS['grpcio-tools']}"
            )
    generate_service(serve_model(EXAMPLE), tmp_path / kind, kind=kind)
    expected = _files(GENERATED / f"serve_{kind}")
    actual = _files(tmp_path / kind)
    assert sorted(actual) == sorted(expected), "file list drifted; run `make generated`"
    changed = [f for f in actual if actual[f] != expected[f]]
    assert (
        not changed
    ), f"generated files drifted: {changed}; run `make generated` and review the diff"
