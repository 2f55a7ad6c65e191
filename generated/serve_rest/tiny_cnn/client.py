"""A small Python client for the service (httpx).

    from tiny_cnn.client import Client
    from tiny_cnn.signature import example_inputs

    with Client("http://127.0.0.1:8000") as client:
        outputs = client.predict(example_inputs())  # {input name: numpy array}

Arrays travel as .npz (exact dtypes and values); ``predict_json`` sends JSON instead.
"""

from __future__ import annotations

import io
import zipfile

import httpx
import numpy as np

MODEL_NAME = "tiny_cnn"


class Client:
    """Calls ``/v1/models/tiny_cnn:predict``; ``token`` is sent as a bearer token when given."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self._path = f"/v1/models/{MODEL_NAME}:predict"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def predict(self, inputs: dict) -> dict:
        """Outputs by name for inputs by name (numpy arrays of the model's dtypes)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, value in inputs.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
        headers = {"Content-Type": "application/x-npz", "Accept": "application/x-npz"}
        response = self._http.post(self._path, content=buffer.getvalue(), headers=headers)
        _raise_for_error(response)
        with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    def predict_json(self, inputs: dict) -> dict:
        """Like ``predict`` but sends and receives JSON (floats as JSON numbers)."""
        body = {"inputs": {name: np.asarray(value).tolist() for name, value in inputs.items()}}
        response = self._http.post(self._path, json=body)
        _raise_for_error(response)
        return response.json()["outputs"]

    def ready(self) -> bool:
        """True when the model is loaded and warmed up."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False


class ServiceError(RuntimeError):
    """An error answer from the service; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    raise ServiceError(response.status_code, message)
