"""Build-time caches: black output remembered per text, conv kernels compiled in balanced shards."""

from __future__ import annotations

from pathlib import Path

import black
import pytest

from torsh_gen.backends.python.formatting import format_code


def test_formatting_matches_black_and_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORSH_GEN_CACHE_DIR", str(tmp_path))
    source = "def f( a,b ):\n  return {'x':a,   'y':b}\n"
    expected = black.format_str(source, mode=black.Mode(line_length=100, target_versions={black.TargetVersion.PY311}))
    assert format_code(source) == expected
    (stored,) = (tmp_path / "black").glob("*.py")
    assert stored.read_text() == expected
    stored.write_text("# the cache is read, not black\n")  # a second call must come from the file
    assert format_code(source) == "# the cache is read, not black\n"


def test_unwritable_cache_still_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TORSH_GEN_CACHE_DIR", str(blocker))  # a file, so no folder can be made in it
    assert format_code("x=1\n") == "x = 1\n"


def test_conv_kernels_split_into_balanced_shards() -> None:
    from torsh_gen.backends.python.conv_cache import shards
    from torsh_gen.backends.python.package import _conv_runtime

    source = _conv_runtime("0", {"conv", "matmul", "pool"})
    two = shards(source, 2)
    assert len(two) == 2 and "gemm_conv" in two[0] and "gemm_conv_grid" in two[1]
    assert sorted(n for g in two for n in g) == sorted(n for g in shards(source, 1) for n in g)
    assert {"gemm_conv", "gemm_conv_grid", "gemm_rows", "max_pool2d", "pack_weights"} <= {n for g in two for n in g}
    assert len(shards(source, 64)) == len(shards(source, 1)[0])  # never more shards than kernels


_HIDDEN = '''
import numba as nb

@nb.njit(nb.int64(nb.int64), cache=True)
def seen(a):
    return a + 1


def _make():
    @nb.njit(
        nb.int64(nb.int64),
        cache=True,
    )
    def hidden(a):
        return a * 2

    return hidden


hidden = _make()
'''


def test_sharded_build_caches_kernels_the_split_cannot_see(tmp_path: Path) -> None:
    """A cached kernel whose decorator ``shards`` does not recognise (nested, split over
    lines) is compiled by the first process, so the artifact never recompiles it."""
    from torsh_gen.backends.python.conv_cache import _build, shards

    assert shards(_HIDDEN, 2) == [["seen"]]
    assert _build(tmp_path / "shared", _HIDDEN)
    names = {f.name.split("-")[0] for f in (tmp_path / "shared" / "__pycache__").glob("*.nbi")}
    assert names == {"_conv.seen", "_conv._make.locals.hidden"}
