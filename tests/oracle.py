"""Which engine is the oracle for integer products on this CPU.

onnxruntime is the oracle of the test suite, with one known exception: on x86 CPUs
without VNNI (AVX2 only: AMD Zen 3, Intel before Cascade Lake), its uint8 x int8 kernels
multiply with ``vpmaddubsw``, which adds each pair of products in int16 with saturation.
Its QLinearConv, QLinearMatMul, MatMulInteger and fused QDQ groups then depart from the
spec (on a Zen 3: QLinearConv off by up to 43, MatMulInteger by 19,616, a digits logit by
6.1), while onnx's reference evaluator, numpy and our kernels agree. On such CPUs the
spec's own outputs come from onnx's reference evaluator instead.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

#: Ops whose products onnxruntime computes in 8-bit integers. A DequantizeLinear may also
#: start a QDQ group that onnxruntime fuses into one of them.
INTEGER_PRODUCT_OPS = frozenset({"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"})


def cpu_flags() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


#: Whether onnxruntime's integer products are exact here (VNNI, or not x86 at all).
ORT_INTEGER_EXACT = platform.machine() not in ("x86_64", "AMD64") or bool(
    cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}
)


def reference_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs of onnx's reference evaluator (the model converted to opset 21 first when
    older: the evaluator implements the quantization ops from opset 19 on)."""
    from onnx import version_converter
    from onnx.reference import ReferenceEvaluator

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 21)
    if opset < 21:
        model = version_converter.convert_version(model, 21)
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


def ort_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs (CPU provider, one thread)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def integer_oracle(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The expected outputs of a model with integer products: onnxruntime's where they are
    exact on this CPU, else the reference evaluator's."""
    return ort_outputs(model, feeds) if ORT_INTEGER_EXACT else reference_outputs(model, feeds)
