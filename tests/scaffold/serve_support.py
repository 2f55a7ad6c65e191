"""Helpers of the service-generator tests: models, generating, running a server process, load.

Servers run as real subprocesses (``python -m NAME`` from the project folder) on 127.0.0.1
and a free port; every wait has a deadline and every process is killed in ``finally``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.conftest import make_model, tensor_info

#: Names no generated code may execute: the sentinel proves they stayed data.
SENTINEL = Path("/tmp/torsh_gen_serve_pwned")
EVIL = f"__import__('os').system('touch {SENTINEL}')"
HOSTILE_INPUTS = [f"x\"'\n{EVIL}", "class", "a b", "a-b"]  # the last two sanitize alike
HOSTILE_OUTPUTS = ['print("hi")\n"""', "def"]
HOSTILE_DIM = "n\"'\n)"


def hostile_model() -> onnx.ModelProto:
    """Inputs/outputs named with quotes, newlines, code, keywords and sanitizing duplicates."""
    a, b, c, d = HOSTILE_INPUTS
    nodes = [
        helper.make_node("Add", [a, b], ["s"], name="add\n'"),
        helper.make_node("Mul", ["s", c], ["m"]),
        helper.make_node("Sub", ["m", d], [HOSTILE_OUTPUTS[0]]),
        helper.make_node("Relu", [a], [HOSTILE_OUTPUTS[1]]),
    ]
    inputs = [tensor_info(n, [HOSTILE_DIM, 3]) for n in HOSTILE_INPUTS]
    outputs = [tensor_info(n, [HOSTILE_DIM, 3]) for n in HOSTILE_OUTPUTS]
    model = make_model(nodes, inputs, outputs, name="g\"'\n")
    model.doc_string = '"""\nimport os; os.system("x")'
    return model


def int_model() -> onnx.ModelProto:
    """An int64 input beside a float one, fixed shapes (no batch dim): Cast + Add."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["f", "x"], ["y"]),
    ]
    return make_model(
        nodes,
        [tensor_info("ids", [2, 3], TensorProto.INT64), tensor_info("x", [2, 3])],
        [tensor_info("y", [2, 3])],
    )


def generate(
    model_path: Path, out: Path, kind: str, engine: str, name: str | None = None, warm: bool = True
):
    """Generate a service project; ``warm`` fills the artifact's numba caches from shared ones."""
    from torsh_gen.scaffold.serve import generate_service
    from torsh_gen.tools.serve_model import serve_model

    report = generate_service(serve_model(model_path), out, kind=kind, engine=engine, name=name)
    if warm and engine == "compiled":  # the shipped project has no machine code; tests may
        from torsh_gen.backends.python import conv_cache
        from torsh_gen.backends.python.kernel_cache import precompile

        if (out / report.name / "artifact" / conv_cache.FILE).is_file():
            conv_cache.install(out / report.name / "artifact")
        precompile(out / report.name / "artifact")
    return report


def onnxruntime_outputs(model_path: Path, inputs: dict) -> dict:
    """The reference answer."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(
    project: Path,
    name: str,
    ready: Callable[[int], bool],
    *args: str,
    env: dict | None = None,
    timeout: float = 240,
) -> Iterator[int]:
    """Run ``python -m name --host 127.0.0.1 --port P *args`` in ``project``; yield P once ready."""
    port = free_port()
    log = project / f"server-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", name, "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=project, stdout=out, stderr=subprocess.STDOUT, env=full_env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while not ready(port):
                if proc.poll() is not None:
                    raise AssertionError(
                        f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.2)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def run_project_tests(project: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """The generated project's own pytest suite, run from its folder."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def load(call: Callable[[], object], seconds: float = 2.0, threads: int = 4) -> tuple[int, float]:
    """Call ``call`` from ``threads`` threads for ``seconds``; (requests done, requests/s)."""
    done = [0] * threads
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        try:
            while time.monotonic() < stop:
                call()
                done[i] += 1
        except BaseException as e:  # reported below
            errors.append(e)

    start = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 60)
    elapsed = time.monotonic() - start
    if errors:
        raise errors[0]
    return sum(done), sum(done) / elapsed


def random_inputs(specs: list[tuple[str, str, tuple[int, ...]]], seed: int = 0) -> dict:
    """Inputs by name for (name, dtype, shape) triples."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, dtype, shape in specs:
        if np.dtype(dtype).kind == "f":
            out[name] = rng.standard_normal(shape).astype(dtype)
        else:
            out[name] = rng.integers(-5, 5, shape).astype(dtype)
    return out
