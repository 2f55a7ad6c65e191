"""Compile an artifact's numba kernels at build time, with a cache shared across builds.

``kernels.py`` declares explicit signatures, so importing it compiles every kernel and
numba's ``cache=True`` stores the machine code in the artifact's ``__pycache__``. numba
(0.68) keys that cache on a hash of the source file's contents, so it stays valid when the
folder is renamed or copied, and compiled files can be reused across builds. They are kept
in a per-user cache keyed by the source hash (``TORSH_GEN_CACHE_DIR``, else
``$XDG_CACHE_HOME/torsh-gen``): building the same model again copies them in without
importing numba at all (a test checks that the copy compiles nothing on import).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import shutil
import sys
import time
from pathlib import Path

KERNELS = "kernels.py"
_counter = itertools.count()


def cache_root() -> Path:
    """The per-user folder holding compiled kernels of earlier builds."""
    env = os.environ.get("TORSH_GEN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torsh-gen" / "numba"


def numba_tag() -> str:
    """numba's version and Python's, for cache keys (read without importing numba: 0.4 s)."""
    from importlib.metadata import version

    return f"numba {version('numba')} python {sys.version_info[:2]}"


def _key(source: bytes) -> str:
    h = hashlib.sha256(source)
    h.update(numba_tag().encode())
    return h.hexdigest()[:32]


def _shared(src: Path) -> Path:
    """The shared cache folder for the kernels of ``src`` (a ``kernels.py``)."""
    return cache_root() / _key(src.read_bytes())


def _holds_kernels(shared: Path) -> bool:
    """True when the shared cache folder ``shared`` holds compiled kernels."""
    return any(shared.glob("kernels.*.nbi"))


def cached(folder: Path) -> bool:
    """True when the shared cache holds the compiled kernels of ``folder/kernels.py``."""
    src = folder / KERNELS
    return src.is_file() and _holds_kernels(_shared(src))


def precompile(folder: Path) -> float:
    """Compile (or fetch from the shared cache) the kernels of the artifact in ``folder``.

    Returns the seconds spent; 0 when the artifact has no kernels.
    """
    src = folder / KERNELS
    if not src.is_file():
        return 0.0
    start = time.perf_counter()
    pycache = folder / "__pycache__"
    shared = _shared(src)
    if _holds_kernels(shared):
        pycache.mkdir(exist_ok=True)
        for f in shared.iterdir():
            shutil.copy2(f, pycache / f.name)
        return time.perf_counter() - start
    name = f"_torsh_gen_kernels_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, src)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # compiles; numba writes its cache beside the file
    finally:
        sys.modules.pop(name, None)
    remember(folder)
    return time.perf_counter() - start


def remember(folder: Path) -> None:
    """Keep the compiled kernels in ``folder/__pycache__`` in the shared cache (compiled
    here, or by the conv build's process: ``conv_cache.start``)."""
    src, pycache = folder / KERNELS, folder / "__pycache__"
    shared = _shared(src)
    if not shared.is_dir() and pycache.is_dir():
        try:
            tmp = shared.with_name(shared.name + f".tmp{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            for f in pycache.glob("kernels.*.nb*"):
                shutil.copy2(f, tmp / f.name)
            os.replace(tmp, shared)
        except OSError:
            pass  # the shared cache is an optimization only
