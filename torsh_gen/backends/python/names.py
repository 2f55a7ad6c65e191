"""Identifiers for generated code: a namespace that never hands out a name twice.

Model-derived strings (value, node and weight names) are untrusted. They only serve as
*hints*, and only when they look like ordinary tensor names (letters, digits and ``_ . / :
-``); anything else gives way to a fallback hint such as the op type. A hint is reduced to
ASCII letters, digits and underscores, shortened, and made unique; keywords, builtins and
the names the generated module itself uses are avoided. So nothing a model says can
become code. Where the original string matters (input and output names, error messages)
it is written as a ``repr`` literal; in comments and docstrings it is ``ascii``-escaped.
"""

from __future__ import annotations

import builtins
import keyword
import re

#: Names the generated modules bind themselves (imports, module constants, method names).
RESERVED = frozenset(
    """np math nb numba self inputs outputs feeds args kwargs _rt _k _refcall _ref
    Model run INPUTS OUTPUTS MODEL_FILE W cls exc""".split()
)

_MAX_LEN = 24
_ORDINARY = re.compile(r"[A-Za-z0-9_./:\-]+")


def sanitize(hint: str) -> str:
    """``hint`` reduced to a lowercase identifier fragment (may be empty)."""
    base = re.sub(r"[^0-9A-Za-z]+", "_", hint.encode("ascii", "ignore").decode()).strip("_").lower()
    return base[:_MAX_LEN].rstrip("_")


class Namespace:
    """Hands out unique, safe identifiers from hints (deterministic: same calls, same names)."""

    def __init__(self, reserved: frozenset[str] | set[str] = RESERVED) -> None:
        self._used: set[str] = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | set(reserved)
        self._counters: dict[str, int] = {}

    def name(self, hint: str, prefix: str = "", fallback: str = "v") -> str:
        """A fresh identifier from ``prefix`` and ``hint`` (``fallback`` for unusual hints)."""
        base = sanitize(hint if _ORDINARY.fullmatch(hint or "") else fallback)
        if prefix:
            base = f"{prefix}_{base}" if base else prefix
        if not base or base[0].isdigit():
            base = f"v_{base}" if base else "v"
        name = base
        while name in self._used or not name.isidentifier() or keyword.iskeyword(name):
            n = self._counters.get(base, 0) + 1
            self._counters[base] = n
            name = f"{base}_{n}"
        self._used.add(name)
        return name

    def reserve(self, name: str) -> None:
        """Mark ``name`` as taken (for names the caller chose itself)."""
        self._used.add(name)


def comment_text(text: str, limit: int = 80) -> str:
    """``text`` safe inside a ``#`` comment: ASCII-escaped and quoted, one line, bounded."""
    s = ascii(text)
    return s if len(s) <= limit else s[: limit - 4] + "...'"


def doc_text(text: str, limit: int = 80) -> str:
    """``text`` safe inside a triple-quoted docstring: ASCII only, quotes and backslashes as \\xNN."""
    out = []
    for ch in text[:limit]:
        if ch in "\"'\\":
            out.append(f"\\x{ord(ch):02x}")
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])
    return "'" + "".join(out) + ("...'" if len(text) > limit else "'")
