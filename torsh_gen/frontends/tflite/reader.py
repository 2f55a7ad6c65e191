"""Read a ``.tflite`` flatbuffer into plain Python records, checked on the way in.

Parsing goes through the schema's generated object API (``ai_edge_litert``'s
``schema_py_generated``, which LiteRT keeps in step with its runtime), never through
hand-decoded bytes. A model file is untrusted: a missing file identifier, a truncated
buffer, a tensor whose data does not match its shape or an index out of range all become
one ``ModelLoadError`` line. The records hold numpy arrays for constant tensors, the
quantization parameters, and each operator's name and option table, so the converters
never touch the flatbuffer API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import ModelLoadError
from torsh_gen.ir.types import DType

#: The four bytes at offset 4 of every TFLite flatbuffer.
FILE_IDENTIFIER = b"TFL3"
#: A flatbuffer addresses at most 2 GiB; larger models keep buffers after it (offset/size).
_MAX_FILE = 1 << 40


def schema() -> Any:
    """The flatbuffer schema's generated Python module (from the ``tflite`` extra)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise ModelLoadError(
            "reading .tflite models needs the tflite extra: pip install 'torsh-gen[tflite]'"
        ) from None
    return schema_py_generated


@dataclass
class Quant:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)`` along ``axis``."""

    scale: np.ndarray  # float32, one value (per-tensor) or one per channel
    zero_point: np.ndarray  # int64, same length as scale
    axis: int  # the channel axis when per-channel (len(scale) > 1)

    @property
    def per_channel(self) -> bool:
        """True when every slice along ``axis`` has its own scale."""
        return self.scale.size > 1

    def same_as(self, other: Quant | None) -> bool:
        """True when ``other`` maps integers to the same reals."""
        return (
            other is not None
            and self.scale.shape == other.scale.shape
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )


@dataclass
class Tensor:
    """One tensor of the main subgraph: metadata, and data when it is a constant."""

    index: int
    name: str
    dtype: DType
    shape: tuple[int, ...]
    signature: tuple[int, ...]  # shape with -1 for dynamic dims
    data: np.ndarray | None = None
    quant: Quant | None = None

    @property
    def rank(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def is_const(self) -> bool:
        """True when the tensor's values are stored in the model."""
        return self.data is not None

    @property
    def quantized(self) -> bool:
        """True for integer tensors that stand for reals through ``quant``."""
        return self.quant is not None and self.dtype.is_integer


@dataclass
class Operator:
    """One operator: its builtin name, tensor indices (-1 = omitted) and option table."""

    index: int
    opcode: str
    version: int
    inputs: list[int]
    outputs: list[int]
    options: Any = None  # the schema's *OptionsT object, or None


@dataclass
class Model:
    """The main subgraph of a TFLite model."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    version: int = 3
    description: str = ""
    subgraph_count: int = 1
    meta: dict[str, str] = field(default_factory=dict)


def read_tflite(source: str | os.PathLike | bytes) -> Model:
    """Parse a ``.tflite`` file (or its bytes) into a checked ``Model``."""
    if isinstance(source, (bytes, bytearray)):
        data, where = bytes(source), "<bytes>"
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such file; check the path")
        size = path.stat().st_size
        if size > _MAX_FILE:
            raise ModelLoadError(f"{path}: {size} bytes is too large for a TFLite model")
        data, where = path.read_bytes(), str(path)
    s = schema()
    if len(data) < 8 or not s.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelLoadError(
            f"{where}: not a TFLite model (no 'TFL3' flatbuffer identifier); "
            "check that the file is a .tflite flatbuffer"
        )
    try:
        model = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:  # struct/numpy errors from offsets past the end of the data
        raise ModelLoadError(
            f"{where}: TFLite flatbuffer is corrupted or truncated ({type(e).__name__}: {e}); "
            "re-export the model"
        ) from None
    return _Decoder(s, model, data, where).decode()


class _Decoder:
    """Turns the schema's object tree into ``Model`` records, checking every reference."""

    def __init__(self, s: Any, model: Any, data: bytes, where: str) -> None:
        self.s = s
        self.m = model
        self.data = data
        self.where = where
        self.op_names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
        self.type_names = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{self.where}: {what}; the TFLite model is corrupted, re-export it")

    def decode(self) -> Model:
        m = self.m
        if not m.subgraphs:
            raise self.fail("model has no subgraphs")
        g = m.subgraphs[0]
        tensors = [self.tensor(i, t) for i, t in enumerate(g.tensors or [])]
        n = len(tensors)
        ops = [self.operator(i, op, n) for i, op in enumerate(g.operators or [])]
        inputs = self.indices(g.inputs, n, "subgraph input")
        outputs = self.indices(g.outputs, n, "subgraph output")
        desc = m.description.decode("utf-8", "replace") if isinstance(m.description, bytes) else ""
        return Model(tensors, ops, inputs, outputs, int(m.version), desc, len(m.subgraphs))

    def indices(self, raw: Any, n: int, what: str) -> list[int]:
        out = [int(i) for i in (raw if raw is not None else [])]
        for i in out:
            if i < -1 or i >= n:
                raise self.fail(f"{what} refers to tensor {i} of {n}")
        return out

    def tensor(self, index: int, t: Any) -> Tensor:
        name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else f"t{index}"
        type_name = self.type_names.get(t.type, str(t.type))
        dtype = _DTYPES.get(type_name)
        if dtype is None:
            raise ModelLoadError(
                f"{self.where}: tensor '{name}' has element type {type_name}, which torsh-gen "
                "does not import; convert the model without it"
            )
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
        if len(sig) != len(shape) or any(d < 0 for d in shape):
            raise self.fail(f"tensor '{name}' has an invalid shape {shape}")
        if t.sparsity is not None:
            raise ModelLoadError(
                f"{self.where}: tensor '{name}' is sparse; sparse TFLite tensors are not supported"
            )
        data = self.buffer(t.buffer, name, dtype, shape)
        return Tensor(index, name, dtype, shape, sig, data, self.quant(t.quantization, name, shape))

    def buffer(
        self, index: int, name: str, dtype: DType, shape: tuple[int, ...]
    ) -> np.ndarray | None:
        buffers = self.m.buffers or []
        if index == 0 or index is None:
            return None
        if not 0 <= index < len(buffers):
            raise self.fail(f"tensor '{name}' refers to buffer {index} of {len(buffers)}")
        b = buffers[index]
        raw: bytes | np.ndarray | None = None
        if b.offset and b.offset > 1:
            if b.offset + b.size > len(self.data):
                raise self.fail(
                    f"buffer of tensor '{name}' lies past the end of the file (truncated?)"
                )
            raw = self.data[b.offset : b.offset + b.size]
        elif b.data is not None and len(b.data):
            raw = np.asarray(b.data, dtype=np.uint8).tobytes()
        if raw is None:
            return None
        dt = dtype.numpy.newbyteorder("<") if dtype.numpy.itemsize > 1 else dtype.numpy
        count = int(np.prod(shape, dtype=np.int64))
        if len(raw) != count * dt.itemsize:
            raise self.fail(
                f"tensor '{name}' holds {len(raw)} bytes, "
                f"its shape {shape} needs {count * dt.itemsize}"
            )
        return np.frombuffer(raw, dtype=dt).astype(dtype.numpy).reshape(shape)

    def quant(self, q: Any, name: str, shape: tuple[int, ...]) -> Quant | None:
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        if q.details is not None:
            raise ModelLoadError(
                f"{self.where}: tensor '{name}' uses custom/blockwise quantization, "
                "which is not supported"
            )
        scale = np.asarray(q.scale, dtype=np.float32).reshape(-1)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], dtype=np.int64).reshape(-1)
        if zp.size == 1 and scale.size > 1:
            zp = np.repeat(zp, scale.size)
        axis = int(q.quantizedDimension)
        if zp.size != scale.size or (
            scale.size > 1 and not (0 <= axis < len(shape) and shape[axis] == scale.size)
        ):
            raise self.fail(f"tensor '{name}' has inconsistent quantization parameters")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise self.fail(f"tensor '{name}' has a non-positive or non-finite quantization scale")
        return Quant(scale, zp, axis)

    def operator(self, index: int, op: Any, n: int) -> Operator:
        codes = self.m.operatorCodes or []
        if not 0 <= op.opcodeIndex < len(codes):
            raise self.fail(f"operator {index} refers to opcode {op.opcodeIndex} of {len(codes)}")
        code = codes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = self.op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode("utf-8", "replace") if code.customCode else "?"
            name = f"CUSTOM({custom[:60]})"
        return Operator(
            index,
            name,
            int(code.version),
            self.indices(op.inputs, n, f"operator {index} ({name}) input"),
            self.indices(op.outputs, n, f"operator {index} ({name}) output"),
            op.builtinOptions,
        )


_DTYPES: dict[str, DType] = {
    "FLOAT32": DType.FLOAT,
    "FLOAT16": DType.FLOAT16,
    "FLOAT64": DType.DOUBLE,
    "BFLOAT16": DType.BFLOAT16,
    "INT8": DType.INT8,
    "UINT8": DType.UINT8,
    "INT16": DType.INT16,
    "UINT16": DType.UINT16,
    "INT32": DType.INT32,
    "UINT32": DType.UINT32,
    "INT64": DType.INT64,
    "UINT64": DType.UINT64,
    "BOOL": DType.BOOL,
}
