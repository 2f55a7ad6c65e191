"""black formatting of generated code, remembered across builds.

black takes about a second on a ResNet-50's ``model.py``, which is half of a rebuild's
budget when nothing else changed. The formatted text depends only on black's version,
its mode and the input text, so it is kept in the per-user cache under a hash of those
and read back on the next build of the same model. The cache is an optimization only:
any error reading or writing it falls back to formatting.
"""

from __future__ import annotations

import hashlib
import os
from importlib.metadata import version

from torsh_gen.backends.python.kernel_cache import cache_root

#: What decides black's output besides the text (black itself is imported only on a miss:
#: 0.2 s).
_TAG = f"black {version('black')} line_length=100 target=py311".encode()


def format_code(text: str) -> str:
    """``text`` formatted by black (line length 100, Python 3.11), from the cache when seen before."""
    key = hashlib.sha256(_TAG + b"\0" + text.encode()).hexdigest()[:40]
    path = cache_root() / "black" / f"{key}.py"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        pass
    import black

    mode = black.Mode(line_length=100, target_versions={black.TargetVersion.PY311})
    out = black.format_str(text, mode=mode)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(out, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return out

