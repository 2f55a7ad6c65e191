"""``torsh-gen run``: execute a model with the reference kernels on given or random inputs."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.execute import run_graph
from torsh_gen.ops.inference import bound_types

#: Random inputs above this many bytes in total are refused (absurd or unbound shapes).
MAX_RANDOM_INPUT_BYTES = 4 << 30


def model_inputs(graph: Graph) -> list[Any]:
    """The inputs a caller must provide (inputs with an initializer default are optional)."""
    return [v for v in graph.inputs if v.const is None]


def random_inputs(graph: Graph, bindings: Mapping[str, Any] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays for every required input, from the declared dtypes and shapes.

    Symbolic dims take their value from ``bindings`` (``{"batch": 2}``) and default to 1.
    """
    rng = np.random.default_rng(seed)
    bindings = dict(bindings or {})
    feeds: dict[str, np.ndarray] = {}
    total = 0
    for v in model_inputs(graph):
        t = v.type
        if not isinstance(t, TensorType) or t.shape is None:
            raise InputError(f"input '{v.name}' has no declared tensor shape; pass --inputs FILE.npz")
        if isinstance(bindings.get(v.name), tuple):
            shape = bindings[v.name]
        else:
            shape = tuple(d if isinstance(d, int) else int(bindings.get(d, 1)) if isinstance(d, str) else 1 for d in t.shape)
        dtype = t.dtype
        nbytes = int(np.prod(shape, dtype=object)) * max(dtype.numpy.itemsize if dtype != DType.STRING else 8, 1)
        total += nbytes
        if total > MAX_RANDOM_INPUT_BYTES:
            raise InputError(f"input '{v.name}' of shape {shape} needs {nbytes} bytes; bind smaller dims with --input-shape")
        feeds[v.name] = _random_array(rng, dtype, shape)
    return feeds


def _random_array(rng: np.random.Generator, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == DType.BOOL:
        return np.asarray(rng.random(shape) < 0.5)  # a 0-d comparison gives a scalar, not an array
    if dtype == DType.STRING:
        return np.array([f"s{i}" for i in range(int(np.prod(shape)))], dtype=object).reshape(shape)
    if dtype.is_integer:
        return rng.integers(0, 8, size=shape).astype(dtype.numpy)
    if dtype in (DType.COMPLEX64, DType.COMPLEX128):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype.numpy)
    return rng.standard_normal(shape).astype(np.float32).astype(dtype.numpy)


def load_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays from an .npz (keyed by input name) or a single .npy (for one-input models)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such inputs file")
    try:
        if p.suffix == ".npy":
            return {"": np.load(p, allow_pickle=False)}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{p}: cannot read inputs ({e}); expected an .npz keyed by input name") from None


def check_inputs(graph: Graph, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Validate names, dtypes and shapes of ``feeds`` against the model; return them in order."""
    required = model_inputs(graph)
    if set(feeds) == {""} and len(required) == 1:
        feeds = {required[0].name: feeds[""]}
    known = {v.name: v for v in graph.inputs}
    unknown = [k for k in feeds if k not in known]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {[v.name for v in required]}")
    missing = [v.name for v in required if v.name not in feeds]
    if missing:
        raise InputError(f"missing input(s) {missing}; provide them in the inputs file")
    symbols: dict[str, int] = {}
    for name, arr in feeds.items():
        t = known[name].type
        if not isinstance(t, TensorType) or not isinstance(arr, np.ndarray):
            continue
        if arr.dtype != t.dtype.numpy and not (t.dtype == DType.STRING and arr.dtype.kind in "OUS"):
            raise InputError(f"input {name!r} must be {t.dtype.name.lower()} ({t.dtype.numpy}), got {arr.dtype}")
        if t.shape is None:
            continue
        if arr.ndim != len(t.shape):
            raise InputError(f"input {name!r} must have rank {len(t.shape)} (shape {_fmt(t.shape)}), got shape {list(arr.shape)}")
        for d, actual in zip(t.shape, arr.shape):
            if isinstance(d, int) and d != actual:
                raise InputError(f"input {name!r} must have shape {_fmt(t.shape)}, got {list(arr.shape)}")
            if isinstance(d, str):
                if symbols.setdefault(d, actual) != actual:
                    raise InputError(f"dimension '{d}' is {symbols[d]} in one input and {actual} in input {name!r}")
    return {k: (v.astype(object) if isinstance(v, np.ndarray) and v.dtype.kind in "US" else v) for k, v in feeds.items()}


def _fmt(shape: tuple) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def run_model(graph: Graph, feeds: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Run ``graph`` on validated inputs; outputs keyed by output name."""
    checked = check_inputs(graph, feeds)
    shapes = {k: tuple(v.shape) for k, v in checked.items() if isinstance(v, np.ndarray)}
    with bound_types(graph, shapes):  # static shapes let the executor refuse absurd allocations
        outs = run_graph(graph, checked, seed=seed)
    return {v.name: o for v, o in zip(graph.outputs, outs)}


def save_outputs(outputs: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write tensor outputs to an .npz (sequence outputs as name_0, name_1, ...)."""
    p = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        if isinstance(value, list):
            for i, item in enumerate(value):
                arrays[f"{name}_{i}"] = np.asarray(item)
        elif value is not None:
            arrays[name] = np.asarray(value)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, p)
    return p
