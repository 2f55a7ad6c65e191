"""``scaffold op``: names, bad input, determinism, plugin discovery, and the whole round trip.

The round trip generates a plugin, replaces the example math in both kernels (as a user
would), installs it with pip into a throwaway folder, and runs the real CLI in a
subprocess that finds the plugin only through its entry point: inspect, run and compile a
model using the op, then runs the compiled artifact and checks it numerically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.conftest import REPO
from torsh_gen.errors import InputError
from torsh_gen.scaffold.op import generate_op, op_names

CLI = [sys.executable, "-m", "torsh_gen.cli.main"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_names_derive_from_op_and_domain():
    n = op_names("MyGelu", "com.acme.ops")
    assert (n.op_type, n.domain, n.snake, n.package, n.distribution, n.spec_class) == (
        "MyGelu", "com.acme.ops", "my_gelu", "torsh_op_my_gelu", "torsh-op-my-gelu", "MyGeluOp")
    assert op_names("HTTPRelu2").snake == "http_relu2"
    assert op_names("class").spec_class == "classOp"  # keywords never become bare identifiers


@pytest.mark.parametrize("name", ['a"b', "__import__('os')", "x\ny", "9lives", "", "my-op", "é", "_hidden", "A" * 65])
def test_hostile_op_names_are_refused(name):
    with pytest.raises(InputError, match="op name .* is not usable"):
        op_names(name)


@pytest.mark.parametrize("domain", ["", "ai.onnx", "ai.torsh", "com..x", "com.x'y", "a b", ".com", "com.\n"])
def test_bad_domains_are_refused(domain):
    with pytest.raises(InputError, match="domain"):
        op_names("MyOp", domain)


def test_output_is_deterministic_and_formatted(tmp_path):
    generate_op("MyGelu", tmp_path / "a", domain="org.x")
    generate_op("MyGelu", tmp_path / "b", domain="org.x")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b
    assert sorted(a) == ["README.md", "pyproject.toml", "tests/test_my_gelu.py", "torsh_op_my_gelu/__init__.py",
                         "torsh_op_my_gelu/kernels.py", "torsh_op_my_gelu/reference.py", "torsh_op_my_gelu/spec.py"]
    ruff = subprocess.run([str(Path(sys.executable).with_name("ruff")), "check", "--no-cache", "--select", "E,F,W,I",
                           "--line-length", "100", "."], capture_output=True, text=True, cwd=tmp_path / "a")
    assert ruff.returncode == 0, ruff.stdout


def test_existing_folder_needs_force(tmp_path):
    out = tmp_path / "op"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = subprocess.run([*CLI, "scaffold", "op", "MyGelu", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {out} already exists; choose another folder or pass --force to replace it"]
    assert (out / "keep.txt").read_text() == "mine"
    r = subprocess.run([*CLI, "scaffold", "op", "MyGelu", "-o", str(out), "--force"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (out / "keep.txt").exists() and (out / "torsh_op_my_gelu" / "spec.py").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_cli_hostile_name_is_one_line_error(tmp_path):
    r = subprocess.run([*CLI, "scaffold", "op", "x'); import os #", "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "is not usable" in r.stderr
    assert not (tmp_path / "o").exists()


def _dist_info(site: Path, dist: str, entry: str) -> None:
    """A minimal installed distribution declaring one torsh_gen.ops entry point."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[torsh_gen.ops]\n{dist} = {entry}\n")


def test_broken_plugin_warns_in_one_line_and_others_still_work(tmp_path):
    site = tmp_path / "site"
    _dist_info(site, "broken_op", "broken_op_pkg.spec")
    (site / "broken_op_pkg").mkdir()
    (site / "broken_op_pkg" / "__init__.py").write_text("")
    (site / "broken_op_pkg" / "spec.py").write_text("raise RuntimeError('kernel library missing\\nsecond line')\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run([*CLI, "ops", "--format", "json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert any(row["op"] == "Relu" for row in json.loads(r.stdout))
    warning = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert warning == ["torsh-gen: op plugin 'broken_op' (broken_op_pkg.spec) failed to load and is skipped: "
                       "RuntimeError: kernel library missing"]


# ----------------------------------------------------------------------------- round trip
USER_REFERENCE = '''
def compute(x: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    """Softsign with a slope: x / (1 + alpha |x|)."""
    x = np.asarray(x)
    xd = x.astype(np.float64)
    return np.asarray(xd / (1.0 + alpha * np.abs(xd)), dtype=x.dtype)
'''
USER_KERNEL_BODY = "        out[i] = v / (1.0 + alpha * abs(v))\n"


def _fill_in_kernels(pkg: Path) -> None:
    """Replace the example math in both kernels, as the generated README tells users to."""
    ref = pkg / "reference.py"
    text = ref.read_text()
    start = text.index("def compute(")
    ref.write_text(text[:start] + textwrap.dedent(USER_REFERENCE).lstrip())
    kern = pkg / "kernels.py"
    text = kern.read_text()
    example = "        out[i] = v / (1.0 + np.exp(-alpha * v))\n"
    assert example in text
    kern.write_text(text.replace(example, USER_KERNEL_BODY))


def _model(path: Path, domain: str) -> None:
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"], name="scale"),
        helper.make_node("Softsign2", ["x2"], ["s"], domain=domain, name="custom", alpha=0.5),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(nodes, "uses_plugin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def _expected(x: np.ndarray) -> np.ndarray:
    x2 = x.astype(np.float64) * 2
    return np.maximum(x2 / (1 + 0.5 * np.abs(x2)), 0).astype(np.float32)


def test_plugin_round_trip_install_inspect_run_compile(tmp_path):
    """Generate, fill in, pip-install; then the CLI finds the op by entry point only."""
    domain = "com.acme"
    src = tmp_path / "plugin"
    generate_op("Softsign2", src, domain=domain)
    _fill_in_kernels(src / "torsh_op_softsign2")
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert pip.returncode == 0, pip.stderr
    assert list(site.glob("torsh_op_softsign2-0.1.0.dist-info/entry_points.txt"))

    model = tmp_path / "uses_plugin.onnx"
    _model(model, domain)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32) * 3
    np.savez(tmp_path / "in.npz", x=x)
    env = {**os.environ, "PYTHONPATH": str(site), "TORSH_GEN_CACHE_DIR": str(tmp_path / "cache")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
        assert r.returncode == 0, f"{args}: {r.stderr}"
        return r

    # without the plugin the op is unknown; with it, every command handles the model
    bare = subprocess.run([*CLI, "run", str(model)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bare.returncode == 3 and "'Softsign2' in domain 'com.acme' is not supported" in bare.stderr
    shown = json.loads(cli("inspect", str(model), "--format", "json").stdout)
    custom = next(n for n in shown["nodes"] if n["name"] == "custom")
    assert custom["outputs"] == [{"name": "s", "dtype": "float", "shape": ["batch", 6]}]  # the plugin's rule
    cli("run", str(model), "--inputs", "in.npz", "-o", "out.npz")
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_allclose(z["y"], _expected(x), rtol=1e-6, atol=1e-7)
    cli("compile", str(model), "-o", "uses_plugin_art")
    art = tmp_path / "uses_plugin_art"
    assert "from torsh_op_softsign2.kernels import compute" in (art / "model.py").read_text()

    # the artifact runs in a process without torsh_gen importable: only numpy, numba, the plugin
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.modules["torsh_gen"] = None  # importing torsh_gen now fails
        sys.path.insert(0, {str(tmp_path)!r})
        import uses_plugin_art
        x = np.load("in.npz")["x"]
        y = uses_plugin_art.run(x=x)["y"]
        assert uses_plugin_art.run(x=x)["y"].tobytes() == y.tobytes()
        np.save("art_out.npy", y)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "art_out.npy"), _expected(x), rtol=1e-6, atol=1e-7)


def test_generated_plugin_own_tests_pass(tmp_path):
    """The generated package's own pytest suite passes as generated."""
    generate_op("MyGelu", tmp_path / "plugin")
    env = {**os.environ, "TORSH_GEN_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path / "plugin",
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "11 passed" in r.stdout
