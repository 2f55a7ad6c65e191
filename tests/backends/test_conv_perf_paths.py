"""The numba convolution path (``_conv.py``: im2col, epilogue, depthwise) against onnxruntime.

Every model here compiles at O3 (Conv + Add + activation become FusedConv) and must take
the numba path (``_cv.conv2d`` in the generated code, no reference kernel); outputs are
compared with onnxruntime for strides, asymmetric pads, dilations, groups, depthwise with
a channel multiplier, strided and padded 1x1 convolutions and residual/activation epilogues.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.helpers import compile_and_load, ort_outputs
from tests.oracle import cpu_flags

_RNG = np.random.default_rng(7)


class _Builder:
    """A graph of several convolution branches over one input, one output per branch."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.outputs: list[str] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def conv(self, name: str, src: str, cin: int, cout: int, k: tuple[int, int], bias: bool = True,
             **attrs: object) -> str:
        group = int(attrs.get("group", 1))
        w = _RNG.standard_normal((cout, cin // group) + k).astype(np.float32)
        w *= np.float32(np.sqrt(2.0 / (cin // group * k[0] * k[1])))
        ins = [src, self.const(name + "_w", w)]
        if bias:
            ins.append(self.const(name + "_b", _RNG.standard_normal(cout).astype(np.float32)))
        self.nodes.append(helper.make_node("Conv", ins, [name], name=name, **attrs))
        return name

    def node(self, op: str, ins: list[str], name: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, ins, [name], name=name, **attrs))
        return name

    def out(self, name: str) -> None:
        self.outputs.append(name)

    def model(self) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.shape))
        outs = [helper.make_empty_tensor_value_info(o) for o in self.outputs]
        graph = helper.make_graph(self.nodes, "convs", [x], outs, self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _check(tmp_path: Path, model: onnx.ModelProto, x: np.ndarray, min_calls: int) -> None:
    module = compile_and_load(model, tmp_path / "pkg")
    src = (tmp_path / "pkg" / "model.py").read_text()
    assert src.count("_cv.conv2d(") >= min_calls
    assert "_refcall" not in src
    m = module.Model()
    for feeds in ({"x": x}, {"x": x * -0.5}):  # the second run reuses buffers and scratch
        ours = m.run(**feeds)
        for (key, got), want in zip(ours.items(), ort_outputs(model, feeds)):
            assert got.shape == want.shape and got.dtype == want.dtype, key
            scale = float(np.abs(want).max()) or 1.0
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=key)


def test_dense_convolutions(tmp_path: Path) -> None:
    b = _Builder((2, 6, 17, 14))
    b.out(b.conv("k3", "x", 6, 8, (3, 3), pads=[1, 1, 1, 1]))
    b.out(b.conv("k3s2", "x", 6, 8, (3, 3), strides=[2, 2], pads=[1, 0, 2, 1]))
    b.out(b.conv("k5d2", "x", 6, 4, (5, 3), dilations=[2, 1], pads=[3, 1, 2, 0], bias=False))
    b.out(b.conv("k7s2", "x", 6, 5, (7, 7), strides=[2, 3], pads=[3, 3, 3, 3]))
    b.out(b.conv("k1s2", "x", 6, 7, (1, 1), strides=[2, 2]))
    b.out(b.conv("k1pad", "x", 6, 3, (1, 1), pads=[1, 0, 0, 1]))
    b.out(b.conv("k1", "x", 6, 9, (1, 1), bias=False))
    b.out(b.conv("g2", "x", 6, 4, (3, 3), group=2, pads=[1, 1, 1, 1]))
    b.out(b.conv("g3s2", "x", 6, 6, (3, 1), group=3, strides=[2, 1]))
    b.out(b.conv("same", "x", 6, 4, (4, 4), auto_pad="SAME_UPPER", strides=[2, 2]))
    b.out(b.conv("valid", "x", 6, 4, (2, 2), auto_pad="VALID"))
    _check(tmp_path, b.model(), _RNG.standard_normal(b.shape).astype(np.float32), 11)


@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (3, 1)])
def test_depthwise(tmp_path: Path, kernel: tuple[int, int]) -> None:
    b = _Builder((2, 4, 13, 11))
    b.out(b.conv("dw", "x", 4, 4, kernel, group=4, pads=[1, 1, 1, 1]))
    b.out(b.conv("dws2", "x", 4, 4, kernel, group=4, strides=[2, 2], pads=[0, 1, 1, 0]))
    b.out(b.conv("mult3", "x", 4, 12, kernel, group=4, dilations=[2, 2], pads=[2, 2, 2, 2]))
    b.out(b.conv("s3nopad", "x", 4, 8, kernel, group=4, strides=[3, 2], bias=False))
    _check(tmp_path, b.model(), _RNG.standard_normal(b.shape).astype(np.float32), 4)


@pytest.mark.parametrize("shape", [(1, 3, 7, 53), (1, 2, 60, 53)])
def test_depthwise_rows_wider_than_a_vector(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """The 3x3 depthwise kernels on planes wider than a vector: stride 1 and 2 (phase
    planes from an odd width: the interleaved middle of each row and its ends; by rows:
    even and odd lanes), with and without left padding, padding on the right or the left
    only, padding of 2, a channel multiplier, bias, residual, ReLU6 and LeakyRelu, on a
    short plane and a tall one (input rows carried from one output row to the next).
    With AVX-512 they run by rows straight from the input, without it on the padded grid
    (``test_tile_shape_follows_the_register_file`` runs a depthwise layer of each stride
    compiled for an AVX2 CPU too)."""
    b = _Builder(shape)
    c = shape[1]
    lo, hi = b.const("lo", np.array(0.0, np.float32)), b.const("hi", np.array(6.0, np.float32))
    dw = b.conv("dw", "x", c, c, (3, 3), group=c, pads=[1, 1, 1, 1])
    b.out(b.node("Clip", [b.node("Add", [dw, "x"], "dw_res"), lo, hi], "dw_res_relu6"))
    leaky = b.conv("leaky", "x", c, c, (3, 3), group=c, strides=[2, 2], pads=[1, 1, 1, 1])
    b.out(b.node("LeakyRelu", [leaky], "leaky_act", alpha=0.2))
    b.out(b.conv("nopad", "x", c, c, (3, 3), group=c))
    b.out(b.conv("s2", "x", c, c, (3, 3), group=c, strides=[2, 2], pads=[1, 1, 1, 1]))
    b.out(b.conv("s2right", "x", c, 2 * c, (3, 3), group=c, strides=[2, 2], pads=[0, 0, 1, 1], bias=False))
    b.out(b.conv("s2pad2", "x", c, c, (3, 3), group=c, strides=[2, 2], pads=[2, 2, 2, 2]))
    b.out(b.conv("s2left", "x", c, c, (3, 3), group=c, strides=[2, 2], pads=[1, 1, 0, 0]))
    x = _RNG.standard_normal(b.shape).astype(np.float32) * 4
    _check(tmp_path, b.model(), x, 6)


def test_residual_and_activation_epilogues(tmp_path: Path) -> None:
    b = _Builder((1, 8, 9, 10))
    lo, hi = b.const("lo", np.array(0.0, np.float32)), b.const("hi", np.array(6.0, np.float32))
    c = b.conv("c", "x", 8, 8, (3, 3), pads=[1, 1, 1, 1])
    b.out(b.node("Relu", [b.node("Add", [c, "x"], "res")], "res_relu"))
    nb = b.conv("nb", "x", 8, 8, (1, 1), bias=False)
    b.out(b.node("Relu", [b.node("Add", ["x", nb], "nb_res")], "nobias_res_relu"))
    b.out(b.node("Clip", [b.conv("c6", "x", 8, 8, (3, 3), strides=[2, 2]), lo, hi], "relu6"))
    b.out(b.node("LeakyRelu", [b.conv("cl", "x", 8, 4, (1, 1), strides=[2, 2])], "leaky", alpha=0.1))
    b.out(b.node("Sigmoid", [b.conv("cs", "x", 8, 4, (3, 3), group=4)], "sigmoid"))
    dw = b.conv("dw", "x", 8, 8, (3, 3), group=8, pads=[1, 1, 1, 1])
    b.out(b.node("Clip", [b.node("Add", [dw, "x"], "dw_res"), lo, hi], "dw_res_relu6"))
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    _check(tmp_path, b.model(), x, 6)


def test_noncontiguous_input_and_wide_batch(tmp_path: Path) -> None:
    b = _Builder((3, 5, 8, 8))
    b.out(b.node("Relu", [b.conv("c", "x", 5, 6, (3, 3), pads=[1, 1, 1, 1])], "y"))
    b.out(b.conv("d", "x", 5, 10, (3, 3), group=5, strides=[2, 2]))
    x = np.asfortranarray(_RNG.standard_normal(b.shape).astype(np.float32))
    _check(tmp_path, b.model(), x, 2)


def test_packed_gemm_tiles_blocks_and_tails(tmp_path: Path) -> None:
    """Shapes that exercise every edge of the packed GEMM convolution: output channels not a
    multiple of the 12-row tile, positions not a multiple of the 32-column panel, reduction
    depths beyond one 128-deep block (so tiles accumulate across blocks before the
    epilogue), the direct 1x1 panel copy, and a batch of two with few panels per image."""
    b = _Builder((2, 40, 13, 11))
    lo, hi = b.const("lo", np.array(0.0, np.float32)), b.const("hi", np.array(6.0, np.float32))
    c = b.conv("deep", "x", 40, 40, (3, 3), pads=[1, 1, 1, 1])  # K = 360: three blocks
    b.out(b.node("Relu", [b.node("Add", [c, "x"], "deep_res")], "deep_res_relu"))
    b.out(b.conv("tail", "x", 40, 30, (1, 1)))  # direct 1x1, 30 = 2 * 12 + 6 rows
    b.out(b.node("Clip", [b.conv("s2", "x", 40, 13, (3, 3), strides=[2, 2]), lo, hi], "s2_relu6"))
    b.out(b.conv("wide", "x", 40, 7, (5, 5), pads=[2, 2, 2, 2], dilations=[1, 1], bias=False))
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    _check(tmp_path, b.model(), x, 4)
    assert "_cv.conv2d(" in (tmp_path / "pkg" / "model.py").read_text()


def test_channel_vector_grid_tiles(tmp_path: Path) -> None:
    """The padded-grid kernel (channel-vector tiles): reductions longer than one pass
    (K = 1728 and 4800, so tiles re-read their partial sums), channel counts that leave a
    partial block of 16 (masked lane stores), a residual and each activation on both, the
    phase planes of a strided convolution, a dilated one, a full-width one taking the
    input as its residual, and a batch of two."""
    b = _Builder((2, 192, 9, 20))
    lo, hi = b.const("lo", np.array(0.0, np.float32)), b.const("hi", np.array(6.0, np.float32))
    side = b.conv("side", "x", 192, 40, (1, 1))
    deep = b.conv("deep", "x", 192, 40, (3, 3), pads=[1, 1, 1, 1])
    b.out(b.node("Relu", [b.node("Add", [deep, side], "deep_res")], "deep_res_relu"))
    full = b.conv("full", "x", 192, 32, (3, 3), pads=[1, 1, 1, 1], bias=False)
    b.out(b.node("LeakyRelu", [full], "full_leaky", alpha=0.2))
    s2 = b.conv("s2", "x", 192, 33, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1])
    b.out(b.node("Clip", [s2, lo, hi], "s2_relu6"))
    b.out(b.conv("dil", "x", 192, 16, (5, 5), dilations=[2, 2], pads=[4, 4, 4, 4]))
    same = b.conv("same", "x", 192, 192, (3, 3), pads=[1, 1, 1, 1])  # the input as residual
    b.out(b.node("Relu", [b.node("Add", [same, "x"], "same_res")], "same_res_relu"))
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    _check(tmp_path, b.model(), x, 6)


def test_weights_beyond_l2_share_panels(tmp_path: Path) -> None:
    """Weights over 256 KiB: ``gemm_conv`` runs several panels per work item, as many as
    fit in half an L2 and at least 8 (one run of 18 panels crossing from one image to the
    next; runs of 8 for a deep 2x2 reduction of 1200; fewer runs than threads; a residual
    on the run path), for direct 1x1 panels and gathered ones (a strided 3x3 too narrow
    for the phase planes)."""
    b = _Builder((3, 300, 12, 7))
    side = b.conv("side", "x", 300, 256, (1, 1), strides=[2, 2])
    wide = b.conv("wide", "x", 300, 256, (1, 1), strides=[2, 2], bias=False)
    b.out(b.node("Relu", [b.node("Add", [wide, side], "wide_res")], "wide_res_relu"))
    b.out(b.conv("many", "x", 300, 232, (1, 1)))  # 6 panels per image, one run of 18
    b.out(b.conv("gathered", "x", 300, 40, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1]))
    b.out(b.conv("deep", "x", 300, 64, (2, 2)))  # 5 panels per image, K 1200: runs of 8
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    _check(tmp_path, b.model(), x, 5)


def test_outputs_beyond_l2_stream_in_runs(tmp_path: Path) -> None:
    """Outputs over 256 KiB with small weights: ``gemm_conv`` runs up to 32 panels per
    work item, row tiles outer, so each tile writes its output planes as sequential runs:
    runs crossing from one image to the next with a partial last panel (2500 positions),
    a residual and an activation on the run path, gathered panels (unequal strides) and a
    deep reduction that takes fewer panels per run."""
    b = _Builder((2, 24, 50, 50))
    wide = b.conv("wide", "x", 24, 120, (1, 1))
    b.out(wide)
    side = b.conv("side", "x", 24, 120, (1, 1), bias=False)
    b.out(b.node("Relu", [b.node("Add", [side, wide], "side_res")], "side_res_relu"))
    b.out(b.conv("gathered", "x", 24, 64, (3, 3), strides=[1, 2], pads=[1, 1, 1, 1]))
    deep = b.conv("deep_in", "x", 24, 400, (1, 1))
    b.out(b.conv("deep", deep, 400, 40, (1, 1)))
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    _check(tmp_path, b.model(), x, 5)


def test_plans_follow_shapes_geometries_and_runtime_weights(tmp_path: Path) -> None:
    """``conv2d`` keeps a plan per constant weight: a new batch size rebuilds it (the
    padded scratch is sized by it), one weight shared by convolutions of equal shapes
    but other pads, and by a stride-2 one (one plan slot, three geometries), alternates
    correctly, and a weight that is a graph input is re-read on every call, also when
    the caller changes the same array in place."""
    wa = (_RNG.standard_normal((12, 8, 3, 3)) * 0.3).astype(np.float32)
    wb = (_RNG.standard_normal((10, 8, 3, 3)) * 0.3).astype(np.float32)
    wd = _RNG.standard_normal((8, 1, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "wb"], ["solo"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wa"], ["same"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wa"], ["shifted"], pads=[2, 2, 0, 0]),
        helper.make_node("Conv", ["x", "wa"], ["half"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["x", "wr"], ["runtime"]),
        helper.make_node("Conv", ["x", "wd"], ["dw"], pads=[1, 1, 1, 1], group=8),
    ]
    graph = helper.make_graph(
        nodes,
        "plans",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 20, 18]),
            helper.make_tensor_value_info("wr", TensorProto.FLOAT, [6, 8, 1, 1]),
        ],
        [
            helper.make_tensor_value_info(k, TensorProto.FLOAT, None)
            for k in ("solo", "same", "shifted", "half", "runtime", "dw")
        ],
        [numpy_helper.from_array(w, k) for k, w in (("wa", wa), ("wb", wb), ("wd", wd))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = compile_and_load(model, tmp_path / "pkg")
    src = (tmp_path / "pkg" / "model.py").read_text()
    assert src.count("_cv.conv2d(") == 6 and "_refcall" not in src
    m = module.Model()
    wr = _RNG.standard_normal((6, 8, 1, 1)).astype(np.float32)
    for n, scale in ((1, 1.0), (3, -2.0), (1, 0.5), (2, 3.0)):
        wr *= np.float32(scale)  # the same array, changed in place
        feeds = {"x": _RNG.standard_normal((n, 8, 20, 18)).astype(np.float32), "wr": wr}
        for (key, got), want in zip(m.run(**feeds).items(), ort_outputs(model, feeds)):
            assert got.shape == want.shape, key
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=key)
    # plans are kept for the three constant weights only: none accumulate for the input
    assert len(m.__dict__["_torsh_conv_plans"]) == 3
    # a constant seen through a new read-only view on every call leaves no plans behind
    frozen = wa.copy()
    frozen.setflags(write=False)
    x = feeds["x"][:1]
    want = ort_outputs(model, {"x": x, "wr": wr})[1]
    for _ in range(4):
        y = np.empty_like(want)
        module._conv.conv2d(m, x, frozen[...], None, None, y, (1, 1, 1, 1, 1, 1, 1), 0, 0.0, 0.0)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    assert len(m.__dict__["_torsh_conv_plans"]) == 3


def test_tile_shape_follows_the_register_file(tmp_path: Path) -> None:
    """AVX-512 hosts take the 12 x 32 tile, except cores that split 512-bit operations in
    two (Zen 4), which take 16-lane tiles like every AVX2 machine, but 8 rows instead of 6
    and grid tiles of 7 positions (AVX-512's 32 registers). Whatever the host, every tile
    is checked against onnxruntime: numba compiling for a named CPU
    (NUMBA_CPU_NAME=haswell: the AVX2 tile; where the host has AVX-512, skylake-avx512:
    the wide tile, znver4: the 8-row tile with grid tiles of 7) picks the tile of that
    CPU. Every tile runs grid tiles along output rows (with 7 positions: the 14 and 7 wide
    planes, and the 1x1 layers on them; with 6 or 12: the 10 wide one, a partial tile at
    each row's end) and along the flat padded grid."""
    if platform.machine() != "x86_64" or "avx2" not in cpu_flags():
        pytest.skip("needs an x86_64 CPU with AVX2")
    import llvmlite.binding as llb

    b = _Builder((2, 40, 13, 14))
    b.out(b.node("Relu", [b.conv("deep", "x", 40, 40, (3, 3), pads=[1, 1, 1, 1])], "deep_relu"))
    b.out(b.conv("tail", "x", 40, 30, (1, 1)))
    s2 = b.conv("s2", "x", 40, 24, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1])
    b.out(s2)
    b.out(b.conv("narrow", "x", 40, 20, (3, 5), pads=[1, 0, 1, 0]))  # row tiles of 6 and 12
    # 1x1 on 7-wide rows (grid tiles of 7: the input itself; strided: its subsample), with
    # a residual
    pw = b.conv("pw", "x", 40, 24, (1, 1), strides=[2, 2])
    b.out(b.node("Relu", [b.node("Add", [pw, s2], "pw_res")], "pw_res_relu"))
    # 3x3 depthwise: on the padded grid (AVX2) or by rows from the input (AVX-512)
    b.out(b.conv("dw1", "x", 40, 40, (3, 3), group=40, pads=[1, 1, 1, 1]))
    b.out(b.conv("dw2", "x", 40, 40, (3, 3), group=40, strides=[2, 2], pads=[1, 1, 1, 1]))
    model = b.model()
    module = compile_and_load(model, tmp_path / "pkg")
    half_rate = llb.get_host_cpu_name() in module._conv._HALF_RATE_512
    wide_host = "avx512f" in cpu_flags() and not half_rate
    assert module._conv.WIDE == (wide_host and not os.environ.get("NUMBA_CPU_NAME"))
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np\n"
        "from torsh_gen.tools.artifact import load_artifact\n"
        "m = load_artifact(sys.argv[1])\n"
        "wide = sys.argv[4] == 'wide'\n"
        "shape = {'wide': (12, 32, 12), 'narrow': (6, 16, 6), 'narrow7': (8, 16, 7)}[sys.argv[4]]\n"
        "assert m._conv.WIDE == wide and (m._conv.MR, m._conv.NR, m._conv.MG) == shape\n"
        "out = m.run(x=np.load(sys.argv[2]))\n"
        "np.savez(sys.argv[3], *out.values())\n"
    )
    cpus = [("haswell", "", "narrow")]
    if "avx512f" in cpu_flags():
        cpus.append(("skylake-avx512", "+avx512f", "wide"))
        cpus.append(("znver4", "+avx512f", "narrow7"))
    for name, features, tile in cpus:
        env = dict(os.environ, NUMBA_CPU_NAME=name, NUMBA_CPU_FEATURES=features)
        out = tmp_path / f"y_{tile}.npz"
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "pkg"), str(tmp_path / "x.npy"), str(out), tile],
            env=env, check=True, timeout=600,
        )
        got = np.load(out)
        for k, want in enumerate(ort_outputs(model, {"x": x})):
            np.testing.assert_allclose(got[f"arr_{k}"], want, rtol=1e-4, atol=1e-4)


def test_rgb_stem_kernel(tmp_path: Path) -> None:
    """3x3 convolutions over 3 input channels (with AVX-512: ``conv_rgb3``, by output
    rows, four channels at a time): stride 1 and 2, with and without padding, odd sizes,
    40, 8 and 30 output channels, bias or none, a residual, ReLU, Clip and LeakyRelu, a
    batch of two."""
    b = _Builder((2, 3, 23, 37))
    lo, hi = b.const("lo", np.array(0.0, np.float32)), b.const("hi", np.array(6.0, np.float32))
    s1 = b.conv("s1", "x", 3, 40, (3, 3), pads=[1, 1, 1, 1])
    b.out(b.node("Relu", [s1], "s1_relu"))
    b.out(b.node("Clip", [b.conv("s2", "x", 3, 40, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1]), lo, hi], "s2_relu6"))
    b.out(b.node("LeakyRelu", [b.conv("s2v", "x", 3, 8, (3, 3), strides=[2, 2])], "s2v_leaky", alpha=0.1))
    b.out(b.conv("odd", "x", 3, 30, (3, 3), pads=[1, 1, 1, 1]))  # 7 groups of 4 channels, 2 alone
    nob = b.conv("nob", "x", 3, 40, (3, 3), pads=[1, 1, 1, 1], bias=False)
    b.out(b.node("Relu", [b.node("Add", [nob, s1], "nob_res")], "nob_res_relu"))
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    _check(tmp_path, b.model(), x, 5)


def test_average_pool_over_the_whole_plane(tmp_path: Path) -> None:
    """AveragePool whose one window is the whole unpadded plane (ResNet-50's last pool) is
    a mean over the spatial axes; with padding, or a smaller window, the summed taps."""
    b = _Builder((2, 5, 7, 7))
    b.out(b.node("AveragePool", ["x"], "whole", kernel_shape=[7, 7]))
    b.out(b.node("AveragePool", ["x"], "whole_s2", kernel_shape=[7, 7], strides=[2, 2]))
    b.out(b.node("AveragePool", ["x"], "padded", kernel_shape=[7, 7], pads=[1, 1, 1, 1]))
    b.out(b.node("AveragePool", ["x"], "part", kernel_shape=[6, 7]))
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    _check(tmp_path, b.model(), x, 0)
    src = (tmp_path / "pkg" / "model.py").read_text()
    assert src.count("np.mean(") == 2


def test_max_pool_kernel(tmp_path: Path) -> None:
    """float32 2-d MaxPool through the numba kernel: strides, pads (as -inf), ceil mode,
    dilations, asymmetric pads, SAME padding and stride-1 windows against onnxruntime."""
    b = _Builder((2, 3, 13, 11))
    b.out(b.node("MaxPool", ["x"], "k3s2", kernel_shape=[3, 3], strides=[2, 2]))
    b.out(b.node("MaxPool", ["x"], "k3s1p1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    b.out(b.node("MaxPool", ["x"], "ceil", kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1))
    b.out(b.node("MaxPool", ["x"], "dil", kernel_shape=[2, 2], dilations=[2, 3], pads=[0, 1, 1, 0]))
    b.out(b.node("MaxPool", ["x"], "same", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"))
    # stride 1 (the -inf padded row, one contiguous run per tap): wider, asymmetric, a
    # window as wide as the padded row
    b.out(b.node("MaxPool", ["x"], "k5s1p2", kernel_shape=[5, 5], pads=[2, 2, 2, 2]))
    b.out(b.node("MaxPool", ["x"], "asym", kernel_shape=[2, 3], pads=[0, 2, 1, 0]))
    b.out(b.node("MaxPool", ["x"], "wide", kernel_shape=[1, 13], pads=[0, 1, 0, 1]))
    model = b.model()
    module = compile_and_load(model, tmp_path / "pkg")
    src = (tmp_path / "pkg" / "model.py").read_text()
    assert src.count("_cv.max_pool(") == 6 and src.count("_cv.max_pool_w3s2(") == 2  # k3s2, same
    x = _RNG.standard_normal(b.shape).astype(np.float32) - 3.0  # mostly negative: pads must not win
    m = module.Model()
    for (key, got), want in zip(m.run(x=x).items(), ort_outputs(model, {"x": x})):
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    _check_nan_propagates(model, m, x)


def _check_nan_propagates(model: onnx.ModelProto, m: object, x: np.ndarray) -> None:
    """A window holding a NaN gives NaN (as np.maximum): the oracle is onnxruntime on the
    same input with +inf in place of each NaN, whose +inf outputs mark those windows."""
    x = x.copy()
    x.reshape(-1)[_RNG.choice(x.size, max(1, x.size // 40), replace=False)] = np.nan
    for (key, got), want in zip(m.run(x=x).items(), ort_outputs(model, {"x": np.nan_to_num(x, nan=np.inf)})):
        want[np.isposinf(want)] = np.nan
        np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("shape", [(2, 3, 12, 14), (1, 4, 13, 11)])
def test_max_pool_three_wide_stride_two_kernel(tmp_path: Path, shape: tuple) -> None:
    """3-wide, stride-2 windows with a left padding of 0 or 1 take the even/odd kernel:
    plain, ceil mode, right padding, top padding, taller windows, the ResNet stem's pool
    (padding 1 all round) with and without ceil mode, on even and odd widths."""
    b = _Builder(shape)
    b.out(b.node("MaxPool", ["x"], "plain", kernel_shape=[3, 3], strides=[2, 2]))
    b.out(b.node("MaxPool", ["x"], "ceil", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    b.out(b.node("MaxPool", ["x"], "rpad", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1]))
    b.out(b.node("MaxPool", ["x"], "tall", kernel_shape=[5, 3], strides=[1, 2], pads=[2, 0, 2, 0]))
    b.out(b.node("MaxPool", ["x"], "lpad", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    b.out(b.node("MaxPool", ["x"], "lpad_ceil", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 1], ceil_mode=1))
    model = b.model()
    module = compile_and_load(model, tmp_path / "pkg")
    src = (tmp_path / "pkg" / "model.py").read_text()
    conv = (tmp_path / "pkg" / "_conv.py").read_text()
    # every case takes the even/odd kernel, and the general one is not even compiled
    assert src.count("_cv.max_pool_w3s2(") == 6 and "_cv.max_pool(" not in src
    assert "def max_pool2d_w3s2(" in conv and "def max_pool2d(" not in conv
    x = _RNG.standard_normal(shape).astype(np.float32) - 3.0
    m = module.Model()
    for (key, got), want in zip(m.run(x=x).items(), ort_outputs(model, {"x": x})):
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    _check_nan_propagates(model, m, x)


@pytest.mark.parametrize("shape", [(2, 3, 37, 41), (1, 2, 6, 70)])
def test_max_pool_three_by_three_row_kernel(tmp_path: Path, shape: tuple) -> None:
    """3x3 windows of stride 1 or 2 take the row kernel (``max_pool3``) where the host has
    AVX-512, and the even/odd or general kernel elsewhere: pads 0, 1 and 2, asymmetric,
    ceil mode, SAME, planes several 16-column blocks wide, against onnxruntime (NaN and
    -inf inputs too). On an AVX-512 host the package runs again compiled for haswell, so
    both paths are checked."""
    b = _Builder(shape)
    b.out(b.node("MaxPool", ["x"], "s1p1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    b.out(b.node("MaxPool", ["x"], "s1p0", kernel_shape=[3, 3]))
    b.out(b.node("MaxPool", ["x"], "s1asym", kernel_shape=[3, 3], pads=[0, 2, 1, 0]))
    b.out(b.node("MaxPool", ["x"], "s2p0", kernel_shape=[3, 3], strides=[2, 2]))
    b.out(b.node("MaxPool", ["x"], "s2p1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    b.out(b.node("MaxPool", ["x"], "s2ceil", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    b.out(b.node("MaxPool", ["x"], "s2p2", kernel_shape=[3, 3], strides=[2, 2], pads=[2, 2, 0, 1]))
    b.out(b.node("MaxPool", ["x"], "same", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"))
    model = b.model()
    module = compile_and_load(model, tmp_path / "pkg")
    src = (tmp_path / "pkg" / "model.py").read_text()
    assert src.count("_cv.max_pool3(") == 8 and src.count("if _cv.AVX512[0]:") == 8
    x = _RNG.standard_normal(shape).astype(np.float32) - 3.0  # mostly negative: pads must not win
    x.reshape(-1)[_RNG.choice(x.size, x.size // 50, replace=False)] = -np.inf
    m = module.Model()
    want = ort_outputs(model, {"x": x})
    for (key, got), w in zip(m.run(x=x).items(), want):
        assert got.shape == w.shape, key
        np.testing.assert_array_equal(got, w, err_msg=key)
    _check_nan_propagates(model, m, x)
    if "avx512f" not in cpu_flags() or not module._conv.AVX512[0]:
        return
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np\n"
        "from torsh_gen.tools.artifact import load_artifact\n"
        "m = load_artifact(sys.argv[1])\n"
        "assert not m._conv.AVX512[0]\n"
        "np.savez(sys.argv[3], *m.run(x=np.load(sys.argv[2])).values())\n"
    )
    out = tmp_path / "y_haswell.npz"
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="")
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "pkg"), str(tmp_path / "x.npy"), str(out)],
        env=env, check=True, timeout=600,
    )
    got = np.load(out)
    for k, w in enumerate(want):
        np.testing.assert_array_equal(got[f"arr_{k}"], w)


def test_pointwise_convolutions_read_in_place(tmp_path: Path) -> None:
    """1x1 convolutions with few output channels per group (at most ``_IN_PLACE_CHANNELS``)
    read their input's rows in place, the last panel of a plane (fewer than 16 positions)
    copied as before; more channels copy every panel. Both sides of the threshold, groups,
    a residual with ReLU, no bias, a batch of two, a plane of 13 x 19 (247 positions)."""
    b = _Builder((2, 24, 13, 19))
    b.out(b.conv("m16", "x", 24, 16, (1, 1)))
    b.out(b.conv("m144", "x", 24, 144, (1, 1), bias=False))
    b.out(b.conv("m150", "x", 24, 150, (1, 1)))
    b.out(b.conv("g2", "x", 24, 40, (1, 1), group=2))
    res = b.conv("res", "x", 24, 24, (1, 1))
    b.out(b.node("Relu", [b.node("Add", [res, "x"], "res_add")], "res_relu"))
    x = _RNG.standard_normal(b.shape).astype(np.float32)
    _check(tmp_path, b.model(), x, 5)


def test_strided_convolutions_on_phase_planes(tmp_path: Path) -> None:
    """Equal strides > 1 run on the padded-grid kernel over s x s phase planes (every tap
    a contiguous run again); strided 1x1 convolutions run on a contiguous subsample.
    Asymmetric pads, pads wider than the stride, taps smaller than the stride, groups,
    odd sizes and a batch of two check the phase bookkeeping."""
    b = _Builder((2, 10, 29, 31))
    b.out(b.conv("k3s2", "x", 10, 16, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1]))
    b.out(b.conv("k7s2", "x", 10, 12, (7, 7), strides=[2, 2], pads=[3, 3, 3, 3]))
    b.out(b.conv("k5s3", "x", 10, 8, (5, 5), strides=[3, 3], pads=[2, 1, 0, 2], bias=False))
    b.out(b.conv("g2s2", "x", 10, 14, (3, 3), group=2, strides=[2, 2], pads=[1, 1, 1, 1]))
    b.out(b.conv("k2s2", "x", 10, 6, (2, 2), strides=[2, 2]))
    b.out(b.conv("k3s2p3", "x", 10, 5, (3, 3), strides=[2, 2], pads=[3, 0, 1, 3]))
    b.out(b.node("Relu", [b.conv("k1s2", "x", 10, 24, (1, 1), strides=[2, 2])], "k1s2_relu"))
    b.out(b.conv("k1s3", "x", 10, 9, (1, 1), strides=[3, 3]))
    x = _RNG.standard_normal((2, 10, 29, 31)).astype(np.float32)
    _check(tmp_path, b.model(), x, min_calls=8)


def test_packed_weights_release_their_mapped_pages(tmp_path: Path) -> None:
    """After packing, a constant's pages of the mapped weights file are dropped from the
    process (madvise); reading the constant again faults the same values back in."""
    b = _Builder((1, 4, 9, 9))
    b.out(b.conv("c", "x", 4, 8, (3, 3), pads=[1, 1, 1, 1]))
    module = compile_and_load(b.model(), tmp_path / "pkg")
    values = np.arange(3 * 4096, dtype=np.float32)
    path = tmp_path / "w.bin"
    values.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    w = np.frombuffer(mapped, dtype=np.float32, count=2 * 4096, offset=2048)  # not page-aligned
    import importlib

    conv = importlib.import_module(module.__name__ + "._conv")
    conv.release_pages(w)
    conv.release_pages(w[::2])  # strided views are left alone
    np.testing.assert_array_equal(w, values[512 : 512 + 2 * 4096])


def _reference_conv(x: np.ndarray, w: np.ndarray, strides: tuple, dilations: tuple, pads: tuple,
                    out_hw: tuple) -> np.ndarray:
    """A direct float64 convolution (zero padding ``pads`` = (top, left, bottom, right))."""
    (sh, sw), (dh, dw), (oh, ow) = strides, dilations, out_hw
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            window = xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
            y += np.einsum("nchw,mc->nmhw", window, w[:, :, i, j])
    return y


def test_gather_part_only_where_a_convolution_gathers(tmp_path: Path) -> None:
    """The gathered panels of ``gemm_conv`` are their own part of ``_conv.py``, added only
    when the emitter's ``gathers`` says a convolution takes that path. Over a sweep of
    geometries, a ``_conv.py`` without that part runs every convolution ``gathers`` calls
    non-gathering (matching a direct convolution) and refuses, with one clear error, every
    one it calls gathering: so the emitter's rule and ``conv2d``'s choice agree."""
    import importlib
    import itertools
    from types import SimpleNamespace

    from torsh_gen.backends.python.emitters.conv_numba import gathers

    b = _Builder((1, 3, 9, 9))
    b.out(b.conv("c", "x", 3, 4, (3, 3), pads=[1, 1, 1, 1]))  # padded grid: no gather
    module = compile_and_load(b.model(), tmp_path / "pkg")
    conv = importlib.import_module(module.__name__ + "._conv")
    assert not hasattr(conv, "_gather_panel_body")
    seen = set()
    shapes = [(1, 1), (3, 3), (2, 2), (3, 1), (7, 7)]
    for (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr), (h, w) in itertools.product(
        shapes, [(1, 1), (2, 2), (2, 1), (3, 3)], [(1, 1), (2, 2)], [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 2, 1)],
        [(12, 11), (20, 23)],
    ):
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        if oh < 1 or ow < 1:
            continue
        x = _RNG.standard_normal((2, 5, h, w)).astype(np.float32)
        wt = _RNG.standard_normal((6, 5, kh, kw)).astype(np.float32)
        y = np.empty((2, 6, oh, ow), np.float32)
        geo = (sh, sw, dh, dw, pt, pl, 1)
        gathered = gathers([6, 5, kh, kw], [pt, pl], [sh, sw], [dh, dw], (oh, ow), (h, w))
        seen.add(gathered)
        if gathered:
            with pytest.raises(ValueError, match="gathers its input"):
                conv.conv2d(SimpleNamespace(), x, wt, None, None, y, geo, 0, 0.0, 0.0)
            continue
        conv.conv2d(SimpleNamespace(), x, wt, None, None, y, geo, 0, 0.0, 0.0)
        want = _reference_conv(x, wt, (sh, sw), (dh, dw), (pt, pl, pb, pr), (oh, ow))
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, err_msg=str((kh, kw, sh, sw, dh, dw, pt, pl, h, w)))
    assert seen == {False, True}


def test_generic_depthwise_part_only_where_needed(tmp_path: Path) -> None:
    """The scalar depthwise kernel is its own part of ``_conv.py`` ("depthwise_any"), added
    only when the emitter's ``depthwise_part`` says a depthwise convolution needs it. A
    package of 3x3 depthwise convolutions lacks it; over a sweep of depthwise geometries
    (channel multiplier 1 and 2), its ``_conv.py`` runs every one ``depthwise_part`` gives
    to the 3x3 grid kernel (matching a direct convolution) and none of the others."""
    import importlib
    import itertools
    from types import SimpleNamespace

    from torsh_gen.backends.python.emitters.conv_numba import depthwise_part

    b = _Builder((1, 4, 9, 9))
    b.out(b.conv("dw", "x", 4, 4, (3, 3), group=4, pads=[1, 1, 1, 1]))
    b.out(b.conv("dws2", "x", 4, 8, (3, 3), group=4, strides=[2, 2]))
    module = compile_and_load(b.model(), tmp_path / "pkg")
    conv = importlib.import_module(module.__name__ + "._conv")
    assert hasattr(conv, "depthwise3") and not hasattr(conv, "depthwise")
    seen = set()
    for (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr), mult in itertools.product(
        [(3, 3), (5, 5), (3, 1)], [(1, 1), (2, 2), (2, 1)], [(1, 1), (2, 2)],
        [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)], [1, 2],
    ):
        h, w = 13, 10
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        x = _RNG.standard_normal((2, 3, h, w)).astype(np.float32)
        wt = _RNG.standard_normal((3 * mult, 1, kh, kw)).astype(np.float32)
        y = np.empty((2, 3 * mult, oh, ow), np.float32)
        geo = (sh, sw, dh, dw, pt, pl, 3)
        part = depthwise_part([3 * mult, 1, kh, kw], [sh, sw], [dh, dw])
        seen.add(part)
        if part == "depthwise_any":
            with pytest.raises(NameError):
                conv.conv2d(SimpleNamespace(), x, wt, None, None, y, geo, 0, 0.0, 0.0)
            continue
        conv.conv2d(SimpleNamespace(), x, wt, None, None, y, geo, 0, 0.0, 0.0)
        want = np.concatenate([
            _reference_conv(x[:, g // mult : g // mult + 1], wt[g : g + 1], (sh, sw), (dh, dw), (pt, pl, pb, pr), (oh, ow))
            for g in range(3 * mult)
        ], axis=1)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, err_msg=str((kh, kw, sh, sw, dh, dw, pt, pl, mult)))
    assert seen == {"depthwise", "depthwise_any"}
