"""ImageDecoder: encoded image bytes (BMP, JPEG, JPEG 2000, TIFF, PNG, WebP, PNM) → HWC uint8.

Decoding is Pillow's (libjpeg-turbo's fancy upsampling for JPEG, as the spec asks).
Pillow's decompression-bomb limit stays on, since the bytes are untrusted input; an image
that cannot be decoded gives an empty tensor, as the spec says.
"""

from __future__ import annotations

import io

import numpy as np

from torsh_gen.ops.registry import STRING, OpSpec, RunContext, op


@op("ImageDecoder", since=20)
class ImageDecoder(OpSpec):
    """Decode one image; pixel_format RGB (default), BGR or Grayscale."""

    attrs = {"pixel_format": STRING("RGB")}
    flops_per_element = 0

    def run(self, ctx: RunContext, encoded: np.ndarray) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        fmt = ctx.attrs.pixel_format
        channels = 1 if fmt == "Grayscale" else 3
        try:
            with Image.open(io.BytesIO(encoded.astype(np.uint8).tobytes())) as img:
                pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            return np.zeros((0, 0, channels), np.uint8)
        if channels == 1:
            return pixels[:, :, None].copy()
        return pixels[:, :, ::-1].copy() if fmt == "BGR" else pixels
