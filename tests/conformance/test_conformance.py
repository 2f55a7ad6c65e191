"""The ONNX backend node conformance suite must not regress below the committed figure.

`make conformance` prints the current count and writes the failing cases; raise
tests/conformance/baseline.json's "passed" when the count goes up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torsh_gen.tools.conformance import run_all

BASELINE = Path(__file__).with_name("baseline.json")


def test_conformance_pass_count_does_not_regress():
    baseline = json.loads(BASELINE.read_text())
    results = list(run_all())
    passed = sum(r.passed for r in results)
    failed = sorted(r.name for r in results if not r.passed)
    assert len(results) >= baseline["total"], "fewer conformance cases than when the baseline was set"
    assert passed >= baseline["passed"], f"{passed} passed < baseline {baseline['passed']}; failing: {failed[:40]}"


@pytest.mark.slow
def test_compiled_mode_conformance_does_not_regress():
    """The node suite through compiled CPU packages (about 8 minutes: `make test-slow`)."""
    baseline = json.loads(BASELINE.read_text())
    results = list(run_all(mode="compiled"))
    passed = sum(r.passed for r in results)
    failed = sorted(r.name for r in results if not r.passed)
    assert passed >= baseline["compiled_passed"], f"{passed} passed < baseline {baseline['compiled_passed']}; failing: {failed[:40]}"


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
    baseline = json.loads(BASELINE.read_text())
    results = list(run_all(mode="compiled", target="cuda-host"))
    passed = sum(r.passed for r in results)
    failed = sorted(r.name for r in results if not r.passed)
    assert passed >= baseline["cuda_host_passed"], f"{passed} passed < baseline {baseline['cuda_host_passed']}; failing: {failed[:40]}"
