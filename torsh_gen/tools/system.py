"""What this machine offers torsh-gen: CPU, SIMD features, memory, GPUs, toolchains, advice.

``system_report()`` gathers it as plain data for ``torsh-gen system``. Every probe is
defensive: a missing file, command or package becomes "not found", never an error, and
every subprocess has a short timeout (run in parallel), so the command is quick and cannot
hang on a broken tool. SIMD features are LLVM's view of the host (what the native
backend's ``--target host`` compiles for), not the kernel's flags.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds any probe command may take.
PROBE_TIMEOUT = 5.0

#: Display name → LLVM feature name, per architecture.
SIMD_FEATURES = {
    "x86_64": {
        "AVX2": "avx2",
        "FMA": "fma",
        "AVX-512F": "avx512f",
        "AVX-512BW": "avx512bw",
        "AVX-512VL": "avx512vl",
        "AVX-512VNNI": "avx512vnni",
        "AVX-512BF16": "avx512bf16",
    },
    "aarch64": {"NEON": "neon", "SVE": "sve", "DOTPROD": "dotprod", "BF16": "bf16", "I8MM": "i8mm"},
}


@dataclass(frozen=True)
class Probe:
    """One toolchain piece: a command on PATH or a Python package."""

    name: str
    kind: str  # "command" or "python"
    used_for: str
    dists: tuple[str, ...] = ()  # distribution names to ask importlib.metadata (python)
    aliases: tuple[str, ...] = ()  # other command names (command)


PROBES: tuple[Probe, ...] = (
    Probe("llvmlite", "python", "native targets (LLVM code generation)", ("llvmlite",)),
    Probe("numba", "python", "cpu target (compiled kernels)", ("numba",)),
    Probe(
        "onnxruntime",
        "python",
        "reference for validate, run --check, tests",
        ("onnxruntime", "onnxruntime-gpu"),
    ),
    Probe("gcc", "command", "x86_64-linux, host (links the shared library)"),
    Probe("wasm-ld", "command", "wasm32 (links model.wasm)"),
    Probe("node", "command", "wasm32 (runs the Node driver and tests)"),
    Probe("wasmtime", "python", "wasm32 (runs model.wasm in tests)", ("wasmtime",)),
    Probe(
        "chromium",
        "command",
        "wasm32 (browser demo tests)",
        aliases=("chromium-browser", "google-chrome"),
    ),
    Probe("aarch64-linux-gnu-gcc", "command", "aarch64-linux, android-arm64 (cross-linking)"),
    Probe("qemu-aarch64", "command", "aarch64-linux, android-arm64 (runs aarch64 code here)"),
    Probe("ptxas", "command", "CUDA: NVIDIA PTX assembler"),
    Probe("nvcc", "command", "CUDA: NVIDIA compiler driver"),
    Probe("tvm", "python", "Apache TVM", ("apache-tvm", "tvm", "mlc-ai-nightly")),
)


def system_report() -> dict[str, Any]:
    """Everything ``torsh-gen system`` shows, as plain data (JSON/YAML-ready)."""
    from torsh_gen.tools.targets import target_rows

    with ThreadPoolExecutor(max_workers=8) as pool:
        gpus = pool.submit(cuda_devices)
        tools = list(pool.map(probe_tool, PROBES))
        cpu = cpu_info()
        simd = simd_features()
    report = {
        "cpu": cpu,
        "simd": simd,
        "memory": memory_info(),
        "cuda": gpus.result(),
        "toolchains": tools,
        "targets": [
            {
                "name": r["name"],
                "installed": r["installed"],
                "missing": r["missing"],
                "apt": r["apt"],
            }
            for r in target_rows()
        ],
    }
    report["suggestions"] = suggestions(report)
    return report


def cpu_info() -> dict[str, Any]:
    """CPU model, architecture, LLVM's name for it and triple, usable cores."""
    from torsh_gen.backends.llvm.targets import cpu_count

    info: dict[str, Any] = {
        "model": _cpuinfo_model() or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "llvm_cpu": "",
        "triple": "",
        "cores": cpu_count(),
        "logical_cpus": os.cpu_count() or 1,
    }
    try:
        import llvmlite.binding as llvm

        from torsh_gen.backends.llvm.targets import init_llvm

        init_llvm()
        info["llvm_cpu"] = llvm.get_host_cpu_name()
        info["triple"] = llvm.get_process_triple()
    except Exception:  # llvmlite missing or broken: the rest of the report still stands
        pass
    return info


def _cpuinfo_model() -> str:
    """``model name`` (x86) or the implementer/part pair (Arm) from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    if fields.get("model name"):
        return fields["model name"]
    if "cpu implementer" in fields:
        return f"Arm implementer {fields['cpu implementer']} part {fields.get('cpu part', '?')}"
    return fields.get("hardware", "")


def simd_features() -> dict[str, bool]:
    """The SIMD features LLVM sees on this CPU, by display name ({} without llvmlite)."""
    arch = "aarch64" if platform.machine().lower() in ("aarch64", "arm64") else platform.machine()
    names = SIMD_FEATURES.get(arch)
    if names is None:
        return {}
    try:
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features()
    except Exception:
        return {}
    return {label: bool(feats.get(name, False)) for label, name in names.items()}


def memory_info() -> dict[str, int]:
    """Total and available memory in bytes (/proc/meminfo; total from sysconf elsewhere)."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if key in ("MemTotal", "MemAvailable") and parts and parts[0].isdigit():
                out["total_bytes" if key == "MemTotal" else "available_bytes"] = (
                    int(parts[0]) * 1024
                )
    except OSError:
        pass
    if "total_bytes" not in out:
        try:
            out["total_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
    return out


def cuda_devices() -> dict[str, Any]:
    """CUDA devices from nvidia-smi (name, compute capability, driver) and a status line."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"devices": [], "status": "none (nvidia-smi not on PATH)"}
    query = [smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
    ok, text = _run(query)
    if not ok:
        return {"devices": [], "status": f"none (nvidia-smi failed: {text[:200]})"}
    devices = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            devices.append({"name": parts[0], "compute_capability": parts[1], "driver": parts[2]})
    return {"devices": devices, "status": f"{len(devices)} device(s)" if devices else "none"}


def probe_tool(probe: Probe) -> dict[str, Any]:
    """Whether ``probe`` is installed here, where, and its version."""
    row = {
        "name": probe.name,
        "kind": probe.kind,
        "used_for": probe.used_for,
        "installed": False,
        "version": "",
        "path": "",
    }
    if probe.kind == "python":
        version = _dist_version(probe.dists)
        spec = _find_spec(probe.name)
        if version or spec is not None:
            row.update(installed=True, version=version, path=str(spec.origin or "") if spec else "")
        return row
    path = next((p for p in map(shutil.which, (probe.name, *probe.aliases)) if p), None)
    if path is None:
        return row
    ok, text = _run([path, "--version"])
    row.update(installed=True, path=path, version=_version_in(text) if ok else "")
    return row


def _dist_version(dists: tuple[str, ...]) -> str:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def _find_spec(module: str) -> Any:
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


_VERSION = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)*)")


def _version_in(text: str) -> str:
    """The first dotted version number in a tool's ``--version`` output."""
    m = _VERSION.search(text)
    return m.group(1) if m else ""


def _run(cmd: list[str]) -> tuple[bool, str]:
    """(exit status 0, stdout+stderr) of a probe command; never raises, never hangs."""
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {PROBE_TIMEOUT:g} s"
    except OSError as e:
        return False, str(e)
    return done.returncode == 0, (done.stdout or "") + (done.stderr or "")


def suggestions(report: dict[str, Any]) -> list[str]:
    """Concrete advice from the report: threads, the target that fits, precision, installs."""
    cores = report["cpu"]["cores"]
    out = [
        f"threads: {cores} (the cores this process may use); "
        "more threads than cores only adds contention"
    ]
    out += _target_advice(report)
    out += _precision_advice(report)
    for t in report["targets"]:
        if not t["installed"] and t["missing"]:
            out.append(
                f"{t['name']}: missing {', '.join(t['missing'])}; run `make toolchains` "
                f"(Debian packages: {' '.join(t['apt']) or 'see docs/targets.md'})"
            )
    return out


def _target_advice(report: dict[str, Any]) -> list[str]:
    """Which native target fits this CPU: the portable row or ``--target host``."""
    simd, arch = report["simd"], report["cpu"]["arch"].lower()
    name = report["cpu"]["llvm_cpu"] or "this CPU"
    if arch in ("x86_64", "amd64"):
        if simd.get("AVX-512F"):
            return [
                "target: --target x86_64-linux runs its AVX-512 build (x86-64-v4, 512-bit "
                "vectors) here and its AVX2 build on other x86_64 machines; --target host "
                f"compiles for {name} alone (needs a CPU with the same features)"
            ]
        if simd.get("AVX2") and simd.get("FMA"):
            return [
                f"target: --target x86_64-linux (x86-64-v3: AVX2, FMA) fits {name} and is "
                "portable; --target host adds this CPU's remaining features"
            ]
        return [
            f"target: {name} lacks AVX2/FMA, which x86_64-linux (x86-64-v3) requires: use "
            "--target host (or cpu) here"
        ]
    if arch in ("aarch64", "arm64"):
        sve = " with SVE" if simd.get("SVE") else ""
        return [
            f"target: --target host or aarch64-linux run natively on {name}{sve} (128-bit NEON)"
        ]
    return [
        "target: native targets build for x86_64 and aarch64; on this machine use --target cpu "
        "(and cross-compile for x86_64-linux, aarch64-linux, android-arm64 or wasm32)"
    ]


def _precision_advice(report: dict[str, Any]) -> list[str]:
    simd, out = report["simd"], []
    if simd.get("AVX-512VNNI") or simd.get("DOTPROD"):
        which = "AVX-512 VNNI" if simd.get("AVX-512VNNI") else "SDOT/UDOT"
        out.append(
            f"precision: int8 dot products ({which}) are native here: int8 models "
            "(`torsh-gen quantize`) suit this CPU"
        )
    if simd.get("AVX-512BF16") or simd.get("BF16"):
        out.append(
            "precision: bf16 arithmetic is native here: try `torsh-gen optimize --precision bf16`"
        )
    elif simd:
        out.append(
            "precision: no bf16 instructions on this CPU: float32 (or int8) is the fast choice"
        )
    if report["cuda"]["devices"]:
        out.append(
            "precision: fp16 on the CUDA device(s) (tensor cores from compute capability 7.0)"
        )
    return out
