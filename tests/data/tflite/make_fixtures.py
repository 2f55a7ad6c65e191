"""Build the TFLite test fixtures with TensorFlow's own converter (run once, commit the output).

The suite reads the committed ``.tflite`` files and never needs TensorFlow. To rebuild them::

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu
    /tmp/tfenv/bin/python tests/data/tflite/make_fixtures.py

Models are written as ``tf.Module`` s with ``tf.nn`` ops (not Keras layers) so that the
TFLite ops each fixture exercises are explicit and stable across TensorFlow releases:

- ``mobilenet_float.tflite``: MobileNet-like CNN: CONV_2D (fused RELU6), DEPTHWISE_CONV_2D,
  residual ADD, HARD_SWISH, PAD, MAX_POOL_2D, AVERAGE_POOL_2D, CONCATENATION,
  RESIZE_BILINEAR, squeeze-excite (MEAN, LOGISTIC, MUL), TANH, SUB, STRIDED_SLICE,
  TRANSPOSE, RESHAPE, FULLY_CONNECTED, SOFTMAX.
- ``mobilenet_int8.tflite``: the same net, full-integer (int8 inputs, outputs and
  activations; per-channel int8 weights; int32 biases).
- ``mobilenet_int8_float_io.tflite``: full-integer inside, float interface (QUANTIZE at
  the input, DEQUANTIZE at the output).
- ``mobilenet_fp16.tflite``: float16 weights, DEQUANTIZE to float32 before use.
- ``transformer_block.tflite``: pre-norm transformer encoder block (layer norm from
  MEAN/SQUARED_DIFFERENCE/RSQRT, multi-head attention with BATCH_MATMUL, GELU MLP).
- ``mlp.tflite``: FULLY_CONNECTED stack with a dynamic batch dimension (RELU, TANH).
- ``mlp_dynamic_range.tflite``: the MLP with dynamic-range (hybrid) quantization: int8
  weights, float activations.
- ``mlp_int16x8.tflite``: the MLP with 16-bit activations and 8-bit weights (refused).
- ``int8_ops.tflite``: full-integer, every quantized op once, each reading the model's
  int8 inputs directly, so each output checks one op's quantized arithmetic in isolation.
- ``float_ops.tflite``: float32, one branch per remaining mapped op or option
  (nearest resizing in three coordinate modes, slicing masks and negative strides,
  reductions, PACK/SQUEEZE/EXPAND_DIMS, tanh-approximated GELU, ...).
- ``unsupported.tflite``: ops the frontend does not map (LOCAL_RESPONSE_NORMALIZATION,
  CUMSUM) around supported ones, for the error that lists them all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent
IMG = (1, 24, 24, 3)


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> tf.Variable:
    return tf.Variable(rng.normal(0.0, scale, size=shape).astype(np.float32))


class MobileNetLike(tf.Module):
    """A tiny MobileNetV3-flavoured CNN covering the common mobile ops."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.stem_w, self.stem_b = _w(rng, 3, 3, 3, 8), _w(rng, 8, scale=0.1)
        self.dw_w, self.dw_b = _w(rng, 3, 3, 8, 1), _w(rng, 8, scale=0.1)
        self.pw_w, self.pw_b = _w(rng, 1, 1, 8, 8), _w(rng, 8, scale=0.1)
        self.se1_w, self.se1_b = _w(rng, 8, 4), _w(rng, 4, scale=0.1)
        self.se2_w, self.se2_b = _w(rng, 4, 8), _w(rng, 8, scale=0.1)
        self.exp_w, self.exp_b = _w(rng, 1, 1, 16, 16), _w(rng, 16, scale=0.1)
        self.dw2_w, self.dw2_b = _w(rng, 3, 3, 16, 2), _w(rng, 32, scale=0.1)
        self.fc_w, self.fc_b = _w(rng, 32, 10), _w(rng, 10, scale=0.1)

    @tf.function(input_signature=[tf.TensorSpec(IMG, tf.float32, name="image")])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.conv2d(x, self.stem_w, 2, "SAME") + self.stem_b
        y = tf.nn.relu6(y)  # 12x12x8
        r = tf.nn.depthwise_conv2d(y, self.dw_w, [1, 1, 1, 1], "SAME") + self.dw_b
        r = tf.nn.relu(r)
        r = tf.nn.conv2d(r, self.pw_w, 1, "VALID") + self.pw_b
        y = y + r  # residual ADD
        y = y * tf.nn.relu6(y + 3.0) / 6.0  # HARD_SWISH
        s = tf.reduce_mean(y, axis=[1, 2])  # squeeze-excite
        s = tf.nn.relu(tf.matmul(s, self.se1_w) + self.se1_b)
        s = tf.sigmoid(tf.matmul(s, self.se2_w) + self.se2_b)
        y = y * tf.reshape(s, [1, 1, 1, 8])
        p = tf.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]])
        a = tf.nn.max_pool2d(p, 3, 2, "VALID")  # 6x6x8
        b = tf.nn.avg_pool2d(y, 2, 2, "SAME")  # 6x6x8
        y = tf.concat([a, b], axis=3)  # 6x6x16
        y = tf.nn.conv2d(y, self.exp_w, 1, "SAME") + self.exp_b
        y = tf.tanh(y) - 0.25 * y  # TANH, SUB
        y = tf.image.resize(y, [9, 9], method="bilinear")  # RESIZE_BILINEAR
        y = tf.nn.depthwise_conv2d(y, self.dw2_w, [1, 2, 2, 1], "VALID") + self.dw2_b  # 4x4x32
        y = tf.nn.relu6(y)
        y = y[:, 1:4, ::2, :]  # STRIDED_SLICE -> 3x2x32
        y = tf.transpose(y, [0, 2, 1, 3])  # TRANSPOSE -> 2x3x32
        y = tf.reshape(y, [1, 6, 32])
        y = tf.reduce_mean(y, axis=1)
        y = tf.matmul(y, self.fc_w) + self.fc_b
        return tf.nn.softmax(y)


class TransformerBlock(tf.Module):
    """Pre-norm encoder block: LN → multi-head self-attention → residual → LN → GELU MLP."""

    def __init__(self, tokens: int = 8, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        rng = np.random.default_rng(1)
        self.t, self.d, self.h = tokens, dim, heads
        self.ln1_g, self.ln1_b = tf.Variable(1 + 0.1 * rng.normal(size=dim).astype(np.float32)), _w(
            rng, dim, scale=0.1
        )
        self.ln2_g, self.ln2_b = tf.Variable(1 + 0.1 * rng.normal(size=dim).astype(np.float32)), _w(
            rng, dim, scale=0.1
        )
        self.wqkv, self.bqkv = _w(rng, dim, 3 * dim, scale=0.2), _w(rng, 3 * dim, scale=0.1)
        self.wo, self.bo = _w(rng, dim, dim, scale=0.2), _w(rng, dim, scale=0.1)
        self.w1, self.b1 = _w(rng, dim, 4 * dim, scale=0.2), _w(rng, 4 * dim, scale=0.1)
        self.w2, self.b2 = _w(rng, 4 * dim, dim, scale=0.2), _w(rng, dim, scale=0.1)

    def _ln(self, x: tf.Tensor, g: tf.Variable, b: tf.Variable) -> tf.Tensor:
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        var = tf.reduce_mean(tf.math.squared_difference(x, mean), axis=-1, keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + 1e-5) * g + b

    def _dense(self, x: tf.Tensor, w: tf.Variable, b: tf.Variable) -> tf.Tensor:
        return tf.matmul(tf.reshape(x, [-1, w.shape[0]]), w) + b

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 32), tf.float32, name="tokens")])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        t, d, h = self.t, self.d, self.h
        qkv = self._dense(self._ln(x, self.ln1_g, self.ln1_b), self.wqkv, self.bqkv)
        qkv = tf.transpose(tf.reshape(qkv, [1, t, 3, h, d // h]), [2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = tf.matmul(q, k, transpose_b=True) * (1.0 / np.sqrt(d // h))
        att = tf.nn.softmax(att, axis=-1)
        o = tf.reshape(tf.transpose(tf.matmul(att, v), [0, 2, 1, 3]), [1, t, d])
        x = x + tf.reshape(self._dense(o, self.wo, self.bo), [1, t, d])
        m = tf.nn.gelu(self._dense(self._ln(x, self.ln2_g, self.ln2_b), self.w1, self.b1))
        return x + tf.reshape(self._dense(m, self.w2, self.b2), [1, t, d])


class MLP(tf.Module):
    """Three dense layers with a dynamic batch dimension."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(2)
        self.w1, self.b1 = _w(rng, 16, 32), _w(rng, 32, scale=0.1)
        self.w2, self.b2 = _w(rng, 32, 32), _w(rng, 32, scale=0.1)
        self.w3, self.b3 = _w(rng, 32, 5), _w(rng, 5, scale=0.1)

    @tf.function(input_signature=[tf.TensorSpec((None, 16), tf.float32, name="features")])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
        x = tf.tanh(tf.matmul(x, self.w2) + self.b2)
        return tf.matmul(x, self.w3) + self.b3


class Int8Ops(tf.Module):
    """One branch per op, all reading the two inputs: per-op checks of int8 arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(4)
        self.conv_w, self.conv_b = _w(rng, 3, 3, 4, 6), _w(rng, 6, scale=0.1)
        self.dw_w, self.dw_b = _w(rng, 3, 3, 4, 2), _w(rng, 8, scale=0.1)
        self.fc_w, self.fc_b = _w(rng, 256, 8, scale=0.1), _w(rng, 8, scale=0.1)

    @tf.function(
        input_signature=[
            tf.TensorSpec((1, 8, 8, 4), tf.float32, name="x"),
            tf.TensorSpec((1, 8, 8, 4), tf.float32, name="y"),
        ]
    )
    def __call__(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "conv": tf.nn.relu6(tf.nn.conv2d(x, self.conv_w, 1, "SAME") + self.conv_b),
            "depthwise": tf.nn.depthwise_conv2d(x, self.dw_w, [1, 2, 2, 1], "SAME") + self.dw_b,
            "avg_pool": tf.nn.avg_pool2d(x, 2, 2, "SAME"),
            "max_pool": tf.nn.max_pool2d(x, 3, 2, "VALID"),
            "add": x + y,
            "mul": x * y,
            "sub": x - y,
            "hard_swish": x * tf.nn.relu6(x + 3.0) / 6.0,
            "logistic": tf.sigmoid(x),
            "tanh": tf.tanh(y),
            "mean": tf.reduce_mean(x, axis=[1, 2]),
            "fully_connected": tf.matmul(tf.reshape(x, [1, 256]), self.fc_w) + self.fc_b,
            "softmax": tf.nn.softmax(y),
            "resize": tf.image.resize(x, [12, 12], method="bilinear"),
            "concat": tf.concat([x, y], axis=3),
            "pad": tf.pad(y, [[0, 0], [1, 2], [0, 1], [0, 0]]),
            "strided_slice": x[:, 1:7:2, ::3, :],
            "transpose": tf.transpose(y, [0, 3, 1, 2]),
        }


class FloatOps(tf.Module):
    """One branch per op or option the CNN and transformer fixtures do not reach."""

    @tf.function(
        input_signature=[
            tf.TensorSpec((1, 6, 6, 4), tf.float32, name="x"),
            tf.TensorSpec((1, 6, 6, 4), tf.float32, name="y"),
        ]
    )
    def __call__(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        v = tf.reshape(x, [6, 24])
        return {
            "nearest": tf.image.resize(x, [9, 13], method="nearest"),
            "nearest_v1": tf.compat.v1.image.resize_nearest_neighbor(x, [11, 8]),
            "nearest_ac": tf.compat.v1.image.resize_nearest_neighbor(
                x, [11, 8], align_corners=True
            ),
            "bilinear_ac": tf.compat.v1.image.resize_bilinear(y, [10, 7], align_corners=True),
            "bilinear_v1": tf.compat.v1.image.resize_bilinear(y, [4, 9]),
            "leaky_relu": tf.nn.leaky_relu(x, alpha=0.3),
            "elu_free_ops": tf.maximum(x, y) - tf.minimum(x, 0.5) / (tf.abs(y) + 1.0),
            "exp_log": tf.exp(x) + tf.math.log(tf.abs(y) + 0.1) + tf.sqrt(tf.abs(x)),
            "square": tf.square(y) + tf.math.squared_difference(x, 0.25),
            "relu_n1_to_1": tf.clip_by_value(x, -1.0, 1.0),
            "log_softmax": tf.nn.log_softmax(v, axis=-1),
            "softmax_beta": tf.nn.softmax(2.5 * v),
            "sum": tf.reduce_sum(x, axis=[1], keepdims=True),
            "max": tf.reduce_max(y, axis=[1, 2]),
            "min": tf.reduce_min(x, axis=-1),
            "prod": tf.reduce_prod(y[:, :2], axis=[3]),
            "shrink": x[0, 2, ::-2, 1:3],
            "masks": y[:, ::-1, 1:, -3:],
            "slice": tf.slice(x, [0, 1, 2, 0], [1, 3, -1, 2]),
            "pack": tf.stack([x[:, 0], y[:, 1]], axis=1),
            "squeeze": tf.squeeze(tf.reduce_mean(x, axis=[1, 2], keepdims=True), axis=[1, 2]),
            "expand_dims": tf.expand_dims(v, axis=1),
            "pad_v2": tf.pad(x, [[0, 0], [2, 0], [0, 1], [1, 1]], constant_values=-3.0),
            "gelu_tanh": tf.nn.gelu(v, approximate=True),
            "batch_matmul_adj": tf.matmul(v[None], v[None], transpose_a=True),
            "nchw_chain": tf.nn.avg_pool2d(tf.nn.relu(x) * y, 2, 2, "VALID") + 1.0,
            "math": tf.sin(x)
            - tf.cos(y)
            + tf.floor(2 * x)
            - tf.math.ceil(3 * y)
            - tf.math.negative(x),
            "pow": tf.pow(tf.abs(x) + 0.5, y),
            "cast": tf.cast(tf.cast(x * 10.0, tf.int32), tf.float32),
            "relu_0_to_1": tf.clip_by_value(y, 0.0, 1.0),
            "relu6": tf.nn.relu6(4.0 * x),
        }


class Unsupported(tf.Module):
    """Two ops torsh-gen does not import, separated by one it does."""

    @tf.function(input_signature=[tf.TensorSpec((1, 4, 4, 8), tf.float32, name="x")])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.local_response_normalization(x, depth_radius=2)
        y = tf.nn.relu(y + 1.0)
        return tf.math.cumsum(y, axis=3)


def _converter(module: tf.Module) -> tf.lite.TFLiteConverter:
    fn = module.__call__.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], module)


def _representative(shapes: list[tuple[int, ...]]):
    rng = np.random.default_rng(3)

    def gen():
        for _ in range(32):
            yield [rng.uniform(-1.0, 1.0, size=s).astype(np.float32) for s in shapes]

    return gen


def _int8(module: tf.Module, shapes: list[tuple[int, ...]], int_io: bool) -> bytes:
    c = _converter(module)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = _representative(shapes)
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int_io:
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
    return c.convert()


def _dynamic_range(module: tf.Module) -> bytes:
    c = _converter(module)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    return c.convert()


def _int16x8(module: tf.Module, shapes: list[tuple[int, ...]]) -> bytes:
    c = _converter(module)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = _representative(shapes)
    c.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    return c.convert()


def _fp16(module: tf.Module) -> bytes:
    c = _converter(module)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.target_spec.supported_types = [tf.float16]
    return c.convert()


def main() -> int:
    cnn, block, mlp = MobileNetLike(), TransformerBlock(), MLP()
    models = {
        "mobilenet_float": _converter(cnn).convert(),
        "mobilenet_int8": _int8(cnn, [IMG], int_io=True),
        "mobilenet_int8_float_io": _int8(cnn, [IMG], int_io=False),
        "mobilenet_fp16": _fp16(cnn),
        "transformer_block": _converter(block).convert(),
        "mlp": _converter(mlp).convert(),
        "mlp_dynamic_range": _dynamic_range(mlp),
        "mlp_int16x8": _int16x8(MLP(), [(1, 16)]),
        "int8_ops": _int8(Int8Ops(), [(1, 8, 8, 4), (1, 8, 8, 4)], int_io=True),
        "float_ops": _converter(FloatOps()).convert(),
        "unsupported": _converter(Unsupported()).convert(),
    }
    for name, data in models.items():
        path = HERE / f"{name}.tflite"
        path.write_bytes(data)
        print(f"{path.name}: {len(data)} bytes")
        if len(data) > 300_000:
            print(f"{path.name} is over 300 KB; shrink the model", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
