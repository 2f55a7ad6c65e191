"""Request bodies to arrays and outputs to response bodies: JSON, npy and npz.

* ``application/json``: ``{"inputs": {"<input name>": nested lists, ...}}``; answers
  ``{"model": ..., "outputs": {"<output name>": nested lists, ...}}``.
* ``application/x-npz``: an ``np.savez`` archive with one array per input name.
* ``application/x-npy``: one ``np.save`` array, for models with a single input.

Answers are JSON unless the request's ``Accept`` header asks for ``application/x-npz``.
Archives are read without pickle, and their members' sizes are checked against the size
limit before anything is decompressed.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from .signature import INPUTS, MODEL_NAME, RequestError, from_json, to_json

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"
_NPZ_ALIASES = (NPZ, "application/zip", "application/octet-stream")


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header (lower-case, parameters dropped)."""
    return (header or "").split(";")[0].strip().lower()


def decode(body: bytes, content_type: str | None, limit: int) -> dict:
    """The request's arrays by input name (not yet checked against the signature)."""
    kind = media_type(content_type) or JSON
    if kind == JSON:
        return _decode_json(body)
    if kind == NPY:
        if len(INPUTS) != 1:
            names = ", ".join(repr(s.name) for s in INPUTS)
            raise RequestError(
                f"{NPY} carries one array but the model takes {len(INPUTS)} inputs ({names}); send {NPZ}"
            )
        return {INPUTS[0].name: _load_npy(io.BytesIO(body), "the body")}
    if kind in _NPZ_ALIASES:
        return _decode_npz(body, limit)
    raise RequestError(
        f"unsupported Content-Type {kind!r}; send {JSON}, {NPZ} or {NPY}", status=415
    )


def _decode_json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise RequestError(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), dict):
        raise RequestError(
            'the JSON body must be an object {"inputs": {"<input name>": nested lists, ...}}'
        )
    inputs = data["inputs"]
    from .signature import check_names

    check_names(list(inputs))
    return {name: from_json(name, value) for name, value in inputs.items()}


def _load_npy(stream, what: str) -> np.ndarray:
    try:
        x = np.load(stream, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise RequestError(f"{what} is not a readable .npy array: {e}") from None
    if not isinstance(x, np.ndarray):
        raise RequestError(f"{what} is not a .npy array")
    return x


def _decode_npz(body: bytes, limit: int) -> dict:
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise RequestError(f"the body is not a readable .npz archive: {e}") from None
    total = sum(info.file_size for info in infos)
    if total > limit:
        raise RequestError(
            f"the archive expands to {total} bytes, over the limit of {limit}", status=413
        )
    arrays = {}
    with archive:
        for info in infos:
            name = info.filename.removesuffix(".npy")
            if name in arrays:
                raise RequestError(f"the archive holds {name!r} twice")
            with archive.open(info) as member:
                arrays[name] = _load_npy(io.BytesIO(member.read()), f"archive member {name!r}")
    return arrays


def encode(outputs: dict, accept: str | None) -> tuple[bytes, str]:
    """The response body and its media type for the model's outputs."""
    if NPZ in (accept or "").lower():
        return write_npz(outputs), NPZ
    data = {
        "model": MODEL_NAME,
        "outputs": {name: to_json(value) for name, value in outputs.items()},
    }
    return json.dumps(data, separators=(",", ":")).encode(), JSON


def write_npz(arrays: dict) -> bytes:
    """An uncompressed .npz archive of ``arrays`` (any names, unlike ``np.savez``'s keywords)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()
