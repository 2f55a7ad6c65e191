"""ImageDecoder against Pillow-encoded images, and garbage bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from onnx import TensorProto, helper
from PIL import Image

from tests.conftest import make_model, tensor_info
from torsh_gen.backend import prepare


def _decode(data: bytes, pixel_format: str = "RGB") -> np.ndarray:
    node = helper.make_node("ImageDecoder", ["x"], ["y"], pixel_format=pixel_format)
    model = make_model([node], [tensor_info("x", [None], TensorProto.UINT8)], [tensor_info("y", None, TensorProto.UINT8)], opset=20)
    return prepare(model).run([np.frombuffer(data, np.uint8)])[0]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "PPM"])
def test_lossless_formats_round_trip(fmt: str):
    img = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    np.testing.assert_array_equal(_decode(buf.getvalue()), img)
    np.testing.assert_array_equal(_decode(buf.getvalue(), "BGR"), img[:, :, ::-1])
    gray = _decode(buf.getvalue(), "Grayscale")
    assert gray.shape == (7, 5, 1) and gray.dtype == np.uint8


def test_undecodable_bytes_give_an_empty_image():
    assert _decode(b"definitely not an image").shape == (0, 0, 3)
