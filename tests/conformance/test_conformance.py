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
