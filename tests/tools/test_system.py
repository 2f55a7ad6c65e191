"""``torsh_gen.tools.system`` and ``tools.targets``: real probes, missing tools, advice."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from torsh_gen.backends.llvm.targets import target_names
from torsh_gen.tools import system
from torsh_gen.tools.targets import target_rows

KEYS = {"cpu", "simd", "memory", "cuda", "toolchains", "targets", "suggestions"}


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_report_describes_this_machine() -> None:
    report = system.system_report()
    assert set(report) == KEYS
    json.dumps(report)  # plain data
    cpu = report["cpu"]
    assert cpu["cores"] == len(os.sched_getaffinity(0)) and cpu["logical_cpus"] >= cpu["cores"]
    assert cpu["model"] and cpu["arch"]
    assert report["memory"]["total_bytes"] > report["memory"].get("available_bytes", 0) > 0
    assert [t["name"] for t in report["toolchains"]] == [p.name for p in system.PROBES]
    assert {t["name"] for t in report["targets"]} == {"cpu", *target_names()}
    assert report["suggestions"][0].startswith(f"threads: {cpu['cores']} ")


def test_simd_features_are_llvms_view() -> None:
    import llvmlite.binding as llvm

    simd = system.simd_features()
    feats = llvm.get_host_cpu_features()
    arch = (
        "aarch64"
        if system.platform.machine() in ("aarch64", "arm64")
        else system.platform.machine()
    )
    if arch not in system.SIMD_FEATURES:
        pytest.skip(f"no SIMD table for {arch}")
    assert set(simd) == set(system.SIMD_FEATURES[arch])
    for label, name in system.SIMD_FEATURES[arch].items():
        assert simd[label] == bool(feats.get(name, False))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_installed_command_has_its_version() -> None:
    row = system.probe_tool(system.Probe("gcc", "command", "x"))
    assert row["installed"] and row["path"] == shutil.which("gcc")
    assert row["version"] and row["version"][0].isdigit() and "." in row["version"]


def test_python_package_versions() -> None:
    import llvmlite

    row = system.probe_tool(system.PROBES[0])
    assert row["name"] == "llvmlite" and row["installed"] and row["version"] == llvmlite.__version__
    absent = system.probe_tool(
        system.Probe("no_such_module_xyz", "python", "x", ("no-such-dist-xyz",))
    )
    assert not absent["installed"] and absent["version"] == ""


def test_empty_path_shows_everything_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    report = system.system_report()
    commands = [t for t in report["toolchains"] if t["kind"] == "command"]
    assert commands and not any(t["installed"] for t in commands)
    assert report["cuda"] == {"devices": [], "status": "none (nvidia-smi not on PATH)"}
    wasm = next(t for t in report["targets"] if t["name"] == "wasm32")
    assert not wasm["installed"] and wasm["missing"] == ["wasm-ld", "node"]
    advice = [s for s in report["suggestions"] if s.startswith("wasm32:")]
    assert advice == ["wasm32: missing wasm-ld, node; run `make toolchains` (Debian packages: lld)"]


def test_hanging_tool_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path, "node", "sleep 30")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(system, "PROBE_TIMEOUT", 0.5)
    start = time.perf_counter()
    row = system.probe_tool(next(p for p in system.PROBES if p.name == "node"))
    assert time.perf_counter() - start < 5
    assert row["installed"] and row["version"] == ""


def test_cuda_devices_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(
        tmp_path,
        "nvidia-smi",
        'echo "NVIDIA H100 80GB HBM3, 9.0, 550.54.15"\necho "Tesla T4, 7.5, 550.54.15"',
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    cuda = system.cuda_devices()
    assert cuda["status"] == "2 device(s)"
    assert cuda["devices"][0] == {
        "name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "driver": "550.54.15",
    }
    report = {
        "cpu": {"cores": 4, "arch": "x86_64", "llvm_cpu": "znver4"},
        "simd": {},
        "cuda": cuda,
        "targets": [],
    }
    assert any("fp16" in s for s in system.suggestions(report))


def test_failing_nvidia_smi_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path, "nvidia-smi", 'echo "NVIDIA-SMI has failed: no driver" >&2; exit 9')
    monkeypatch.setenv("PATH", str(tmp_path))
    cuda = system.cuda_devices()
    assert cuda["devices"] == [] and cuda["status"].startswith(
        "none (nvidia-smi failed: NVIDIA-SMI has failed"
    )


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("Debian LLD 14.0.6 (compatible with GNU linkers)", "14.0.6"),
        ("v20.20.2", "20.20.2"),
        (
            "/usr/bin/chromium: 9: [: 25276514304: unexpected operator\n"
            "Chromium 150.0.7871.100 built on Debian",
            "150.0.7871.100",
        ),
        (
            "ptxas: NVIDIA (R) Ptx optimizing assembler\nCopyright (c) 2005-2025\n"
            "Cuda compilation tools, release 13.0, V13.0.88",
            "13.0",
        ),
        ("aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0", "12.2.0"),
        ("no version here", ""),
    ],
)
def test_version_parsing(text: str, version: str) -> None:
    assert system._version_in(text) == version


def _advice(arch: str, simd: dict[str, bool]) -> list[str]:
    report = {
        "cpu": {"cores": 8, "arch": arch, "llvm_cpu": "somecpu"},
        "simd": simd,
        "cuda": {"devices": []},
        "targets": [],
    }
    return system.suggestions(report)


def test_target_and_precision_advice() -> None:
    avx512 = _advice(
        "x86_64",
        {"AVX2": True, "FMA": True, "AVX-512F": True, "AVX-512VNNI": True, "AVX-512BF16": True},
    )
    assert any("--target host" in s and "512-bit" in s and "x86_64-linux" in s for s in avx512)
    assert any("int8" in s and "VNNI" in s for s in avx512) and any(
        "bf16" in s and "native" in s for s in avx512
    )
    avx2 = _advice("x86_64", {"AVX2": True, "FMA": True, "AVX-512F": False})
    assert any(s.startswith("target: --target x86_64-linux") for s in avx2)
    assert not any("int8 dot" in s for s in avx2) and any("no bf16" in s for s in avx2)
    old = _advice("x86_64", {"AVX2": False, "FMA": False})
    assert any("lacks AVX2" in s and "--target host" in s for s in old)
    arm = _advice("aarch64", {"NEON": True, "SVE": True, "DOTPROD": True})
    assert any("aarch64-linux" in s and "SVE" in s for s in arm) and any("SDOT" in s for s in arm)


def test_target_rows_list_every_target() -> None:
    rows = target_rows()
    names = [r["name"] for r in rows]
    tomls = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "targets").glob("*.toml"))
    assert names == ["cpu", *tomls, "host"]
    for r in rows:
        assert {
            "description",
            "triple",
            "vector_bits",
            "packaging",
            "needs",
            "apt",
            "missing",
            "installed",
        } <= set(r)
    wasm = rows[names.index("wasm32")]
    assert (
        wasm["triple"].startswith("wasm32")
        and wasm["vector_bits"] == 128
        and wasm["packaging"] == "wasm"
    )
    assert "wasm-ld" in wasm["needs"] and "lld" in wasm["apt"]
    assert rows[0]["packaging"] == "python" and rows[0]["installed"]


def test_target_rows_with_empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    rows = {r["name"]: r for r in target_rows()}
    assert rows["cpu"]["installed"]
    for name in ("aarch64-linux", "android-arm64", "wasm32", "x86_64-linux", "host"):
        assert not rows[name]["installed"] and rows[name]["missing"] == rows[name]["needs"]
