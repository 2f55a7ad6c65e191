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


def _scaffold_tests_tiny_cnn(out: Path) -> dict[str, str | bytes]:
    from torsh_gen.scaffold.tests import render_tests
    from torsh_gen.tools.goldens import compute_goldens

    goldens = compute_goldens(EXAMPLE, artifact=GENERATED / "tiny_cnn")
    return render_tests(goldens, out, rtol=1e-3, atol=1e-4)


def _scaffold_op_example(out: Path) -> dict[str, str | bytes]:
    from torsh_gen.scaffold.op import op_names, render_op

    return render_op(op_names("MyGelu"))


def _same_npz(actual: bytes, expected: bytes) -> bool:
    """Golden archives: inputs exact, outputs within float noise (onnxruntime's results
    may differ in the last bits between CPUs); on one machine the bytes are identical."""
    import io

    import numpy as np

    with np.load(io.BytesIO(actual)) as a, np.load(io.BytesIO(expected)) as e:
        if a.files != e.files:
            return False
        for key in a.files:
            x, y = a[key], e[key]
            if x.dtype != y.dtype or x.shape != y.shape:
                return False
            exact = key.startswith("input_") or x.dtype.kind not in "fc"
            if not (np.array_equal(x, y) if exact else np.allclose(x, y, rtol=1e-5, atol=1e-7)):
                return False
    return True


def _scaffold_train_tiny_cnn(out: Path) -> dict[str, str | bytes]:
    pytest.importorskip("safetensors")
    from torsh_gen.scaffold.train import build_files
    from torsh_gen.tools.loading import load_model

    return build_files(load_model(EXAMPLE), "tiny_cnn", EXAMPLE.name)[0]


def _same_safetensors(actual: bytes, expected: bytes) -> bool:
    """Golden outputs of the reference executor, within float noise across CPUs."""
    import numpy as np
    from safetensors.numpy import load

    a, e = load(actual), load(expected)
    if sorted(a) != sorted(e):
        return False
    exact = lambda k: not k.startswith("output.") or a[k].dtype.kind not in "fc"  # noqa: E731
    return all(
        a[k].shape == e[k].shape and (np.array_equal(a[k], e[k]) if exact(k) else np.allclose(a[k], e[k], rtol=1e-5, atol=1e-7))
        for k in a
    )


@pytest.mark.parametrize(
    "name, render",
    [("tests_tiny_cnn", _scaffold_tests_tiny_cnn), ("op_example", _scaffold_op_example), ("train_tiny_cnn", _scaffold_train_tiny_cnn)],
)
def test_checked_in_scaffolds_have_not_drifted(name: str, render):
    expected = _files(GENERATED / name)
    actual = {k: v.encode() if isinstance(v, str) else v for k, v in render(GENERATED / name).items()}
    assert sorted(actual) == sorted(expected), "file list drifted; run `make generated`"
    changed = [
        f
        for f in actual
        if actual[f] != expected[f]
        and not (f.endswith(".npz") and _same_npz(actual[f], expected[f]))
        and not (f.endswith("golden.safetensors") and _same_safetensors(actual[f], expected[f]))
    ]
    assert not changed, f"generated files drifted: {changed}; run `make generated` and review the diff"
