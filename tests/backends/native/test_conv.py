"""Conv and FusedConv through the kernel IR, the JIT and the interpreter, against onnxruntime:
pointwise, direct (pads, strides, dilations, groups, auto_pad), depthwise, fused epilogues."""

from __future__ import annotations

import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import (
    check_native,
    import_package,
    lower_model,
    make_model,
    rand,
)
from torsh_gen.errors import UnsupportedOpError


def conv_model(
    xs: tuple[int, ...],
    ws: tuple[int, ...],
    bias: bool = True,
    dtype: int = TP.FLOAT,
    tail: list | None = None,
    residual: tuple[int, ...] | None = None,
    extra: list | None = None,
    **attrs,
) -> onnx.ModelProto:
    """A model of one Conv (constant weights and bias), optionally followed by ``tail`` nodes
    (reading the input ``r`` of shape ``residual`` and the ``extra`` initializers)."""
    npdt = helper.tensor_dtype_to_np_dtype(dtype)
    inits = [numpy_helper.from_array((rand(*ws, seed=1) * 0.3).astype(npdt), "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rand(ws[0], seed=2).astype(npdt), "b"))
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["c" if tail else "y"], **attrs)] + (tail or [])
    inputs = [helper.make_tensor_value_info("x", dtype, xs)]
    if residual:
        inputs.append(helper.make_tensor_value_info("r", dtype, residual))
    model = make_model(
        nodes, inputs, [helper.make_tensor_value_info("y", dtype, None)], inits + (extra or [])
    )
    return onnx.shape_inference.infer_shapes(model)


def op_types(program) -> list[str]:
    """The op types of the program's kernel calls."""
    return [c.op_type for c in program.calls]


GEOMETRIES = [
    # (input shape, weight shape, attributes)
    ((1, 3, 13, 11), (4, 3, 1, 1), {}),
    ((1, 17, 13, 11), (5, 17, 1, 1), {}),
    ((1, 3, 13, 11), (4, 3, 1, 1), dict(strides=[2, 2])),
    ((1, 3, 13, 11), (4, 3, 1, 1), dict(pads=[1, 0, 0, 1])),
    ((1, 3, 13, 11), (17, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 3, 13, 11), (4, 3, 3, 3), {}),
    ((1, 3, 13, 11), (4, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 3, 13, 11), (4, 3, 3, 3), dict(strides=[1, 2], pads=[0, 1, 2, 1])),
    ((1, 3, 13, 11), (4, 3, 3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    ((1, 3, 13, 11), (4, 3, 3, 2), dict(dilations=[1, 3], strides=[2, 1])),
    ((1, 3, 13, 11), (4, 3, 5, 5), dict(pads=[2, 2, 2, 2])),
    ((1, 3, 13, 11), (4, 3, 5, 5), dict(strides=[2, 2], pads=[2, 1, 1, 2])),
    ((1, 3, 17, 19), (8, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3])),
    ((1, 3, 13, 11), (4, 3, 3, 3), dict(auto_pad="SAME_UPPER")),
    ((1, 3, 13, 11), (4, 3, 4, 4), dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    ((1, 3, 13, 11), (4, 3, 4, 2), dict(auto_pad="SAME_UPPER", strides=[3, 2])),
    ((1, 3, 13, 11), (4, 3, 3, 3), dict(auto_pad="VALID", strides=[2, 2])),
    ((1, 6, 13, 11), (9, 2, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),
    ((1, 4, 13, 11), (6, 2, 3, 3), dict(group=2, strides=[2, 2], pads=[1, 0, 1, 2])),
    ((1, 4, 13, 11), (8, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
    ((2, 17, 13, 11), (17, 1, 3, 3), dict(group=17, pads=[1, 1, 1, 1])),
    ((1, 17, 13, 11), (17, 1, 5, 5), dict(group=17, strides=[2, 2], pads=[2, 2, 2, 2])),
    ((1, 16, 40, 37), (16, 1, 7, 7), dict(group=16, pads=[3, 3, 3, 3])),
    ((1, 16, 9, 9), (16, 1, 3, 3), dict(group=16, dilations=[2, 2], auto_pad="VALID")),
    ((1, 5, 13, 11), (5, 1, 1, 1), dict(group=5)),
    ((1, 3, 20), (5, 3, 5), dict(strides=[2], auto_pad="SAME_UPPER")),
    ((1, 3, 20), (5, 3, 3), dict(dilations=[2], pads=[3, 1])),
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 3), dict(pads=[1, 1, 0, 0, 1, 1], strides=[1, 2, 1])),
    ((1, 17, 40, 37), (19, 17, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 64, 41, 41), (8, 64, 1, 1), {}),
    ((1, 64, 41, 41), (8, 64, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 256, 30, 20), (4, 256, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 32, 14, 14), (40, 32, 3, 3), dict(pads=[1, 1, 1, 1])),
]


@pytest.mark.parametrize("xs,ws,attrs", GEOMETRIES, ids=[f"{i}" for i in range(len(GEOMETRIES))])
def test_conv_geometry(xs, ws, attrs) -> None:
    check_native(conv_model(xs, ws, **attrs), {"x": rand(*xs, seed=3)}, lanes=16)


@pytest.mark.parametrize("k", [0, 5, 6, 18, 20])
def test_conv_without_bias(k: int) -> None:
    xs, ws, attrs = GEOMETRIES[k]
    check_native(conv_model(xs, ws, bias=False, **attrs), {"x": rand(*xs, seed=3)}, lanes=16)


@pytest.mark.parametrize("lanes", [4, 8])
def test_conv_narrow_vectors(lanes: int) -> None:
    """Targets with 128- and 256-bit registers get other tile widths and channel blocks."""
    xs = (1, 5, 13, 30)
    check_native(
        conv_model(xs, (7, 5, 3, 3), pads=[1, 1, 1, 1]), {"x": rand(*xs, seed=3)}, lanes=lanes
    )
    check_native(
        conv_model(xs, (5, 1, 3, 3), group=5, pads=[1, 1, 1, 1]),
        {"x": rand(*xs, seed=3)},
        lanes=lanes,
    )


@pytest.mark.parametrize(
    "xs,ws,attrs",
    [
        ((1, 3, 7, 6), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),
        ((1, 2, 6, 5), (2, 2, 1, 1), {}),
        ((1, 4, 6, 9), (4, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
        ((1, 4, 6, 5), (3, 4, 3, 3), dict(pads=[1, 1, 1, 1])),  # wide rows at 8 lanes
    ],
)
def test_interpreter_agrees(xs, ws, attrs) -> None:
    check_native(conv_model(xs, ws, **attrs), {"x": rand(*xs, seed=3)}, interpret=True)


@pytest.mark.parametrize(
    "ws,attrs", [((5, 3, 3, 3), dict(pads=[1, 1, 1, 1])), ((3, 1, 3, 3), dict(group=3))]
)
def test_float64(ws, attrs) -> None:
    """onnxruntime has no float64 Conv: onnx's reference evaluator is the oracle here."""
    from onnx.reference import ReferenceEvaluator

    from torsh_gen.backends.llvm.jit import JitProgram

    xs = (1, 3, 13, 11)
    x = rand(*xs, seed=3, dtype=np.float64)
    model = conv_model(xs, ws, dtype=TP.DOUBLE, **attrs)
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = JitProgram(lower_model(model, lanes=16)).run({"x": x})["y"]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_weights_as_input() -> None:
    """Weights that are not constants are read in their own layout (no packing)."""
    xs, ws = (1, 4, 10, 12), (6, 2, 3, 3)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, pads=[1, 1, 1, 1])
    inputs = [
        helper.make_tensor_value_info(n, TP.FLOAT, s)
        for n, s in (("x", xs), ("w", ws), ("b", (6,)))
    ]
    model = make_model(
        [node], inputs, [helper.make_tensor_value_info("y", TP.FLOAT, (1, 6, 10, 12))]
    )
    check_native(
        model, {"x": rand(*xs, seed=3), "w": rand(*ws, seed=4), "b": rand(6, seed=5)}, lanes=16
    )


def test_fused_residual_relu() -> None:
    """Conv + Add(residual) + Relu becomes one FusedConv whose epilogue adds Z and clamps."""
    xs = (1, 8, 13, 11)
    tail = [helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    model = conv_model(xs, (8, 8, 3, 3), tail=tail, residual=xs, pads=[1, 1, 1, 1])
    feeds = {"x": rand(*xs, seed=3), "r": rand(1, 8, 13, 11, seed=4)}
    program = check_native(model, feeds, lanes=16)
    assert op_types(program) == ["FusedConv"]
    assert len(program.calls[0].args) >= 5  # x, w, b, z, y (and the packed weights)
    small = conv_model(
        (1, 2, 5, 4), (2, 2, 3, 3), tail=tail, residual=(1, 2, 5, 4), pads=[1, 1, 1, 1]
    )
    check_native(
        small, {"x": rand(1, 2, 5, 4, seed=3), "r": rand(1, 2, 5, 4, seed=4)}, interpret=True
    )


@pytest.mark.parametrize(
    "act,extra",
    [
        ("LeakyRelu", dict(alpha=0.2)),
        ("Sigmoid", {}),
        ("Tanh", {}),
        ("HardSwish", {}),
        ("HardSigmoid", dict(alpha=0.3, beta=0.4)),
        ("Elu", dict(alpha=0.7)),
    ],
)
def test_fused_activations(act: str, extra: dict) -> None:
    xs = (1, 3, 9, 20)
    model = conv_model(
        xs, (2, 3, 3, 3), tail=[helper.make_node(act, ["c"], ["y"], **extra)], pads=[1, 1, 1, 1]
    )
    program = check_native(model, {"x": rand(*xs, seed=3)}, lanes=16)
    assert op_types(program) == ["FusedConv"]


def test_fused_clip_depthwise_and_pointwise() -> None:
    """A MobileNet-style pair: depthwise + ReLU6, then pointwise + ReLU6."""
    xs = (1, 8, 14, 14)
    mn = helper.make_tensor("mn", TP.FLOAT, [], [0.0])
    mx = helper.make_tensor("mx", TP.FLOAT, [], [6.0])
    w2 = numpy_helper.from_array(rand(12, 8, 1, 1, seed=7), "w2")
    tail = [
        helper.make_node("Clip", ["c", "mn", "mx"], ["d"]),
        helper.make_node("Conv", ["d", "w2"], ["e"]),
        helper.make_node("Clip", ["e", "mn", "mx"], ["y"]),
    ]
    model = conv_model(xs, (8, 1, 3, 3), tail=tail, extra=[mn, mx, w2], group=8, pads=[1, 1, 1, 1])
    program = check_native(model, {"x": rand(*xs, seed=3) * 4}, lanes=16)
    assert op_types(program) == ["FusedConv", "FusedConv"]


def test_unlowerable_conv_is_a_clear_error() -> None:
    xs = (1, 2, 3, 3, 3, 3)
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    w = numpy_helper.from_array(rand(2, 2, 1, 1, 1, 1), "w")
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TP.FLOAT, xs)],
        [helper.make_tensor_value_info("y", TP.FLOAT, xs)],
        [w],
    )
    with pytest.raises(UnsupportedOpError, match="4-d convolution"):
        lower_model(model)


def _layout(k: int, lanes: int = 16):
    from torsh_gen.backends.kernel.lower.conv import conv_geometry, schedule
    from torsh_gen.ops.registry import Attrs

    xs, ws, attrs = GEOMETRIES[k]
    return schedule(conv_geometry(xs, ws, Attrs(dict(attrs))), lanes, 4)


def test_geometries_cover_every_schedule() -> None:
    """The cases above reach each path of the schedule, so the numerical tests cover them."""
    pointwise = _layout(GEOMETRIES.index(((1, 64, 41, 41), (8, 64, 1, 1), {})))
    assert (
        pointwise.geo.out == (1, 1, 41 * 41) and not pointwise.padded and pointwise.chunks.count > 1
    )
    assert pointwise.chunks.last != pointwise.chunks.span and pointwise.width == 64
    rows = _layout(GEOMETRIES.index(((1, 64, 41, 41), (8, 64, 3, 3), dict(pads=[1, 1, 1, 1]))))
    assert rows.pair == 2 and rows.chunks.count > 1 and rows.padded and not rows.wide
    wide = _layout(GEOMETRIES.index(((1, 32, 14, 14), (40, 32, 3, 3), dict(pads=[1, 1, 1, 1]))))
    assert wide.wide == 16 and wide.chunks.count == 1 and wide.rows < 40
    wide_chunked = _layout(
        GEOMETRIES.index(((1, 256, 30, 20), (4, 256, 3, 3), dict(pads=[1, 1, 1, 1])))
    )
    assert wide_chunked.wide == 22 and wide_chunked.chunks.count > 1
    strided = _layout(
        GEOMETRIES.index(((1, 3, 17, 19), (8, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3])))
    )
    assert strided.padded and strided.pair == 2 and not strided.wide
    depth3 = _layout(
        GEOMETRIES.index(
            ((1, 2, 5, 6, 7), (3, 2, 2, 3, 3), dict(pads=[1, 1, 0, 0, 1, 1], strides=[1, 2, 1]))
        )
    )
    assert depth3.geo.out[0] > 1 and depth3.pair == 2
    assert _layout(0).geo.out == (1, 1, 13 * 11) and _layout(2).padded  # 1x1 stride 2: padded copy


def _small_cnn() -> onnx.ModelProto:
    """Stem conv (stride 2) → ReLU → max pool → depthwise + ReLU6 → pointwise + residual →
    average pool → global average pool: every conv/pool kernel shape in one model."""

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rand(*shape, seed=len(name) + shape[0]) * 0.3, name)

    inits = [
        w("w1", 16, 3, 3, 3),
        w("b1", 16),
        w("w2", 16, 1, 3, 3),
        w("w3", 16, 16, 1, 1),
        helper.make_tensor("lo", TP.FLOAT, [], [0.0]),
        helper.make_tensor("hi", TP.FLOAT, [], [6.0]),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        helper.make_node("Add", ["c3", "p1"], ["s3"]),
        helper.make_node("AveragePool", ["s3"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p2"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TP.FLOAT, (2, 3, 64, 60))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (2, 16, 1, 1))],
        inits,
    )


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed (apt install gcc)")
def test_threaded_cnn_package(tmp_path) -> None:
    """The parallel loops of the conv and pool kernels under the package's real thread pool,
    wide rows split into chunks among them (x86_64-linux: 8 lanes)."""
    from tests.backends.native.helpers import ort_run
    from torsh_gen.backends.kernel.lower.conv import conv_geometry, schedule
    from torsh_gen.ops.registry import Attrs
    from torsh_gen.tools.compile import compile_model

    wide = ((1, 256, 30, 10), (8, 256, 3, 3), dict(pads=[1, 1, 1, 1]))
    lay = schedule(conv_geometry(wide[0], wide[1], Attrs(wide[2])), 8, 4)
    assert lay.wide and lay.chunks.count > 1
    cases = [
        (_small_cnn(), rand(2, 3, 64, 60, seed=3)),
        (conv_model(*wide[:2], **wide[2]), rand(*wide[0])),
    ]
    for k, (model, x) in enumerate(cases):
        pkg = tmp_path / f"cnn{k}"
        compile_model(model, pkg, target="x86_64-linux")
        mod = import_package(pkg)
        expected = ort_run(model, {"x": x})[0]
        for threads in (1, 2, 3):
            with mod.Model(threads=threads) as m:
                np.testing.assert_allclose(m.run(x=x)["y"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", ["aarch64-linux", "wasm32"])
def test_small_cnn_on_other_targets(target: str, tmp_path) -> None:
    """The CNN's kernels with 128-bit vectors: aarch64 under qemu, wasm32 under node."""
    import json
    import subprocess

    from tests.backends.native.helpers import ort_run
    from torsh_gen.backends.llvm.targets import load_target
    from torsh_gen.tools.compile import compile_model

    spec = load_target(target)
    if spec.missing_tools():
        pytest.skip(f"target {target} needs {', '.join(spec.missing_tools())} (make toolchains)")
    model, x = _small_cnn(), rand(2, 3, 64, 60, seed=3)
    pkg = tmp_path / "cnn"
    compile_model(model, pkg, target=target)
    manifest = json.loads((pkg / "manifest.json").read_text())
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    np.save(tmp_path / "in" / manifest["inputs"][0]["file"], x)
    runner = (
        ["node", str(pkg / "run.mjs")]
        if target == "wasm32"
        else [*spec.emulator, str(pkg / "run_model")]
    )
    proc = subprocess.run(
        [*runner, str(tmp_path / "in"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "out" / manifest["outputs"][0]["file"])
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_lowering_is_deterministic() -> None:
    """The same model lowers to the same kernels and weight bytes every time."""
    from torsh_gen.backends.kernel.printer import format_kernel

    def lowered():
        program = lower_model(_small_cnn(), lanes=16)
        texts = [format_kernel(k) for k in program.kernels.values()]
        return texts, bytes(program.weights), program.workspace_bytes

    assert lowered() == lowered()


def test_target_accumulator_budget_sets_channels_per_tile() -> None:
    """A target's ``accumulator_registers`` (Schedule.accumulators) caps the tile: 8 holds
    fewer output channels than the default 12, and the result still matches onnxruntime."""
    from torsh_gen.backends.kernel.lower.conv import conv_geometry, schedule
    from torsh_gen.backends.llvm import schedule_for
    from torsh_gen.backends.llvm.targets import load_target
    from torsh_gen.ops.registry import Attrs

    assert schedule_for(load_target("wasm32")).accumulators == 0  # the default by width
    geo = conv_geometry((1, 16, 12, 12), (32, 16, 3, 3), Attrs({"pads": [1, 1, 1, 1]}))
    default, narrow = schedule(geo, 4, 4), schedule(geo, 4, 4, accumulators=8)
    assert narrow.rows < default.rows
    x = rand(1, 16, 12, 12)
    w = numpy_helper.from_array(rand(32, 16, 3, 3, seed=2) * 0.1, "w")
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                       [helper.make_tensor_value_info("x", TP.FLOAT, (1, 16, 12, 12))],
                       [helper.make_tensor_value_info("y", TP.FLOAT, (1, 32, 12, 12))], [w])
    from tests.backends.native.helpers import ort_run
    from torsh_gen.backends.kernel.lower import Schedule
    from torsh_gen.backends.kernel.program import build_program
    from torsh_gen.backends.llvm.jit import JitProgram
    from torsh_gen.frontends.onnx import load_onnx
    from torsh_gen.ops.inference import infer_types
    from torsh_gen.passes import pipeline, run_passes

    graph = load_onnx(model.SerializeToString())
    run_passes(graph, pipeline("O3") + ["plan_memory"])
    infer_types(graph)
    program = build_program(graph, Schedule(lanes=4, threads=False, accumulators=8))
    got = JitProgram(program).run({"x": x})["y"]
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_pointwise_budget_applies_to_1x1_convolutions_only() -> None:
    """``pointwise_accumulator_registers`` (wasm32: 8) narrows 1x1 tiles and leaves 3x3
    tiles at ``accumulators``; the kernel texts show the channels per tile."""
    from torsh_gen.backends.kernel.lower import Schedule
    from torsh_gen.backends.llvm import schedule_for
    from torsh_gen.backends.llvm.targets import load_target

    assert schedule_for(load_target("wasm32")).pointwise_accumulators == 8
    assert schedule_for(load_target("x86_64-linux")).pointwise_accumulators == 0
    x = rand(1, 16, 10, 10)
    pw = numpy_helper.from_array(rand(24, 16, 1, 1, seed=3) * 0.2, "pw")
    sp = numpy_helper.from_array(rand(24, 24, 3, 3, seed=4) * 0.1, "sp")
    model = make_model(
        [helper.make_node("Conv", ["x", "pw"], ["a"]),
         helper.make_node("Conv", ["a", "sp"], ["y"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TP.FLOAT, (1, 16, 10, 10))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (1, 24, 10, 10))], [pw, sp])

    def lowered(sched: Schedule):
        from torsh_gen.backends.kernel.printer import format_kernel
        from torsh_gen.backends.kernel.program import build_program
        from torsh_gen.frontends.onnx import load_onnx
        from torsh_gen.ops.inference import infer_types
        from torsh_gen.passes import pipeline, run_passes

        graph = load_onnx(model.SerializeToString())
        run_passes(graph, pipeline("O3") + ["plan_memory"])
        infer_types(graph)
        program = build_program(graph, sched)
        accs = [format_kernel(program.kernels[c.kernel]).count("var acc") for c in program.calls]
        return accs, program

    from tests.backends.native.helpers import ort_run
    from torsh_gen.backends.llvm.jit import JitProgram

    same, _ = lowered(Schedule(lanes=4, threads=False, accumulators=12))
    split, program = lowered(Schedule(lanes=4, threads=False, accumulators=12, pointwise_accumulators=8))
    assert split[0] < same[0] and split[1] == same[1]
    got = JitProgram(program).run({"x": x})["y"]
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


CHANNEL_CASES = [
    # (input shape, out channels, kernel, pads, strides, dilations)
    ((1, 32, 12, 12), 32, 3, [1, 1, 1, 1], [1, 1], [1, 1]),  # two 16-lane vectors per tile
    ((1, 32, 13, 11), 48, 3, [1, 1, 1, 1], [2, 2], [1, 1]),  # one vector, stride 2, odd sizes
    ((2, 32, 9, 9), 32, 3, [0, 0, 0, 0], [1, 1], [1, 1]),  # read in place, batch 2
    ((1, 32, 9, 9), 32, 3, [2, 2, 2, 2], [1, 1], [2, 2]),  # dilation
    ((1, 16, 7, 7), 64, 5, [2, 1, 2, 1], [1, 1], [1, 1]),  # 49 positions: tiles 10+10+10+10+9
    ((1, 256, 14, 14), 32, 1, [0, 0, 0, 0], [2, 2], [1, 1]),  # ResNet's strided 1x1 shortcut
]


@pytest.mark.parametrize("xs, oc, k, pads, strides, dilations", CHANNEL_CASES)
def test_channel_vector_tiles_match_onnxruntime(xs, oc, k, pads, strides, dilations) -> None:
    """16-lane targets run spatial convolutions with the vector across output channels
    (conv_channels): bias, residual and ReLU fused, against onnxruntime."""
    from onnx import shape_inference

    cin = xs[1]
    w = numpy_helper.from_array(rand(oc, cin, k, k, seed=2) * 0.1, "w")
    b = numpy_helper.from_array(rand(oc, seed=4), "b")
    conv = helper.make_node(
        "Conv", ["x", "w", "b"], ["c"], pads=pads, strides=strides, dilations=dilations
    )
    probe = shape_inference.infer_shapes(
        make_model([conv], [helper.make_tensor_value_info("x", TP.FLOAT, xs)],
                   [helper.make_tensor_value_info("c", TP.FLOAT, None)], [w, b])
    )
    ys = tuple(d.dim_value for d in probe.graph.output[0].type.tensor_type.shape.dim)
    model = make_model(
        [conv, helper.make_node("Add", ["c", "z"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT, xs), helper.make_tensor_value_info("z", TP.FLOAT, ys)],
        [helper.make_tensor_value_info("y", TP.FLOAT, ys)], [w, b],
    )
    program = check_native(model, {"x": rand(*xs, seed=3), "z": rand(*ys, seed=5)}, lanes=16)
    (kernel,) = program.kernels.values()
    from torsh_gen.backends.kernel.printer import format_kernel

    width = 32 if oc % 32 == 0 else 16
    # the vector loop runs across output channels
    assert f"in 0:i64..{width}:i64 vector{width} " in format_kernel(kernel)


def test_channel_vector_tiles_only_where_they_pay() -> None:
    """AVX2's 8 lanes, a 3-channel stem (27 multiply-adds per output), groups and channel
    counts that are not a multiple of the lanes keep the row tile."""
    from torsh_gen.backends.kernel.lower.conv import conv_geometry
    from torsh_gen.backends.kernel.lower.conv_channels import applies
    from torsh_gen.ops.registry import Attrs

    pads = Attrs({"pads": [1, 1, 1, 1]})
    geo = conv_geometry((1, 64, 28, 28), (64, 64, 3, 3), pads)
    assert applies(geo, 16, "f32", True)
    assert not applies(geo, 8, "f32", True)
    assert not applies(geo, 16, "f64", True) and not applies(geo, 16, "f32", False)
    assert not applies(conv_geometry((1, 3, 224, 224), (64, 3, 3, 3), pads), 16, "f32", True)
    assert not applies(conv_geometry((1, 64, 28, 28), (40, 64, 3, 3), pads), 16, "f32", True)
    # stride-1 1x1 convolutions stay GEMMs; strided ones take channel tiles
    assert not applies(conv_geometry((1, 256, 14, 14), (64, 256, 1, 1), Attrs({})), 16, "f32", True)
    assert applies(conv_geometry((1, 256, 14, 14), (64, 256, 1, 1), Attrs({"strides": [2, 2]})), 16, "f32", True)
    grouped = Attrs({"pads": [1, 1, 1, 1], "group": 2})
    assert not applies(conv_geometry((1, 64, 28, 28), (64, 32, 3, 3), grouped), 16, "f32", True)


SUBSAMPLED_CASES = [
    # (input shape, out channels, strides, lanes): ResNet's shortcuts and odd sizes
    ((1, 64, 14, 14), 32, [2, 2], 16),  # fewer than 256 in channels: no channel tiles
    ((1, 48, 13, 11), 24, [2, 2], 8),  # odd sizes, AVX2's lanes
    ((2, 16, 9, 10), 8, [3, 2], 4),  # unequal strides, batch 2, wasm's lanes
    ((1, 1024, 14, 14), 32, [2, 2], 16),  # channel tiles would apply; 1024 channels go GEMM
]


@pytest.mark.parametrize("xs, oc, strides, lanes", SUBSAMPLED_CASES)
def test_strided_pointwise_runs_as_a_gemm_on_a_dense_copy(xs, oc, strides, lanes) -> None:
    """A strided 1x1 convolution copies the positions its stride visits side by side (one
    scratch buffer) and runs the pointwise GEMM over them, with bias, residual and ReLU."""
    w = numpy_helper.from_array(rand(oc, xs[1], 1, 1, seed=2) * 0.1, "w")
    b = numpy_helper.from_array(rand(oc, seed=4), "b")
    ys = (xs[0], oc, -(-xs[2] // strides[0]), -(-xs[3] // strides[1]))
    model = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=strides),
         helper.make_node("Add", ["c", "z"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT, xs), helper.make_tensor_value_info("z", TP.FLOAT, ys)],
        [helper.make_tensor_value_info("y", TP.FLOAT, ys)], [w, b],
    )
    program = check_native(model, {"x": rand(*xs, seed=3), "z": rand(*ys, seed=5)}, lanes=lanes, interpret=lanes == 4)
    (kernel,) = program.kernels.values()
    scratch = [buf for buf in kernel.buffers if buf.name.startswith("s")]
    assert [buf.size.value for buf in scratch] == [xs[0] * xs[1] * ys[2] * ys[3]]  # the dense copy


@pytest.mark.parametrize("size, across", [(16, False), (14, True), (9, True)])
def test_target_channel_tiles_only_where_row_tiles_waste_lanes(size: int, across: bool) -> None:
    """A target that turns channel tiles on (wasm32's 4 lanes) keeps the row tile where its
    rows fill whole vectors (16 = two 8-lane blocks) and takes channel tiles where a row
    leaves lanes idle (14 in two 8-lane blocks: 1/8; 9: more); both match onnxruntime."""
    import re

    import torsh_gen.passes.memplan  # noqa: F401  (registers plan_memory)
    from tests.backends.native.helpers import ort_run
    from torsh_gen.backends.kernel.lower import Schedule
    from torsh_gen.backends.kernel.lower.conv import conv_geometry, row_waste, schedule
    from torsh_gen.backends.kernel.printer import format_kernel
    from torsh_gen.backends.kernel.program import build_program
    from torsh_gen.backends.llvm.jit import JitProgram
    from torsh_gen.frontends.onnx import load_onnx
    from torsh_gen.ops.inference import infer_types
    from torsh_gen.ops.registry import Attrs
    from torsh_gen.passes import pipeline, run_passes

    geo = conv_geometry((1, 32, size, size), (40, 32, 3, 3), Attrs({"pads": [1, 1, 1, 1]}))
    assert (row_waste(geo, schedule(geo, 4, 4, 12), 4) >= 0.1) is across
    w = numpy_helper.from_array(rand(40, 32, 3, 3, seed=2) * 0.1, "w")
    b = numpy_helper.from_array(rand(40, seed=4), "b")
    model = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT, (1, 32, size, size))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (1, 40, size, size))], [w, b],
    )
    graph = load_onnx(model.SerializeToString())
    run_passes(graph, pipeline("O3") + ["plan_memory"])
    infer_types(graph)
    program = build_program(graph, Schedule(lanes=4, threads=False, accumulators=12, channel_tiles=True))
    (kernel,) = program.kernels.values()
    assert bool(re.search(r"for r\d+ in 0:i64\.\.8:i64 vector8 ", format_kernel(kernel))) is across
    x = rand(1, 32, size, size, seed=3)
    got = JitProgram(program).run({"x": x})["y"]
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


#: (index into GEOMETRIES, or an extra geometry; whether the taps roll): 3x3 padded, in
#: place, grouped, dilated (reads 2 apart), 1-d and 3-d; 5x5; 7x7 stride 2 (runs of 4 and 3);
#: dilation 2 with stride 2 (every tap in one phase); and the ones that stay unrolled: 3x3
#: stride 2 (runs of 2 and 1), stride 2 along x only, 5x5 stride 2, a 2-wide kernel.
ROLLED_CASES = [
    (4, True), (5, True), (17, True), (8, True), (26, True), (27, True), (10, True), (12, True),
    (((1, 3, 17, 19), (4, 3, 3, 3), dict(strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2])), True),
    (6, False), (7, False), (11, False), (9, False),
]


@pytest.mark.parametrize("case, rolled", ROLLED_CASES, ids=[str(i) for i in range(len(ROLLED_CASES))])
def test_rolled_tap_loops_match_onnxruntime(case, rolled: bool) -> None:
    """With a target's ``rolled_tap_accumulators`` (wasm32: 8), a kernel row's taps run as a
    rolled loop per phase of the source where every phase has 3 or more of them; JIT and
    interpreter match onnxruntime either way."""
    from torsh_gen.backends.kernel.lower import Schedule
    from torsh_gen.backends.kernel.printer import format_kernel

    xs, ws, attrs = GEOMETRIES[case] if isinstance(case, int) else case
    sched = Schedule(lanes=4, threads=False, rolled_tap_accumulators=8)
    program = check_native(conv_model(xs, ws, **attrs), {"x": rand(*xs, seed=3)}, sched=sched, interpret=True)
    (text,) = [format_kernel(program.kernels[c.kernel]) for c in program.calls if "Conv" in c.op_type]
    assert (" rolled {" in text) is rolled


def test_wasm32_rolls_taps_with_eight_accumulators() -> None:
    """wasm32's data turns rolled taps on; the x86 and aarch64 targets keep them unrolled."""
    from torsh_gen.backends.kernel.lower.conv import conv_geometry, schedule
    from torsh_gen.backends.llvm import schedule_for
    from torsh_gen.backends.llvm.targets import load_target
    from torsh_gen.ops.registry import Attrs

    assert schedule_for(load_target("wasm32")).rolled_tap_accumulators == 8
    for name in ("x86_64-linux", "aarch64-linux"):
        assert schedule_for(load_target(name)).rolled_tap_accumulators == 0
    geo = conv_geometry((1, 64, 55, 55), (192, 64, 3, 3), Attrs({"pads": [1, 1, 1, 1]}))
    lay = schedule(geo, 4, 4, 0, 8)
    assert lay.rolled and lay.rows * lay.pair * (lay.width // 4) == 8
    assert not schedule(geo, 4, 4).rolled


@pytest.mark.parametrize("xs, oc, k, pads, strides, dilations", CHANNEL_CASES[1:5])
def test_channel_tiles_with_rolled_taps_match_onnxruntime(xs, oc, k, pads, strides, dilations) -> None:
    """Channel tiles (4 lanes, a target that turns them on) loop over a kernel row's taps
    where the row tiles would (3 or more per phase) and keep them unrolled elsewhere (the
    stride-2 3x3 case); all match onnxruntime."""
    from torsh_gen.backends.kernel.lower import Schedule
    from torsh_gen.backends.kernel.printer import format_kernel

    attrs = dict(pads=pads, strides=strides, dilations=dilations)
    x = rand(*xs, seed=3)
    sched = Schedule(lanes=4, threads=False, channel_tiles=True, rolled_tap_accumulators=8)
    program = check_native(conv_model(xs, (oc, xs[1], k, k), **attrs), {"x": x}, sched=sched)
    (text,) = [format_kernel(program.kernels[c.kernel]) for c in program.calls if "Conv" in c.op_type]
    assert re.search(r"for r\d+ in 0:i64\.\.(4|8):i64 vector(4|8) ", text)  # across channels
    assert (" rolled {" in text) is (strides[1] == 1)
