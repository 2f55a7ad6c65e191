"""The ONNX backend node conformance suite must not regress below the committed figure.

`make conformance` prints the current count and writes the failing cases; raise
tests/conformance/baseline.json's "passed" when the count goes up.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from torsh_gen.tools.conformance import run_all

BASELINE = Path(__file__).with_name("baseline.json")


def _assert_not_below_baseline(key: str, **run: str) -> list:
    """Run the whole suite (``run``: mode and target) and assert at least baseline[key]
    cases pass; the results, for further checks."""
    baseline = json.loads(BASELINE.read_text())
    results = list(run_all(**run))
    passed = sum(r.passed for r in results)
    failed = sorted(r.name for r in results if not r.passed)
    assert passed >= baseline[key], f"{passed} passed < baseline {baseline[key]}; failing: {failed[:40]}"
    return results


def test_conformance_pass_count_does_not_regress():
    results = _assert_not_below_baseline("passed")
    total = json.loads(BASELINE.read_text())["total"]
    assert len(results) >= total, "fewer conformance cases than when the baseline was set"


@pytest.mark.slow
def test_compiled_mode_conformance_does_not_regress():
    """The node suite through compiled CPU packages (about 8 minutes: `make test-slow`)."""
    _assert_not_below_baseline("compiled_passed", mode="compiled")


#: Cases of the op families the CUDA program builder lowers with kernels of its own
#: (GEMMs and epilogues, im2col, pools, row reductions, Transpose, Gather): about 20 s.
CUDA_FAMILIES = (
    r"^test_(conv_with|convtranspose_1d|gemm_(all|alpha|beta|transpose)|matmul_|maxpool_2d_(pads|same|strides|ceil|dilations)"
    r"|averagepool_2d_(pads|strides|same_upper)|softmax_(axis|default|large)|logsoftmax_axis"
    r"|layer_normalization_(2d|3d|4d)_axis|transpose_all|gather_[0-9])"
)


def test_cuda_plans_on_the_host_pass_the_gpu_kernels_families():
    """CUDA plans run on the host (``target="cuda-host"``) for the families with GPU kernels."""
    results = list(run_all(CUDA_FAMILIES, mode="compiled", target="cuda-host"))
    failed = sorted(f"{r.name}: {r.message}" for r in results if not r.passed)
    assert len(results) >= 100 and not failed, failed[:10]


@pytest.mark.slow
def test_cuda_host_conformance_does_not_regress():
    """The whole node suite as CUDA plans run on the host (about 15 minutes)."""
    _assert_not_below_baseline("cuda_host_passed", mode="compiled", target="cuda-host")


#: A cross-section of the families the TVM backend converts (elementwise, shapes, gathers,
#: convolutions, pools, normalizations, reductions, quantization): about a minute.
TVM_FAMILIES = (
    r"^test_(relu|leakyrelu_default|sigmoid|erf|clip_default_min|mod_mixed_sign_int32|round|cast_FLOAT_to_INT32"
    r"|reshape_reordered_all_dims|slice_neg_steps|gather_elements_negative_indices|pad|conv_with_strides_padding"
    r"|maxpool_2d_ceil|averagepool_2d_pads_count_include_pad|batchnorm_epsilon|layer_normalization_4d_axis1"
    r"|softmax_axis_1|reduce_max_empty_set|argmax_keepdims_example_select_last_index|topk|quantizelinear"
    r"|dequantizelinear_axis|nonzero_example|resize_upsample_scales_linear$|gridsample$|lstm_defaults"
    r"|nonmaxsuppression_two_classes|unique_sorted_with_axis|dft$)$"
)


@pytest.mark.skipif(importlib.util.find_spec("tvm") is None, reason="Apache TVM is not installed (extra tvm)")
def test_tvm_backend_passes_its_families():
    """The TVM backend (``target="tvm-cpu"``) on a cross-section of its op families."""
    results = list(run_all(TVM_FAMILIES, mode="compiled", target="tvm-cpu"))
    failed = sorted(f"{r.name}: {r.message}" for r in results if not r.passed)
    assert len(results) >= 25 and not failed, failed[:10]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tvm") is None, reason="Apache TVM is not installed (extra tvm)")
def test_tvm_backend_conformance_does_not_regress():
    """The whole node suite through the TVM backend (about 15 minutes: `make conformance BACKEND=tvm`)."""
    _assert_not_below_baseline("tvm_passed", mode="compiled", target="tvm-cpu")


@pytest.mark.parametrize("target", ["wasm32", "aarch64-linux", "android-arm64"])
def test_compiled_mode_refuses_targets_that_cannot_run_in_process(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Artifacts that run only through their own drivers (Node, qemu) are refused up front
    with one line, instead of failing every case as 'not a torsh-gen artifact'."""
    from torsh_gen.backend import prepare
    from torsh_gen.errors import InputError
    from torsh_gen.tools.conformance import main

    assert main(["--target", target, "--filter", "^test_relu$"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"target {target}: its artifact cannot run inside this Python process" in err
    with pytest.raises(InputError, match="cannot run inside this Python process"):
        prepare(__file__, mode="compiled", target=target)
