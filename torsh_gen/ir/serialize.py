"""The .torsh container: the IR in one file, with weights memory-mapped on load.

Layout (all integers little-endian; documented in docs/torsh-format.md):

    offset 0   magic      8 bytes  b"TORSHGEN"
    offset 8   version    u32      format version (1)
    offset 12  flags      u32      0 (reserved)
    offset 16  header_len u64      length of the JSON header in bytes
    offset 24  header     JSON (UTF-8): metadata, value table, graph, tensor table
    ...        padding to a multiple of 64
    data       tensor bytes, each tensor starting at a multiple of 64 from the data start

Tensor data is read with ``numpy.frombuffer`` over an ``mmap`` of the file, so loading a
model copies no weights. A reader of version N loads every version up to N; the reader
treats the file as untrusted input and bounds every offset and size it reads.
"""

from __future__ import annotations

import base64
import json
import mmap
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from torsh_gen.errors import FormatError
from torsh_gen.ir.graph import Attribute, AttrKind, Graph, ModelInfo, Node, Value
from torsh_gen.ir.types import DType, MapType, OptionalType, SequenceType, TensorType, Type

MAGIC = b"TORSHGEN"
FORMAT_VERSION = 1
ALIGN = 64
_PREAMBLE = struct.Struct("<8sIIQ")
#: Headers above this size are refused before parsing (a guard against crafted files).
MAX_HEADER_BYTES = 1 << 30


# =========================================================================== writing
class _Writer:
    def __init__(self) -> None:
        self.value_ids: dict[int, int] = {}
        self.values: list[dict[str, Any]] = []
        self.tensors: list[dict[str, Any]] = []
        self.blobs: list[np.ndarray] = []
        self.offset = 0

    def tensor(self, arr: np.ndarray) -> int:
        arr = np.asarray(arr)
        entry: dict[str, Any] = {"dtype": int(DType.from_numpy(arr.dtype)), "shape": list(arr.shape)}
        if arr.dtype == object:
            entry["strings"] = [s.decode("utf-8", "surrogateescape") if isinstance(s, bytes) else str(s) for s in arr.ravel()]
        else:
            self.offset = _align(self.offset)
            entry["offset"] = self.offset
            entry["nbytes"] = int(arr.nbytes)
            self.blobs.append(arr)
            self.offset += arr.nbytes
        self.tensors.append(entry)
        return len(self.tensors) - 1

    def value(self, v: Value) -> int:
        vid = self.value_ids.get(id(v))
        if vid is not None:
            return vid
        vid = len(self.values)
        self.value_ids[id(v)] = vid
        rec: dict[str, Any] = {"name": v.name, "type": _type_json(v.type)}
        if v.doc:
            rec["doc"] = v.doc
        self.values.append(rec)
        if v.const is not None:
            rec["tensor"] = self.tensor(v.const)
        return vid

    def graph(self, g: Graph) -> dict[str, Any]:
        out: dict[str, Any] = {"name": g.name}
        if g.doc:
            out["doc"] = g.doc
        out["inputs"] = [self.value(v) for v in g.inputs]
        out["initializers"] = [self.value(v) for v in g.initializers]
        out["nodes"] = [self.node(n) for n in g.nodes]
        out["outputs"] = [self.value(v) for v in g.outputs]
        return out

    def node(self, n: Node) -> dict[str, Any]:
        rec: dict[str, Any] = {"op": n.op_type}
        if n.domain:
            rec["domain"] = n.domain
        for key in ("name", "doc", "overload"):
            if getattr(n, key):
                rec[key] = getattr(n, key)
        rec["inputs"] = [None if v is None else self.value(v) for v in n.inputs]
        rec["outputs"] = [self.value(v) for v in n.outputs]
        if n.attrs:
            rec["attrs"] = {k: self.attr(a) for k, a in n.attrs.items()}
        if n.metadata:
            rec["metadata"] = dict(n.metadata)
        return rec

    def attr(self, a: Attribute) -> dict[str, Any]:
        k, v = a.kind, a.value
        rec: dict[str, Any] = {"kind": int(k)}
        if a.ref:
            rec["ref"] = a.ref
        if a.doc:
            rec["doc"] = a.doc
        if v is None:
            return rec
        if k == AttrKind.TENSOR:
            rec["tensor"] = self.tensor(v)
        elif k == AttrKind.TENSORS:
            rec["tensors"] = [self.tensor(t) for t in v]
        elif k == AttrKind.GRAPH:
            rec["graph"] = self.graph(v)
        elif k == AttrKind.GRAPHS:
            rec["graphs"] = [self.graph(g) for g in v]
        elif k == AttrKind.SPARSE_TENSOR:
            rec["proto"] = base64.b64encode(v.SerializeToString()).decode()
        elif k == AttrKind.SPARSE_TENSORS:
            rec["protos"] = [base64.b64encode(t.SerializeToString()).decode() for t in v]
        elif k == AttrKind.TYPE_PROTO:
            rec["type"] = _type_json(v)
        elif k == AttrKind.TYPE_PROTOS:
            rec["types"] = [_type_json(t) for t in v]
        else:
            rec["value"] = v
        return rec


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _type_json(t: Type | None) -> Any:
    if t is None:
        return None
    if isinstance(t, TensorType):
        return {"tensor": int(t.dtype), "shape": None if t.shape is None else list(t.shape)}
    if isinstance(t, SequenceType):
        return {"sequence": _type_json(t.elem)}
    if isinstance(t, OptionalType):
        return {"optional": _type_json(t.elem)}
    if isinstance(t, MapType):
        return {"map": [int(t.key), _type_json(t.value)]}
    raise TypeError(f"cannot serialize type {t!r}")


def _info_json(info: ModelInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "ir_version": info.ir_version,
        "opset_imports": info.opset_imports,
        "producer_name": info.producer_name,
        "producer_version": info.producer_version,
        "domain": info.domain,
        "model_version": info.model_version,
        "doc": info.doc,
        "metadata_props": info.metadata_props,
    }


def dumps_header(graph: Graph) -> tuple[bytes, list[np.ndarray], list[dict[str, Any]]]:
    """The JSON header bytes, the arrays to write and their table entries."""
    w = _Writer()
    body = w.graph(graph)
    header = {"format": FORMAT_VERSION, "model": _info_json(graph.info), "values": w.values, "graph": body, "tensors": w.tensors}
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8"), w.blobs, w.tensors


def save_torsh(graph: Graph, path: str | os.PathLike) -> Path:
    """Write ``graph`` to a .torsh file (atomically: a temporary file renamed at the end)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header, blobs, _ = dumps_header(graph)
    data_start = _align(_PREAMBLE.size + len(header))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".torsh-gen-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(header)))
            f.write(header)
            f.write(b"\0" * (data_start - _PREAMBLE.size - len(header)))
            pos = 0
            for arr in blobs:
                pad = _align(pos) - pos
                f.write(b"\0" * pad)
                pos += pad
                f.write(np.ascontiguousarray(arr).tobytes())
                pos += arr.nbytes
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; use the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# =========================================================================== reading
def load_torsh(path: str | os.PathLike) -> Graph:
    """Read a .torsh file; weights are read-only views of a memory map of the file."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file; check the path")
    size = path.stat().st_size
    if size < _PREAMBLE.size:
        raise FormatError(f"{path}: too short to be a .torsh file ({size} bytes); is it truncated?")
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return loads_torsh(mm, str(path))


def loads_torsh(buf: Any, source: str = "<bytes>") -> Graph:
    """Decode a .torsh image from any buffer (bytes or mmap)."""
    size = len(buf)
    if size < _PREAMBLE.size:
        raise FormatError(f"{source}: too short to be a .torsh file ({size} bytes); is it truncated?")
    magic, version, _flags, header_len = _PREAMBLE.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FormatError(f"{source}: not a .torsh file (bad magic); convert models with `torsh-gen convert`")
    if version < 1 or version > FORMAT_VERSION:
        raise FormatError(f"{source}: .torsh format version {version} is newer than this torsh-gen reads ({FORMAT_VERSION}); upgrade torsh-gen")
    if header_len > MAX_HEADER_BYTES or _PREAMBLE.size + header_len > size:
        raise FormatError(f"{source}: header length {header_len} runs past the end of the file; the file is truncated or corrupted")
    try:
        header = json.loads(bytes(buf[_PREAMBLE.size : _PREAMBLE.size + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"{source}: corrupted .torsh header ({type(e).__name__}); re-create the file") from None
    data_start = _align(_PREAMBLE.size + header_len)
    try:
        return _Reader(header, buf, data_start, size, source).graph_top()
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError, OverflowError) as e:
        raise FormatError(f"{source}: corrupted .torsh content ({type(e).__name__}: {e}); re-create the file") from None


class _Reader:
    def __init__(self, header: dict, buf: Any, data_start: int, size: int, source: str) -> None:
        if not isinstance(header, dict):
            raise FormatError(f"{source}: .torsh header is not an object")
        self.h = header
        self.buf = buf
        self.data_start = data_start
        self.size = size
        self.source = source
        self.tensor_table = header["tensors"]
        self.value_table = header["values"]
        if not isinstance(self.tensor_table, list) or not isinstance(self.value_table, list):
            raise FormatError(f"{source}: .torsh tables are malformed")
        self.arrays: dict[int, np.ndarray] = {}
        self.vals: dict[int, Value] = {}

    def graph_top(self) -> Graph:
        g = self.graph(self.h["graph"])
        m = self.h.get("model")
        if m is not None:
            g.info = ModelInfo(
                ir_version=int(m["ir_version"]),
                opset_imports={str(k): int(v) for k, v in m["opset_imports"].items()},
                producer_name=str(m.get("producer_name", "")),
                producer_version=str(m.get("producer_version", "")),
                domain=str(m.get("domain", "")),
                model_version=int(m.get("model_version", 0)),
                doc=str(m.get("doc", "")),
                metadata_props={str(k): str(v) for k, v in m.get("metadata_props", {}).items()},
            )
        return g

    def tensor(self, idx: int) -> np.ndarray:
        if not isinstance(idx, int) or not 0 <= idx < len(self.tensor_table):
            raise FormatError(f"{self.source}: tensor index {idx!r} out of range")
        if idx in self.arrays:
            return self.arrays[idx]
        e = self.tensor_table[idx]
        dtype = DType(int(e["dtype"]))
        shape = tuple(int(d) for d in e["shape"])
        if any(d < 0 for d in shape):
            raise FormatError(f"{self.source}: tensor {idx} has a negative dimension")
        count = int(np.prod(shape, dtype=object))
        if "strings" in e:
            strings = e["strings"]
            if len(strings) != count:
                raise FormatError(f"{self.source}: string tensor {idx} has {len(strings)} items for shape {shape}")
            arr = np.array([str(s) for s in strings], dtype=object).reshape(shape)
        else:
            np_dtype = dtype.numpy
            offset, nbytes = int(e["offset"]), int(e["nbytes"])
            if nbytes != count * np_dtype.itemsize:
                raise FormatError(f"{self.source}: tensor {idx} holds {nbytes} bytes but shape {shape} needs {count * np_dtype.itemsize}")
            start = self.data_start + offset
            if offset < 0 or start + nbytes > self.size:
                raise FormatError(f"{self.source}: tensor {idx} lies past the end of the file; the file is truncated")
            arr = np.frombuffer(self.buf, dtype=np_dtype, count=count, offset=start).reshape(shape)
        self.arrays[idx] = arr
        return arr

    def value(self, vid: int) -> Value:
        if not isinstance(vid, int) or not 0 <= vid < len(self.value_table):
            raise FormatError(f"{self.source}: value index {vid!r} out of range")
        v = self.vals.get(vid)
        if v is None:
            rec = self.value_table[vid]
            const = self.tensor(rec["tensor"]) if "tensor" in rec else None
            v = Value(str(rec["name"]), _type_from_json(rec.get("type")), const=const, doc=str(rec.get("doc", "")))
            self.vals[vid] = v
        return v

    def graph(self, rec: dict) -> Graph:
        inputs = [self.value(i) for i in rec["inputs"]]
        inits = [self.value(i) for i in rec["initializers"]]
        nodes = [self.node(n) for n in rec["nodes"]]
        outputs = [self.value(i) for i in rec["outputs"]]
        return Graph(str(rec["name"]), nodes, inputs, outputs, inits, doc=str(rec.get("doc", "")))

    def node(self, rec: dict) -> Node:
        inputs = [None if i is None else self.value(i) for i in rec["inputs"]]
        outputs = [self.value(i) for i in rec["outputs"]]
        attrs = {str(k): self.attr(a) for k, a in rec.get("attrs", {}).items()}
        return Node(
            str(rec["op"]),
            inputs,
            outputs,
            attrs,
            str(rec.get("domain", "")),
            str(rec.get("name", "")),
            str(rec.get("doc", "")),
            {str(k): str(v) for k, v in rec.get("metadata", {}).items()},
            str(rec.get("overload", "")),
        )

    def attr(self, rec: dict) -> Attribute:
        kind = AttrKind(int(rec["kind"]))
        ref, doc = str(rec.get("ref", "")), str(rec.get("doc", ""))
        value: Any = None
        if "tensor" in rec:
            value = self.tensor(rec["tensor"])
        elif "tensors" in rec:
            value = [self.tensor(t) for t in rec["tensors"]]
        elif "graph" in rec:
            value = self.graph(rec["graph"])
        elif "graphs" in rec:
            value = [self.graph(g) for g in rec["graphs"]]
        elif "proto" in rec:
            value = onnx.SparseTensorProto.FromString(base64.b64decode(rec["proto"]))
        elif "protos" in rec:
            value = [onnx.SparseTensorProto.FromString(base64.b64decode(p)) for p in rec["protos"]]
        elif "type" in rec:
            value = _type_from_json(rec["type"])
        elif "types" in rec:
            value = [_type_from_json(t) for t in rec["types"]]
        elif "value" in rec:
            value = _checked_scalar(kind, rec["value"])
        return Attribute(kind, value, ref, doc)


def _checked_scalar(kind: AttrKind, v: Any) -> Any:
    ok = {
        AttrKind.INT: lambda x: isinstance(x, int),
        AttrKind.FLOAT: lambda x: isinstance(x, (int, float)),
        AttrKind.STRING: lambda x: isinstance(x, str),
        AttrKind.INTS: lambda x: isinstance(x, list) and all(isinstance(i, int) for i in x),
        AttrKind.FLOATS: lambda x: isinstance(x, list) and all(isinstance(i, (int, float)) for i in x),
        AttrKind.STRINGS: lambda x: isinstance(x, list) and all(isinstance(i, str) for i in x),
    }.get(kind)
    if ok is None or not ok(v):
        raise FormatError(f"attribute value {str(v)[:40]!r} does not match kind {kind.name}")
    if kind == AttrKind.FLOAT:
        return float(v)
    if kind == AttrKind.FLOATS:
        return [float(x) for x in v]
    return v


def _type_from_json(t: Any) -> Type | None:
    if t is None:
        return None
    if "tensor" in t:
        shape = t["shape"]
        dims = None if shape is None else tuple(d if isinstance(d, (int, str)) or d is None else int(d) for d in shape)
        return TensorType(DType(int(t["tensor"])), dims)
    if "sequence" in t:
        return SequenceType(_type_from_json(t["sequence"]))
    if "optional" in t:
        return OptionalType(_type_from_json(t["optional"]))
    if "map" in t:
        key, val = t["map"]
        return MapType(DType(int(key)), _type_from_json(val))
    raise ValueError(f"unknown type record {t!r}")
