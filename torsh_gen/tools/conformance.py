"""ONNX backend node conformance: run every node test case through torsh-gen.

``python -m torsh_gen.tools.conformance [--filter REGEX] [--failures FILE] [--mode M]`` runs
the cases of ``onnx.backend.test.case.node.collect_testcases`` through ``torsh_gen.backend``
(``--mode reference``, the default: the interpreter; ``--mode compiled``: each case is
compiled into a package and run; ``--target T``: compiled for a native target such as
``x86_64-linux``, whose artifacts have the same Python interface),
compares outputs as onnx's own runner does (shape, dtype, allclose with the case's
rtol/atol; strings equal; sequences element-wise) and prints the pass count.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

#: Seconds one case may run before it counts as a failure (hang guard).
CASE_TIMEOUT_S = 60


@dataclass
class CaseResult:
    """Outcome of one conformance case."""

    name: str
    passed: bool
    message: str = ""
    seconds: float = 0.0


def collect_cases(pattern: str | None = None) -> list[Any]:
    """The node test cases, optionally filtered by a regex on their names."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    if pattern:
        rx = re.compile(pattern)
        cases = [c for c in cases if rx.search(c.name)]
    return sorted(cases, key=lambda c: c.name)


def _to_array(x: Any) -> Any:
    if isinstance(x, onnx.TensorProto):
        return onnx.numpy_helper.to_array(x)
    if isinstance(x, list):
        return [_to_array(i) for i in x]
    return x


def assert_similar(ref: Any, out: Any, rtol: float, atol: float) -> None:
    """Compare one output with its reference the way onnx's backend runner does."""
    ref, out = _to_array(ref), _to_array(out)
    if isinstance(ref, (list, tuple)):
        if not isinstance(out, (list, tuple)):
            raise AssertionError(f"expected a sequence, got {type(out).__name__}")
        if len(ref) != len(out):
            raise AssertionError(f"sequence length {len(out)} != {len(ref)}")
        for r, o in zip(ref, out):
            assert_similar(r, o, rtol, atol)
        return
    if ref is None:
        if out is not None:
            raise AssertionError("expected an empty optional")
        return
    if not isinstance(out, np.ndarray):
        raise AssertionError(f"expected an array, got {type(out).__name__}")
    if tuple(out.shape) != tuple(ref.shape):
        raise AssertionError(f"shape {out.shape} != expected {ref.shape}")
    if ref.dtype == object:
        np.testing.assert_array_equal(out, ref)
        return
    if out.dtype != ref.dtype:
        raise AssertionError(f"dtype {out.dtype} != expected {ref.dtype}")
    r_tol = rtol
    if out.dtype.name == "bfloat16":
        r_tol = max(rtol, 2**-6)
    if out.dtype.kind not in "biufc" or out.dtype.name == "bfloat16":
        out, ref = out.astype(np.float32), ref.astype(np.float32)
    np.testing.assert_allclose(out, ref, rtol=r_tol, atol=atol)


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise _Timeout()


def run_case(case: Any, mode: str = "reference", target: str = "cpu") -> CaseResult:
    """Run one case through torsh_gen.backend (``mode``: reference or compiled, for
    ``target``) and compare."""
    from torsh_gen.backend import prepare

    start = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            rep = prepare(case.model, mode=mode, target=target) if mode == "compiled" else prepare(case.model, mode=mode)
            for inputs, ref_outputs in case.data_sets:
                outs = rep.run(list(inputs))
                if len(outs) != len(ref_outputs):
                    raise AssertionError(f"{len(outs)} outputs, expected {len(ref_outputs)}")
                for i, (r, o) in enumerate(zip(ref_outputs, outs)):
                    try:
                        assert_similar(r, o, case.rtol, case.atol)
                    except AssertionError as e:
                        raise AssertionError(f"output {i}: {str(e).strip().splitlines()[0:6]}") from None
        return CaseResult(case.name, True, seconds=time.perf_counter() - start)
    except _Timeout:
        return CaseResult(case.name, False, f"timeout after {CASE_TIMEOUT_S}s", time.perf_counter() - start)
    except Exception as e:  # any failure of any kind counts against the case
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
        return CaseResult(case.name, False, msg, time.perf_counter() - start)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_all(pattern: str | None = None, mode: str = "reference", target: str = "cpu") -> Iterator[CaseResult]:
    """Run every (filtered) case, yielding results as they finish."""
    for case in collect_cases(pattern):
        yield run_case(case, mode, target)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the pass count, write failures, check the floor."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--filter", default=None, help="regex on case names")
    p.add_argument("--failures", default=None, help="write failing cases and reasons to this file")
    p.add_argument("--json", default=None, help="write a JSON summary to this file")
    p.add_argument("--min-pass", type=int, default=0, help="exit 1 if fewer cases pass")
    p.add_argument("-v", "--verbose", action="store_true", help="print every failure")
    p.add_argument("--mode", choices=("reference", "compiled"), default="reference", help="run the reference interpreter or compiled artifacts")
    p.add_argument("--target", default="cpu", help="target of compiled mode: cpu, a native target (x86_64-linux, host), cuda-host (the CUDA plan run on this CPU) or tvm-cpu (built by the TVM backend)")
    args = p.parse_args(argv)
    if args.target != "cpu":
        args.mode = "compiled"
        if args.target != "cuda-host" and not args.target.startswith("tvm-"):
            from torsh_gen.backend import check_runs_in_process
            from torsh_gen.errors import InputError

            try:
                check_runs_in_process(args.target)
            except InputError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
    results = list(run_all(args.filter, args.mode, args.target))
    passed = [r for r in results if r.passed]
    failed = [r for r in results if not r.passed]
    if args.verbose:
        for r in failed:
            print(f"FAIL {r.name}: {r.message}")
    if args.failures:
        Path(args.failures).write_text("".join(f"{r.name}\t{r.message}\n" for r in failed))
    total = len(results)
    pct = 100.0 * len(passed) / total if total else 0.0
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": args.mode, "target": args.target, "passed": len(passed), "total": total, "percent": round(pct, 2), "onnx": onnx.__version__}, indent=2) + "\n")
    label = args.mode if args.target == "cpu" else f"{args.mode}, {args.target}"
    print(f"conformance ({label}): {len(passed)} passed, {len(failed)} failed of {total} ({pct:.1f}%)")
    return 1 if len(passed) < args.min_pass else 0


if __name__ == "__main__":
    sys.exit(main())
