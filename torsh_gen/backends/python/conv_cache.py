"""Ship ``_conv.py`` with its numba kernels already compiled, from a per-user cache.

``_conv.py`` holds the kernel families a model uses (the same file for every model that
uses the same families, per torsh-gen version), and compiling its kernels takes seconds.
numba's cache (``__pycache__`` beside the source) is valid for a source file of the same
size and modification time, so the file is written with a fixed mtime, compiled once per
user in ``cache_root()/conv-<hash>`` (in subprocesses, so the compiler's own process keeps
its numba settings), and the compiled files are copied into each new artifact. Any failure
leaves the artifact to compile the kernels on first import, as numba does by itself.

The kernels compile in as many processes as there are cores (up to ``MAX_SHARDS``): each
process imports the module with only its share of the kernels compiled eagerly (the
others stay lazy and compile only if a kernel of its share calls them; loop bodies, which
``nb.cfunc`` would compile when declared, are left plain Python functions), and all write
into one ``__pycache__``. ``start`` launches them and returns at once, so the compiler
writes and compiles the rest of the artifact meanwhile; ``PendingBuild.finish`` waits.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from torsh_gen.backends.python.kernel_cache import KERNELS, cache_root, numba_tag

FILE = "_conv.py"
#: 2000-01-01T00:00:00Z: older numba versions key their cache index on the source's
#: (mtime, size), so ``_conv.py`` is written with this mtime.
FIXED_MTIME = 946684800

MAX_SHARDS = 4

# Run in a subprocess: argv[1] the source, argv[2] the kernels (comma-separated) this
# process compiles, argv[3] every kernel assigned to some process, argv[4] "1" in the
# first process, which also compiles any cached kernel the assignment missed (one that
# ``shards`` cannot see, e.g. declared inside a function): a kernel left lazy everywhere
# would have no cache and compile again on every import of the artifact. argv[5], when
# not empty, is the artifact's ``kernels.py``: this process then compiles it too (numba
# writes its cache beside it) and writes the seconds that took to argv[6]; exit code 3
# says that failed after the conv kernels were built.
_COMPILE = """
import importlib.util, sys
import numba
mine = set(sys.argv[2].split(","))
others = set(sys.argv[3].split(",")) - mine
first = sys.argv[4] == "1"
def ours(fn):
    return fn.__name__ in mine or (first and fn.__name__ not in others)
eager = numba.njit
def njit(*args, **options):
    if not args or hasattr(args[0], "__code__") or not options.get("cache"):
        return eager(*args, **options)
    return lambda fn: eager(*args, **options)(fn) if ours(fn) else eager(**options)(fn)
cfunc = numba.cfunc
def body(*args, **options):  # loop bodies (C callbacks) compile when declared: only ours
    return lambda fn: cfunc(*args, **options)(fn) if ours(fn) else fn
numba.njit = njit
numba.cfunc = body
spec = importlib.util.spec_from_file_location("_torsh_conv_build", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["_torsh_conv_build"] = mod
spec.loader.exec_module(mod)
if sys.argv[5]:
    import time
    numba.njit, numba.cfunc = eager, cfunc
    start = time.perf_counter()
    try:
        spec = importlib.util.spec_from_file_location("_torsh_gen_kernels_build", sys.argv[5])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_torsh_gen_kernels_build"] = mod
        spec.loader.exec_module(mod)
    except Exception:
        sys.exit(3)
    with open(sys.argv[6], "w") as f:
        f.write(repr(time.perf_counter() - start))
"""

#: seconds of CPU per kernel of ``kernels.py`` (fused elementwise loops), to balance the
#: shards when one of them compiles it (AMD EPYC Zen 3)
_PER_KERNEL = 0.3

# Seconds of CPU each kernel took to compile (AMD EPYC Zen 3, numba 0.68, one process; the
# conv kernels remeasured in the eighteenth session, benchmarks/NOTES.md), to
# balance the shards; kernels not listed count as an average loop body (C callback), a
# ``prange`` kernel (the generic depthwise one: numba finalizes the body four times) or a small
# driver. ``_launch`` calls ``_parallel_for``, so the two share a shard.
_COST = {
    "_parallel_for": 1.0, "_gemm_conv_body": 1.8, "_gather_panel_body": 1.4, "_gemm_conv_grid_body": 3.3,
    "_gemm_rows_body": 0.8, "depthwise": 4.0, "_depthwise3_body": 2.4, "depthwise3": 0.7,
    "_gemm_batched_body": 1.0, "_lrn_body": 0.5, "_max_pool2d_body": 2.2, "max_pool2d": 0.6,
    "_max_pool2d_w3s2_body": 1.3, "max_pool2d_w3s2": 0.2, "_copy_planes_body": 0.5, "copy_planes": 0.2,
    "_qgemm_vnni_body": 3.5, "qgemm_vnni_serial": 3.8, "_qgemm_plain_body": 1.2, "_q4_matmul_rows_body": 0.7,
    "qim2col": 1.1, "qrows": 0.9, "gemm_conv": 1.1, "gemm_rows": 0.9, "gemm_conv_grid": 0.6,
}
_WITH = {"_launch": "_parallel_for"}
# a module-level decorated kernel; the decorator may span lines (black splits long ones)
_KERNEL = re.compile(r"^@nb\.(?P<kind>njit|cfunc)\((?P<options>(?:[^@]|@(?!nb\.))*?)\)\n(?:\w+ )?def (?P<name>\w+)\(", re.M)


def shards(source: str, count: int, kernels: float = 0.0) -> list[list[str]]:
    """The cached, eagerly compiled kernels of ``source`` split into ``count`` groups of
    about equal compile time (longest first, each to the lightest group); ``kernels`` > 0
    adds the artifact's ``kernels.py`` (named ``KERNELS``) as one job of that cost."""
    costs = {KERNELS: kernels} if kernels > 0 else {}
    for m in _KERNEL.finditer(source):
        options = m["options"]
        if any(k in options for k in ("cache=True", "**_SERIAL", "**_CALLBACK", "**_OPTS")):
            parallel = "**_OPTS" in options or "parallel=True" in options
            costs[m["name"]] = _COST.get(m["name"], 4.0 if parallel else 1.0 if m["kind"] == "cfunc" else 0.5)
    groups: list[list[str]] = [[] for _ in range(max(1, min(count, len(costs))))]
    loads = [0.0] * len(groups)
    placed: dict[str, int] = {}
    for name in sorted(costs, key=lambda n: (n in _WITH, -costs[n], n)):
        i = placed.get(_WITH.get(name, ""), loads.index(min(loads)))
        groups[i].append(name)
        loads[i] += costs[name]
        placed[name] = i
    return [g for g in groups if g]


def _key(source: str) -> str:
    h = hashlib.sha256(source.encode())
    h.update(numba_tag().encode())
    h.update(os.environ.get("TORSH_GEN_NO_VNNI", "").encode())  # compiled code differs with it
    return h.hexdigest()[:32]


class PendingBuild:
    """The kernels of one ``_conv.py`` compiling in background processes (``start``), so the
    compiler can go on with the rest of the artifact; ``finish`` waits and installs them."""

    def __init__(self, folder: Path, shared: Path, source: str, kernels: int = 0) -> None:
        self.folder, self.shared = folder, shared
        self.tmp = shared.with_name(shared.name + f".tmp{os.getpid()}")
        self.procs: list[subprocess.Popen] = []
        self.names: set[str] = set()
        #: the process (index) compiling the artifact's ``kernels.py`` as well, if any
        self.kernels_proc: int | None = None
        #: seconds that took, once ``wait`` saw it succeed
        self.kernel_seconds: float | None = None
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            src = self.tmp / FILE
            src.write_text(source, encoding="utf-8")
            os.utime(src, (FIXED_MTIME, FIXED_MTIME))
            env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
            groups = shards(source, min(MAX_SHARDS, os.cpu_count() or 1), kernels * _PER_KERNEL) or [[]]
            self.kernels_proc = next((i for i, g in enumerate(groups) if KERNELS in g), None)
            groups = [[n for n in g if n != KERNELS] for g in groups]
            self.names = {n for g in groups for n in g}
            assigned = ",".join(n for g in groups for n in g)
            for i, g in enumerate(groups):
                extra = [str(folder / KERNELS), str(self.tmp / "kernels.seconds")] if i == self.kernels_proc else ["", ""]
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", _COMPILE, str(src), ",".join(g), assigned, str(int(i == 0)), *extra],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        except (OSError, subprocess.SubprocessError):
            self.cancel()

    def wait(self) -> bool:
        """Wait for the build and keep it in the shared cache; True when the cache has the
        kernels (built here, or by another process meanwhile)."""
        try:
            codes = [p.wait(timeout=600) for p in self.procs]
            if self.kernels_proc is not None and self.kernels_proc < len(codes) and codes[self.kernels_proc] == 0:
                self.kernel_seconds = _seconds(self.tmp / "kernels.seconds")
            built = {f.name.split("-")[0].removeprefix("_conv.") for f in (self.tmp / "__pycache__").glob("_conv.*.nbi")}
            conv_built = all(code in (0, 3) for code in codes)
            if self.procs and conv_built and self.names <= built and not (self.shared / "__pycache__").is_dir():
                os.replace(self.tmp, self.shared)
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            self.cancel()
        return (self.shared / "__pycache__").is_dir()

    def finish(self) -> bool:
        """``wait``, then copy the kernels into the artifact; True when copied."""
        return self.wait() and _copy(self.shared, self.folder)

    def cancel(self) -> None:
        """Stop the build and remove its files (an interrupted or failed compile)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []
        shutil.rmtree(self.tmp, ignore_errors=True)


def start(folder: Path, kernels: int = 0) -> PendingBuild | None:
    """Pin ``folder/_conv.py``'s mtime; copy in its compiled kernels when the shared cache
    has them (None), else start compiling them (``PendingBuild``).

    ``kernels``: how many kernels ``folder/kernels.py`` has, if the build should compile
    it as well (its ``kernel_seconds`` is set when that worked). One of the build's
    processes has numba started by then, which saves the compiler's own process importing
    and starting it (about a second of CPU on a cold build, where both cores are busy)."""
    path = folder / FILE
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    source = path.read_text(encoding="utf-8")
    shared = cache_root() / f"conv-{_key(source)}"
    if _copy(shared, folder):
        return None
    return PendingBuild(folder, shared, source, kernels)


def install(folder: Path) -> bool:
    """``start`` and ``finish`` in one call; True when the compiled kernels were copied."""
    pending = start(folder)
    return True if pending is None else pending.finish()


def _copy(shared: Path, folder: Path) -> bool:
    """Copy the compiled kernels in ``shared`` (if any) into ``folder/__pycache__``."""
    files = sorted((shared / "__pycache__").glob("_conv.*.nb*"))
    if not files:
        return False
    target = folder / "__pycache__"
    target.mkdir(exist_ok=True)
    for f in files:
        shutil.copy2(f, target / f.name)
    return True


def _seconds(path: Path) -> float | None:
    """The seconds a build process wrote to ``path``; None when it wrote none."""
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None


def _build(shared: Path, source: str) -> bool:
    """Compile the kernels of ``source`` into ``shared/__pycache__``; False on failure."""
    return PendingBuild(shared.parent, shared, source).wait()
