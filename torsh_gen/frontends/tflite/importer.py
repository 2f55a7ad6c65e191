"""TFLite model → IR Graph: check every operator first, convert them in order, verify shapes.

Every operator without a converter, or with an option its converter refuses, is listed
in one ``UnsupportedOpError`` (with its operator index) before anything is built. After
conversion, type inference runs over the graph and each tensor's inferred shape is
compared with the shape the TFLite file declares, so a mapping mistake surfaces as a
clear error at import rather than as wrong numbers later.

``graph.meta["conversion"]`` records what happened: the source format, how many of each
TFLite op were mapped, which became compositions of several IR ops, and what changed
in precision.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from torsh_gen.errors import GraphError, ModelLoadError, UnsupportedOpError
from torsh_gen.frontends.tflite import ops_elementwise, ops_nn, ops_reduce, ops_shape  # noqa: F401
from torsh_gen.frontends.tflite.context import NATIVE, Context, Unsupported
from torsh_gen.frontends.tflite.reader import Model, Operator, read_tflite
from torsh_gen.frontends.tflite.registry import CONVERTERS
from torsh_gen.ir.graph import ModelInfo
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.inference import infer_types

#: Opset of the graphs this frontend builds (Gelu needs 20; Resize ``axes`` and Reduce axes
#: inputs 18). Not 21: onnxruntime 1.32's graph optimizer refuses opset-21 graphs where a
#: DequantizeLinear feeds a Transpose ("output_dtype INT8 does not match y_zero_point type";
#: its Q/DQ insertion and ``output_dtype`` are known trouble: microsoft/onnxruntime#27845).
OPSET = 20

INT8_NOTE = (
    "quantized tensors stay integer; arithmetic on them runs in float32 between "
    "DequantizeLinear/QuantizeLinear, where TFLite requantizes with fixed-point multipliers "
    "and lookup tables: results may differ by one quantization step"
)
FP16_NOTE = "float16 weights are widened to float32 (Cast) before use, as TFLite's DEQUANTIZE does"
HYBRID_NOTE = (
    "dynamic-range (hybrid) int8 weights are dequantized and used with float32 activations; "
    "TFLite's hybrid kernels also quantize the activations to int8 on the fly, so outputs "
    "differ from TFLite's by that rounding (about 1% of the output range)"
)


def load_tflite(source: str | os.PathLike | bytes) -> Any:
    """Load a ``.tflite`` file (or its bytes) into a verified-ready IR Graph."""
    where = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(Path(source))
    return graph_from_tflite(read_tflite(source), where)


def unsupported_ops(model: Model) -> list[str]:
    """``'#index OPCODE (why)'`` for every operator the frontend cannot convert."""
    problems = []
    for op in model.operators:
        conv = CONVERTERS.get(op.opcode)
        if conv is None:
            problems.append(f"#{op.index} {op.opcode}")
            continue
        _check_arity(op, conv.arity)
        why = conv.check(op, model) if conv.check is not None else None
        if why:
            problems.append(f"#{op.index} {op.opcode} ({why})")
    return problems


def _check_arity(op: Operator, arity: int) -> None:
    """A malformed operator (missing inputs or outputs) means a corrupted model, not a gap."""
    ins = op.inputs[:arity]
    if len(ins) < arity or min(ins) < 0 or not op.outputs or op.outputs[0] < 0:
        raise ModelLoadError(
            f"operator #{op.index} {op.opcode} has inputs {op.inputs} and outputs {op.outputs}, "
            f"needs {arity} input(s) and an output; the TFLite model is corrupted, re-export it"
        )


def graph_from_tflite(model: Model, where: str = "<tflite>") -> Any:
    """Convert a parsed TFLite ``Model`` into an IR Graph (NHWC at the boundary)."""
    try:
        problems = unsupported_ops(model)
    except ModelLoadError as e:
        raise ModelLoadError(f"{where}: {e}") from None
    if problems:
        raise UnsupportedOpError(
            f"{where}: {len(problems)} unsupported TFLite operator(s): {', '.join(problems)}; "
            "`torsh-gen ops` lists what the IR supports"
        )
    if model.subgraph_count > 1:
        raise UnsupportedOpError(
            f"{where}: the model has {model.subgraph_count - 1} control-flow subgraph(s), "
            "which the TFLite frontend does not import"
        )
    wide = [t for t in model.tensors if t.quantized and t.dtype == DType.INT16 and not t.is_const]
    if wide:  # QuantizeLinear to int16 needs opset 21 (see OPSET)
        raise UnsupportedOpError(
            f"{where}: 16-bit quantized activations (tensor '{wide[0].name}') are not supported; "
            "quantize the model with int8 activations"
        )
    ctx = Context(model)
    for i in model.inputs:
        ctx.graph_input(i, {(i, 0): "batch"})
    mapped: Counter[str] = Counter()
    compositions: dict[str, list[str]] = {}
    for op in model.operators:
        ctx.op, ctx.emitted = op, Counter()
        try:
            CONVERTERS[op.opcode].fn(ctx, op)
        except (UnsupportedOpError, ModelLoadError) as e:
            raise type(e)(f"{where}: operator #{op.index} {op.opcode}: {e}") from None
        except (IndexError, KeyError, ValueError, TypeError, AttributeError) as e:
            # Inconsistent shapes or options that a well-formed model never has.
            raise ModelLoadError(
                f"{where}: operator #{op.index} {op.opcode} cannot be converted "
                f"({type(e).__name__}: {e}); the TFLite model may be corrupted"
            ) from e
        mapped[op.opcode] += 1
        if sum(ctx.emitted.values()) > 1 and op.opcode not in compositions:
            compositions[op.opcode] = list(ctx.emitted)
    ctx.op = None
    graph = ctx.graph
    for i in model.outputs:
        if not ctx.defined(i):
            raise GraphError(f"{where}: graph output '{model.tensors[i].name}' is never written")
        graph.outputs.append(ctx.value(i, NATIVE))
    graph.info = ModelInfo(
        opset_imports={"": OPSET},
        producer_name="tflite",
        producer_version=str(model.version),
        doc=model.description,
    )
    _check_shapes(ctx, where)
    graph.meta["conversion"] = {
        "source": "tflite",
        "mapped": dict(sorted(mapped.items())),
        "compositions": dict(sorted(compositions.items())),
        "precision": _precision(model),
    }
    return graph


def _precision(model: Model) -> list[str]:
    notes = []
    if any(t.quantized and not t.is_const for t in model.tensors):
        notes.append(INT8_NOTE)
    if any(t.dtype == DType.FLOAT16 and t.is_const for t in model.tensors):
        notes.append(FP16_NOTE)
    if any(_is_hybrid(op, model) for op in model.operators):
        notes.append(HYBRID_NOTE)
    return notes


def _is_hybrid(op: Operator, model: Model) -> bool:
    """A compute op reading float activations and quantized constant weights."""
    if op.opcode in ("DEQUANTIZE", "QUANTIZE"):
        return False
    ins = [model.tensors[i] for i in op.inputs if i >= 0]
    return any(t.dtype == DType.FLOAT and not t.is_const for t in ins) and any(
        t.quantized and t.is_const and t.dtype in (DType.INT8, DType.UINT8) for t in ins
    )


def _check_shapes(ctx: Context, where: str) -> None:
    """Infer types, then hold every native tensor to the shape the TFLite file declares."""
    try:
        infer_types(ctx.graph)
    except Exception as e:
        raise GraphError(
            f"{where}: the converted graph does not type-check ({e}); the model's shapes are "
            "inconsistent (a corrupted file?), else this is a torsh-gen bug: please report it"
        ) from e
    for index, forms in ctx.forms.items():
        v = forms.get(NATIVE)
        t = ctx.tensor(index)
        if v is None or not isinstance(v.type, TensorType) or v.type.shape is None:
            continue
        got = v.type.shape
        want = t.signature
        if len(got) != len(want) or any(
            w >= 0 and isinstance(g, int) and g != w for g, w in zip(got, want)
        ):
            raise GraphError(
                f"{where}: tensor '{t.name}' converts to shape {list(got)} "
                f"but the model says {list(want)}; the model's shapes are inconsistent "
                "(a corrupted file?), else this is a torsh-gen bug: please report it"
            )


__all__ = ["Unsupported", "graph_from_tflite", "load_tflite", "unsupported_ops"]
