"""Proto messages to arrays and back, with the same checks as every other request path.

A ``Tensor`` carries raw little-endian bytes, a numpy dtype name and a shape; the model's
tensor names map to generated proto field names (``INPUT_FIELDS``, ``OUTPUT_FIELDS``).
"""

from __future__ import annotations

import math

import numpy as np

from .proto import tiny_cnn_pb2 as pb
from .signature import INPUTS, OUTPUTS, RequestError

#: Model input name -> field of PredictRequest, in model order.
INPUT_FIELDS = {
    "image": "image",
}
#: Model output name -> field of PredictResponse, in model order.
OUTPUT_FIELDS = {
    "probs": "probs",
}

_DTYPES = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64".split()
)


def to_tensor(x: np.ndarray) -> pb.Tensor:
    """An array as a Tensor message."""
    x = np.ascontiguousarray(x)
    little = x.astype(x.dtype.newbyteorder("<"), copy=False)
    return pb.Tensor(dtype=x.dtype.name, shape=list(x.shape), data=little.tobytes())


def from_tensor(message: pb.Tensor, what: str) -> np.ndarray:
    """A Tensor message as an array; RequestError when dtype, shape and bytes disagree."""
    if message.dtype not in _DTYPES:
        raise RequestError(
            f"{what} has dtype {message.dtype!r}; use a numpy name such as 'float32'"
        )
    shape = tuple(message.shape)
    if any(d < 0 for d in shape):
        raise RequestError(f"{what} has a negative dim in shape {list(shape)}")
    dtype = np.dtype(message.dtype)
    expected = math.prod(shape) * dtype.itemsize
    if len(message.data) != expected:
        raise RequestError(
            f"{what} has {len(message.data)} bytes of data; {message.dtype} {list(shape)} needs {expected}"
        )
    x = np.frombuffer(message.data, dtype=dtype.newbyteorder("<")).reshape(shape)
    return np.array(x, dtype=dtype)  # a writable copy in native byte order


def request_arrays(request: pb.PredictRequest) -> dict:
    """The request's inputs by model name (checked against the signature later)."""
    missing = [spec for spec in INPUTS if not request.HasField(INPUT_FIELDS[spec.name])]
    if missing:
        described = ", ".join(
            f"{INPUT_FIELDS[s.name]} (input {s.name!r}, {s.describe()})" for s in missing
        )
        raise RequestError(f"missing field(s) {described}")
    return {
        spec.name: from_tensor(getattr(request, INPUT_FIELDS[spec.name]), f"input {spec.name!r}")
        for spec in INPUTS
    }


def predict_request(inputs: dict) -> pb.PredictRequest:
    """A PredictRequest for arrays by model input name."""
    unknown = [name for name in inputs if name not in INPUT_FIELDS]
    if unknown:
        raise KeyError(f"unknown input(s) {unknown}; the model takes {list(INPUT_FIELDS)}")
    return pb.PredictRequest(
        **{INPUT_FIELDS[name]: to_tensor(np.asarray(x)) for name, x in inputs.items()}
    )


def predict_response(outputs: dict) -> pb.PredictResponse:
    """A PredictResponse for the model's outputs by name."""
    return pb.PredictResponse(
        **{OUTPUT_FIELDS[spec.name]: to_tensor(outputs[spec.name]) for spec in OUTPUTS}
    )


def response_arrays(response: pb.PredictResponse) -> dict:
    """The outputs of a PredictResponse by model name."""
    return {
        spec.name: from_tensor(getattr(response, OUTPUT_FIELDS[spec.name]), f"output {spec.name!r}")
        for spec in OUTPUTS
    }
