"""Ship ``_conv.py`` with its numba kernels already compiled, from a per-user cache.

``_conv.py`` is the same file for every artifact of one torsh-gen version, and compiling
its parallel kernels takes several seconds. numba's cache (``__pycache__`` beside the
source) is valid for a source file of the same size and modification time, so the file is
written with a fixed mtime, compiled once per user in ``cache_root()/conv-<hash>`` (in a
subprocess, so the compiler's own process keeps its numba settings), and the compiled
files are copied into each new artifact. Any failure leaves the artifact to compile the
kernels on first import, as numba does by itself.

The kernels compile in as many processes as there are cores (up to ``MAX_SHARDS``): each
process imports the module with only its share of the kernels compiled eagerly (the
others stay lazy and compile only if a kernel of its share calls them), and all write into
one ``__pycache__``. numba's fixed cost per parallel kernel (~2 s) and LLVM's work on the
inlined register tiles then spread over the cores instead of running one after another.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from torsh_gen.backends.python.kernel_cache import cache_root, numba_tag

FILE = "_conv.py"
#: 2000-01-01T00:00:00Z: older numba versions key their cache index on the source's
#: (mtime, size), so ``_conv.py`` is written with this mtime.
FIXED_MTIME = 946684800

MAX_SHARDS = 4

# Run in a subprocess: argv[1] the source, argv[2] the kernels (comma-separated) this
# process compiles, argv[3] every kernel assigned to some process, argv[4] "1" in the
# first process, which also compiles any cached kernel the assignment missed (one that
# ``shards`` cannot see, e.g. declared inside a function): a kernel left lazy everywhere
# would have no cache and compile again on every import of the artifact.
_COMPILE = """
import importlib.util, sys
import numba
mine = set(sys.argv[2].split(","))
others = set(sys.argv[3].split(",")) - mine
first = sys.argv[4] == "1"
eager = numba.njit
def njit(*args, **options):
    if not args or hasattr(args[0], "__code__") or not options.get("cache"):
        return eager(*args, **options)
    def declare(fn):
        name = fn.__name__
        if name in mine or (first and name not in others):
            return eager(*args, **options)(fn)
        return eager(**options)(fn)
    return declare
numba.njit = njit
spec = importlib.util.spec_from_file_location("_torsh_conv_build", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["_torsh_conv_build"] = mod
spec.loader.exec_module(mod)
"""

# Seconds of CPU each kernel took to compile (Xeon 2.5 GHz, numba 0.68), to balance the
# shards; kernels not listed count as a parallel one of average cost.
_COST = {"gemm_conv": 10.0, "gemm_conv_grid": 6.5, "gemm_rows": 5.5, "gemm_batched": 4.5,
         "max_pool2d": 4.5, "depthwise": 4.0, "depthwise3": 2.5, "lrn": 2.0}
_KERNEL = re.compile(r"^@nb\.njit\((?P<options>.+)\)\s*\ndef (?P<name>\w+)\(", re.M)


def shards(source: str, count: int) -> list[list[str]]:
    """The cached, eagerly compiled kernels of ``source`` split into ``count`` groups of
    about equal compile time (longest first, each to the lightest group)."""
    costs = {}
    for m in _KERNEL.finditer(source):
        options = m["options"]
        if "cache=True" in options or "**_OPTS" in options:
            parallel = "**_OPTS" in options or "parallel=True" in options
            costs[m["name"]] = _COST.get(m["name"], 4.0 if parallel else 0.5)
    groups: list[list[str]] = [[] for _ in range(max(1, min(count, len(costs))))]
    loads = [0.0] * len(groups)
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        i = loads.index(min(loads))
        groups[i].append(name)
        loads[i] += costs[name]
    return [g for g in groups if g]


def _key(source: str) -> str:
    h = hashlib.sha256(source.encode())
    h.update(numba_tag().encode())
    h.update(os.environ.get("TORSH_GEN_NO_VNNI", "").encode())  # compiled code differs with it
    return h.hexdigest()[:32]


def install(folder: Path) -> bool:
    """Pin ``folder/_conv.py``'s mtime and copy in its compiled kernels; True when copied."""
    path = folder / FILE
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    source = path.read_text(encoding="utf-8")
    shared = cache_root() / f"conv-{_key(source)}"
    if not (shared / "__pycache__").is_dir() and not _build(shared, source):
        if not (shared / "__pycache__").is_dir():  # another process may have built it
            return False
    target = folder / "__pycache__"
    target.mkdir(exist_ok=True)
    for f in (shared / "__pycache__").glob("_conv.*.nb*"):
        shutil.copy2(f, target / f.name)
    return True


def _build(shared: Path, source: str) -> bool:
    """Compile the kernels of ``source`` into ``shared/__pycache__``; False on failure."""
    tmp = shared.with_name(shared.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        src = tmp / FILE
        src.write_text(source, encoding="utf-8")
        os.utime(src, (FIXED_MTIME, FIXED_MTIME))
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
        groups = shards(source, min(MAX_SHARDS, os.cpu_count() or 1)) or [[]]
        assigned = ",".join(n for g in groups for n in g)
        procs = [subprocess.Popen([sys.executable, "-c", _COMPILE, str(src), ",".join(g), assigned, str(int(i == 0))],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i, g in enumerate(groups)]
        codes = [p.wait(timeout=600) for p in procs]
        built = {f.name.split("-")[0].removeprefix("_conv.") for f in (tmp / "__pycache__").glob("_conv.*.nbi")}
        if any(codes) or not {n for g in groups for n in g} <= built:
            return False
        os.replace(tmp, shared)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
