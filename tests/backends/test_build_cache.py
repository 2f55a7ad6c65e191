"""Build-time caches: black output remembered per text, conv kernels (and kernels.py) compiled in balanced shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    everything = sorted(n for g in shards(source, 1) for n in g)
    assert len(two) == 2 and sorted(n for g in two for n in g) == everything
    # loop bodies (C callbacks) and their drivers are all cached kernels of the module
    assert {"_gemm_conv_body", "_gemm_conv_grid_body", "gemm_conv", "gemm_rows", "max_pool2d", "_max_pool2d_body", "_launch"} <= set(everything)
    # the two heaviest bodies compile side by side; _launch links _parallel_for: one shard
    assert not {"_gemm_conv_body", "_gemm_conv_grid_body"} <= set(two[0])
    assert [g for g in two if "_launch" in g] == [g for g in two if "_parallel_for" in g]
    many = shards(source, 64)
    assert len(many) < len(everything) and all(many)  # never more shards than kernels, none empty


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


@pytest.mark.parametrize("parts", [set(), {"conv"}, {"depthwise", "lrn", "q4"}, {"conv", "matmul", "pool", "pool_w3s2", "depthwise", "batched", "lrn", "qgemm", "q4"}])
def test_conv_runtime_is_black_clean_without_black(parts: set[str]) -> None:
    """``_conv.py`` is assembled from the template's parts without running black (1.4 s
    before its kernels' build can start): any selection must come out black-clean."""
    from torsh_gen.backends.python.package import _conv_runtime

    source = _conv_runtime("0", parts)
    mode = black.Mode(line_length=100, target_versions={black.TargetVersion.PY311})
    assert black.format_str(source, mode=mode) == source
    assert ("def gemm_conv(" in source) == ("conv" in parts)


def test_failed_package_stops_the_conv_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The conv kernels compile in background processes while the rest of the package is
    written: when that fails, the build is stopped and leaves nothing behind."""
    from torsh_gen.backends.python import conv_cache, package
    from torsh_gen.tools.compile import compile_model

    monkeypatch.setenv("TORSH_GEN_CACHE_DIR", str(tmp_path / "cache"))
    started: list[conv_cache.PendingBuild] = []
    real_start = package.start_conv_build

    def start(folder: Path, kernels: int = 0) -> conv_cache.PendingBuild | None:
        pending = real_start(folder, kernels)
        started.append(pending)
        return pending

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(package, "start_conv_build", start)
    monkeypatch.setattr(package, "_manifest", fail)  # the last file written while the build runs
    root = Path(__file__).resolve().parents[2]
    with pytest.raises(OSError, match="No space"):
        compile_model(root / "examples" / "tiny_cnn.onnx", tmp_path / "out" / "tiny")
    (pending,) = started
    assert pending is not None and pending.procs == [] and not pending.tmp.exists()
    assert not list((tmp_path / "cache").glob("conv-*"))  # neither a finished nor a partial build
    assert not (tmp_path / "out" / "tiny").exists() and not list((tmp_path / "out").iterdir())


_PROBE = """
import json, sys
from torsh_gen.tools.compile import compile_model
report = compile_model(sys.argv[1], sys.argv[2])
print(json.dumps({"kernels": report.kernels, "seconds": report.kernel_seconds, "numba": "numba" in sys.modules}))
"""

_IMPORT = """
import sys
sys.path.insert(0, sys.argv[1])
import tiny.kernels as k, tiny._conv as c
from numba.core.registry import CPUDispatcher
ds = [v for m in (k, c) for v in vars(m).values() if isinstance(v, CPUDispatcher)]
print(sum(sum(d.stats.cache_hits.values()) for d in ds), sum(sum(d.stats.cache_misses.values()) for d in ds))
"""


def _conv_silu(folder: Path) -> Path:
    """A 1x1 convolution (the smallest ``_conv.py``: one GEMM kernel) and x * sigmoid(x) (a
    fused ``kernels.py`` kernel), saved in ``folder``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.linspace(-1, 1, 4 * 3, dtype=np.float32).reshape(4, 3, 1, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["s"]),
         helper.make_node("Mul", ["c", "s"], ["y"])],
        "conv_silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], [w])
    path = folder / "conv_silu.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _compile_elsewhere(model: Path, out: Path, cache: Path, compile_script: str | None = None) -> dict:
    env = dict(os.environ, TORSH_GEN_CACHE_DIR=str(cache))
    probe = _PROBE
    if compile_script is not None:  # run the conv build with another script
        probe = f"from torsh_gen.backends.python import conv_cache\nconv_cache._COMPILE = {compile_script!r}\n" + probe
    done = subprocess.run([sys.executable, "-c", probe, str(model), str(out)], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_kernels_compile_in_the_conv_build_process(tmp_path: Path) -> None:
    """With a cold cache, ``kernels.py`` compiles in one of the conv build's processes (numba
    already started there), so the compiler's own process never imports numba; the
    artifact's kernels load from its cache, and the next build copies them."""
    model = _conv_silu(tmp_path)
    report = _compile_elsewhere(model, tmp_path / "a" / "tiny", tmp_path / "cache")
    assert report["kernels"] >= 1 and report["seconds"] > 0 and report["numba"] is False
    assert list((tmp_path / "cache").rglob("kernels.*.nbi")) and list((tmp_path / "cache").glob("conv-*"))
    done = subprocess.run([sys.executable, "-c", _IMPORT, str(tmp_path / "a")], capture_output=True, text=True, check=True)
    hits, misses = map(int, done.stdout.split())
    assert hits >= 3 and misses == 0
    again = _compile_elsewhere(model, tmp_path / "b" / "tiny", tmp_path / "cache")  # all cached: copies
    assert again["numba"] is False and list((tmp_path / "b" / "tiny" / "__pycache__").glob("kernels.*.nbi"))


@pytest.mark.slow  # a cold kernel build in the test process (20 s); the build-process path stays in the default suite
def test_kernels_compile_here_when_the_build_process_cannot(tmp_path: Path) -> None:
    """When compiling ``kernels.py`` in the build process fails (exit code 3 after the conv
    kernels), the compiler compiles it itself; the conv kernels are kept."""
    from torsh_gen.backends.python import conv_cache

    failing = conv_cache._COMPILE.replace('if sys.argv[5]:\n', 'if sys.argv[5]:\n    sys.exit(3)\n')
    assert failing != conv_cache._COMPILE
    report = _compile_elsewhere(_conv_silu(tmp_path), tmp_path / "a" / "tiny", tmp_path / "cache", failing)
    assert report["kernels"] >= 1 and report["seconds"] > 0 and report["numba"] is True
    assert list((tmp_path / "cache").glob("conv-*/__pycache__/_conv.*.nbi"))
    done = subprocess.run([sys.executable, "-c", _IMPORT, str(tmp_path / "a")], capture_output=True, text=True, check=True)
    assert done.stdout.split()[1] == "0"
