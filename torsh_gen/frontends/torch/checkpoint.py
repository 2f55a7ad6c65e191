"""State-dict checkpoints (``.pth``, ``.bin``, ``.safetensors``) plus a module factory.

A checkpoint holds weights only, so the user names the code that builds the module
(``pkg.module:factory``). Pickled checkpoints load with ``weights_only=True``: a file
whose pickle would import or call anything is refused instead of run.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from torsh_gen.errors import InputError, ModelLoadError
from torsh_gen.frontends.torch._deps import require_torch
from torsh_gen.frontends.torch.inputs import example_tensors
from torsh_gen.ir.graph import Graph

CHECKPOINT_SUFFIXES = (".pth", ".bin", ".safetensors")
_WRAPPERS = ("state_dict", "model_state_dict", "model")
_SHOW = 8


def refuse_bare_checkpoint(path: str | os.PathLike) -> Graph:
    """The loader for checkpoint extensions without --module: explain what is needed."""
    p = Path(path)
    raise InputError(
        f"{p}: a state-dict checkpoint holds weights only; name the module that uses them: "
        f"torsh-gen convert {p.name} --module pkg.module:factory "
        "--input-shape x=1x3x224x224 -o model.onnx"
    )


def import_factory(spec: str) -> Any:
    """The callable named by ``pkg.module:factory`` (the current folder is importable)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise InputError(
            f"--module '{spec}': expected pkg.module:factory (a module path, a colon, a callable)"
        )
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:
        raise InputError(
            f"--module '{spec}': cannot import '{mod_name}' ({type(e).__name__}: {e})"
        ) from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--module '{spec}': '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"--module '{spec}': '{attr}' is not callable; name a class or a function")
    return obj


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a checkpoint file, loaded without running any code it carries."""
    torch = require_torch()
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: not a safetensors file ({e})") from None
    import pickle

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelLoadError(
            f"{path}: refused: the checkpoint's pickle needs more than tensors "
            f"(loaded with weights_only=True so it cannot run code): {_pickle_reason(e)}"
        ) from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"{path}: not a PyTorch checkpoint ({first})") from None
    return _unwrap(data, path)


def _pickle_reason(e: Exception) -> str:
    """The line of torch's refusal that names the blocked global, not its advice."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln:
            return ln.split(" was not an allowed")[0].split(". ")[0].rstrip(".")
    return "it references objects other than tensors"


def _unwrap(data: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(data, dict):
        for key in _WRAPPERS:
            inner = data.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                data = inner
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelLoadError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    if data and all(k.startswith("module.") for k in data):  # saved from DataParallel
        data = {k[len("module.") :]: v for k, v in data.items()}
    return data


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def load_checkpoint(path: str | os.PathLike, factory: str, input_specs: dict) -> Graph:
    """Build the module with ``factory``, load the checkpoint's weights into it, import it."""
    torch = require_torch()
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: no such file; check the path")
    state = read_state_dict(p)
    build = import_factory(factory)
    try:
        module = build()
    except Exception as e:
        raise InputError(
            f"--module '{factory}': calling it failed ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(
            f"--module '{factory}': returned {type(module).__name__}, not a torch.nn.Module"
        )
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        lines = [s.strip() for s in str(e).splitlines() if "size mismatch" in s]
        raise InputError(
            f"{p}: weights do not fit {factory}: {'; '.join(lines[:_SHOW]) or str(e)}"
        ) from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_listing(unexpected)}")
        raise InputError(f"{p}: checkpoint keys do not match {factory}: {'; '.join(parts)}")
    module.eval()
    names = _forward_names(module)
    args = example_tensors(input_specs, names, str(p))
    from torsh_gen.frontends.torch.export import from_torch

    graph = from_torch(module, args)
    graph.meta["conversion"]["source"] = f"{p.name} ({len(state)} tensors) into {factory}"
    return graph


def _forward_names(module: Any) -> list[str]:
    import inspect

    params = inspect.signature(module.forward).parameters.values()
    return [q.name for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
