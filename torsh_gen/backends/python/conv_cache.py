"""Ship ``_conv.py`` with its numba kernels already compiled, from a per-user cache.

``_conv.py`` is the same file for every artifact of one torsh-gen version, and compiling
its parallel kernels takes several seconds. numba's cache (``__pycache__`` beside the
source) is valid for a source file of the same size and modification time, so the file is
written with a fixed mtime, compiled once per user in ``cache_root()/conv-<hash>`` (in a
subprocess, so the compiler's own process keeps its numba settings), and the compiled
files are copied into each new artifact. Any failure leaves the artifact to compile the
kernels on first import, as numba does by itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from torsh_gen.backends.python.kernel_cache import FIXED_MTIME, cache_root, numba_tag

FILE = "_conv.py"

_COMPILE = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_torsh_conv_build', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules['_torsh_conv_build'] = mod\n"
    "spec.loader.exec_module(mod)\n"
)


def _key(source: str) -> str:
    h = hashlib.sha256(source.encode())
    h.update(numba_tag().encode())
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
        done = subprocess.run([sys.executable, "-c", _COMPILE, str(src)], env=env,
                              capture_output=True, timeout=600, check=False)
        if done.returncode != 0 or not any((tmp / "__pycache__").glob("_conv.*.nbi")):
            return False
        os.replace(tmp, shared)
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
