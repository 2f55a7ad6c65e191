"""generated/ holds checked-in compiler output; it must match what the compiler writes now.

`make generated` rebuilds it; this test fails on drift, so a change to the generator shows
up in review as a diff of real generated code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO
from torsh_gen.tools.compile import compile_model

GENERATED = REPO / "generated"


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.parametrize("name, model", [("tiny_cnn", EXAMPLE)])
def test_checked_in_output_has_not_drifted(tmp_path: Path, name: str, model: Path):
    compile_model(model, tmp_path / name, target="cpu")
    expected = _files(GENERATED / name)
    actual = _files(tmp_path / name)
    assert sorted(actual) == sorted(expected), "file list drifted; run `make generated`"
    changed = [f for f in actual if actual[f] != expected[f]]
    assert not changed, f"generated files drifted: {changed}; run `make generated` and review the diff"
