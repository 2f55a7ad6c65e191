"""Targets as data: ``targets/<name>.toml`` read into ``TargetSpec``, plus ``host``.

A target row says the LLVM triple, CPU and features, the vector width the schedules use,
the thread count, the packaging (``sharedlib``, ``android``, ``wasm``) and the toolchain
it needs. ``host`` is detected: LLVM's own view of this machine's CPU and features.

A ``sharedlib`` target may also list ``[[variants]]``: further builds of the same graph
for newer CPUs of the same architecture (x86_64-linux: an AVX-512 build beside its AVX2
baseline). The library holds them all and picks, when a model is created, the first
variant whose ``requires`` (GCC ``__builtin_cpu_supports`` names) this CPU has, else the
baseline. That is how one portable x86_64 library runs at AVX-512 speed where it can.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources

from torsh_gen.errors import InputError

_CPU_FEATURE = re.compile(r"[a-z0-9][a-z0-9.\-]*")


@dataclass(frozen=True)
class Variant:
    """A further build of a sharedlib target for CPUs with ``requires`` (checked at create)."""

    cpu: str
    features: str
    vector_bits: int
    accumulators: int
    requires: tuple[str, ...]

    @property
    def name(self) -> str:
        """The build's name in the library (its CPU name, e.g. ``x86-64-v4``)."""
        return self.cpu


def _requires(values: list, where: str) -> tuple[str, ...]:
    """CPU feature names checked with ``__builtin_cpu_supports`` (validated: they reach C)."""
    out = tuple(str(v) for v in values)
    bad = [v for v in out if not _CPU_FEATURE.fullmatch(v)]
    if bad:
        raise InputError(f"{where}: CPU feature names must be lowercase GCC names, got {bad}")
    return out


@dataclass(frozen=True)
class TargetSpec:
    """One hardware target of the llvm backend."""

    name: str
    description: str
    triple: str
    cpu: str
    features: str
    vector_bits: int
    threads: int
    dtypes: tuple[str, ...]
    packaging: str
    runs_here: bool
    cc: str = ""
    linker: str = ""
    needs: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    emulator: tuple[str, ...] = ()
    #: Vector registers a convolution tile may keep as accumulators (0: by vector width).
    accumulators: int = 0
    #: The same for pointwise (1x1) convolutions (0: as ``accumulators``).
    pointwise_accumulators: int = 0
    #: Whether convolutions may vectorize across output channels (None: by vector width).
    channel_tiles: bool | None = None
    #: Accumulators of a direct convolution's row tile when its taps along a kernel row run
    #: as a loop LLVM keeps rolled (0: taps unrolled; ``Schedule.rolled_tap_accumulators``).
    rolled_tap_accumulators: int = 0
    #: Vector registers a direct convolution's row tile spans along a row (0: two;
    #: ``Schedule.row_vectors``).
    row_vectors: int = 0
    #: Vector registers a pointwise tile spans along its long row of positions (0: four;
    #: ``Schedule.long_row_registers``).
    long_row_registers: int = 0
    #: Whether LLVM may inline the kernels into the graph's entry point (wasm32: no, V8
    #: compiles huge functions with a worse register allocator).
    inline_kernels: bool = True
    #: CPU features the baseline build needs (checked at create; empty: not checked).
    requires: tuple[str, ...] = ()
    #: Further builds for newer CPUs, picked at create (sharedlib packaging only).
    variants: tuple[Variant, ...] = ()
    #: The backend module that builds it (``torsh_gen.backends.<backend>``).
    backend: str = "llvm"
    extra: dict = field(default_factory=dict)

    @property
    def variant_name(self) -> str:
        """The baseline build's name in a library with variants (its CPU name)."""
        return self.cpu

    def for_variant(self, variant: Variant) -> TargetSpec:
        """This target with the variant's CPU, features, vector width and tile budget; the
        other schedule data back at its defaults (it was tuned for the baseline's width)."""
        defaults = {f.name: f.default for f in fields(TargetSpec) if f.name in _SCHEDULE_FIELDS}
        return replace(
            self,
            **{**defaults, "accumulators": variant.accumulators},
            cpu=variant.cpu,
            features=variant.features,
            vector_bits=variant.vector_bits,
            requires=variant.requires,
            variants=(),
        )

    @property
    def vector_lanes(self) -> int:
        """float32 lanes of one vector register."""
        return max(self.vector_bits // 32, 1)

    def missing_tools(self) -> list[str]:
        """Commands this target needs that are not on PATH."""
        return [t for t in self.needs if shutil.which(t) is None]

    def require_toolchain(self) -> None:
        """Raise a one-line error naming the packages and ``make toolchains`` when tools are missing."""
        missing = self.missing_tools()
        if missing:
            raise InputError(
                f"target {self.name} needs {', '.join(missing)} (Debian packages: {' '.join(self.apt)}); "
                f"run `make toolchains` to install them"
            )


def target_names() -> list[str]:
    """Names of the described targets plus ``host``."""
    files = resources.files("torsh_gen.targets")
    names = sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))
    return names + ["host"]


#: Short names of targets: ``--target cuda`` is the sm_80 build.
ALIASES = {"cuda": "cuda-sm80"}


def load_target(name: str) -> TargetSpec:
    """The target called ``name``; InputError listing the known ones."""
    if name == "host":
        return host_target()
    name = ALIASES.get(name, name)
    path = resources.files("torsh_gen.targets").joinpath(f"{name}.toml")
    if not name.replace("-", "").replace("_", "").isalnum() or not path.is_file():
        raise InputError(f"unknown target '{name}'; known targets: cpu, {', '.join(target_names() + sorted(ALIASES))}")
    data = tomllib.loads(path.read_text())
    tool = data.get("toolchain", {})
    return TargetSpec(
        name=data["name"], description=data["description"], triple=data["triple"], cpu=data["cpu"],
        features=data.get("features", ""), vector_bits=int(data["vector_bits"]), threads=int(data.get("threads", 0)),
        dtypes=tuple(data.get("dtypes", ["f32"])), packaging=data["packaging"], runs_here=bool(data.get("runs_here", False)),
        cc=tool.get("cc", ""), linker=tool.get("linker", ""), needs=tuple(tool.get("needs", [])),
        apt=tuple(tool.get("apt", [])), emulator=tuple(data.get("emulator", [])),
        accumulators=int(data.get("accumulator_registers", 0)),
        pointwise_accumulators=int(data.get("pointwise_accumulator_registers", 0)),
        channel_tiles=None if "conv_channel_tiles" not in data else bool(data["conv_channel_tiles"]),
        rolled_tap_accumulators=int(data.get("conv_rolled_tap_accumulators", 0)),
        row_vectors=int(data.get("conv_row_vectors", 0)),
        long_row_registers=int(data.get("pointwise_row_registers", 0)),
        inline_kernels=bool(data.get("inline_kernels", True)),
        backend=str(data.get("backend", "llvm")),
        requires=_requires(data.get("requires", []), f"target {name}"),
        variants=tuple(
            Variant(
                cpu=_requires([v["cpu"]], f"target {name}, variant cpu")[0], features=str(v.get("features", "")),
                vector_bits=int(v["vector_bits"]), accumulators=int(v.get("accumulator_registers", 0)),
                requires=_requires(v["requires"], f"target {name}, variant {v['cpu']}"),
            )
            for v in data.get("variants", [])
        ),
    )


def host_target() -> TargetSpec:
    """This machine, as LLVM sees it (CPU name and feature string); x86_64 or aarch64 Linux."""
    import llvmlite.binding as llvm

    init_llvm()
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    feats = llvm.get_host_cpu_features()
    features = feats.flatten() if hasattr(feats, "flatten") else str(feats)
    arch = triple.split("-")[0]
    if arch not in ("x86_64", "aarch64"):
        raise InputError(f"--target host supports x86_64 and aarch64 Linux; this machine is {triple}")
    bits = 128
    if arch == "x86_64":
        enabled = set(f[1:] for f in features.split(",") if f.startswith("+"))
        bits = 512 if "avx512f" in enabled else 256 if "avx2" in enabled else 128
    base = load_target("x86_64-linux" if arch == "x86_64" else "aarch64-linux")
    # A host with the baseline's vector width tiles as that build (an AVX2 host as
    # x86_64-linux's AVX2 baseline); a wider one (AVX-512) with the defaults, as the variant.
    tuning = _SCHEDULE_FIELDS if base.vector_bits == bits else ()
    return TargetSpec(
        name="host", description=f"this machine ({cpu}, {triple})", triple=triple, cpu=cpu, features=features,
        vector_bits=bits, threads=0, dtypes=base.dtypes, packaging="sharedlib", runs_here=True, cc="gcc",
        needs=("gcc",), apt=("gcc",), **{f: getattr(base, f) for f in tuning},
    )


#: TargetSpec fields that carry schedule data (tile budgets and shapes).
_SCHEDULE_FIELDS = (
    "accumulators", "pointwise_accumulators", "channel_tiles", "rolled_tap_accumulators", "row_vectors",
    "long_row_registers",
)


_INITIALIZED = False


def init_llvm() -> None:
    """Initialize LLVM's targets and printers once (``llvm.initialize()`` is deprecated)."""
    global _INITIALIZED
    if _INITIALIZED:
        return
    import llvmlite.binding as llvm

    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    _INITIALIZED = True


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
