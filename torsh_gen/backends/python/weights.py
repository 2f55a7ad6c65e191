"""The weights file: every constant array of a model in one memory-mappable file.

Arrays are written back to back at 64-byte-aligned offsets into ``weights.bin``; the
table (name, dtype, shape, offset) goes into the manifest. The generated package maps
the file once and takes zero-copy, read-only views (``np.frombuffer``), so weights cost
no load time beyond page faults and can never be overwritten by a kernel. Identical
arrays are stored once. String tensors cannot be memory-mapped: their elements go into
the table itself.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.backends.python.names import Namespace

ALIGN = 64
FILE_NAME = "weights.bin"


@dataclass
class _Entry:
    name: str
    array: np.ndarray
    offset: int = -1


@dataclass
class WeightStore:
    """Collects constant arrays under generated attribute names."""

    names: Namespace
    entries: list[_Entry] = field(default_factory=list)
    _by_id: dict[int, str] = field(default_factory=dict)
    _by_digest: dict[tuple, str] = field(default_factory=dict)
    _keep: list[Any] = field(default_factory=list)

    def add(self, array: np.ndarray, hint: str) -> str:
        """The attribute name holding ``array`` (added once; equal arrays share a name)."""
        key = self._by_id.get(id(array))
        if key is not None:
            return key
        arr = np.asarray(array)
        digest = _digest(arr)
        key = self._by_digest.get(digest)
        if key is None:
            key = self.names.name(hint, prefix="w", fallback="const")
            self.entries.append(_Entry(key, arr))
            self._by_digest[digest] = key
        self._by_id[id(array)] = key
        self._keep.append(array)  # keep ids stable while the store lives
        return key

    @property
    def nbytes(self) -> int:
        """Bytes of numeric weights."""
        return sum(e.array.nbytes for e in self.entries if e.array.dtype != object)

    def write(self, folder: Path) -> list[dict[str, Any]]:
        """Write ``weights.bin`` into ``folder`` and return the manifest's weights table."""
        table: list[dict[str, Any]] = []
        offset = 0
        with open(folder / FILE_NAME, "wb") as f:
            for e in self.entries:
                arr = e.array
                row: dict[str, Any] = {"name": e.name, "dtype": _dtype_name(arr.dtype), "shape": list(arr.shape)}
                if arr.dtype == object or arr.dtype.kind in "US":
                    row["dtype"] = "object"
                    row["values"] = [_encode_string(s) for s in arr.reshape(-1).tolist()]
                    table.append(row)
                    continue
                pad = (-offset) % ALIGN
                f.write(b"\0" * pad)
                offset += pad
                data = np.ascontiguousarray(arr).tobytes()
                f.write(data)
                row["offset"] = offset
                row["nbytes"] = len(data)
                offset += len(data)
                table.append(row)
        return table


def _dtype_name(dt: np.dtype) -> str:
    return "bool" if dt == np.bool_ else dt.name


def _digest(arr: np.ndarray) -> tuple:
    if arr.dtype == object:
        h = hashlib.sha1(repr(arr.reshape(-1).tolist()).encode("utf-8", "surrogateescape"))
    else:
        h = hashlib.sha1(np.ascontiguousarray(arr).tobytes())
    return (str(arr.dtype), arr.shape, h.hexdigest())


def _encode_string(s: Any) -> Any:
    """A JSON-safe form of one string-tensor element: str as is, bytes as base64."""
    if isinstance(s, bytes):
        return {"b64": base64.b64encode(s).decode("ascii")}
    return str(s)
