"""Indexing ops (gathers, scatters, OneHot, Resize) through the JIT and the interpreter,
against onnxruntime; run-time indices out of range must stay inside the buffers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.native.helpers import check_native, interpret_program, lower_model, rand
from tests.backends.native.test_shape import in_bounds, ints, run, run_runtime, single, with_output
from torsh_gen.errors import InputError


def idx(values, dtype=np.int64) -> np.ndarray:
    """An index array."""
    return np.array(values, dtype=dtype)


def run_close(op: str, feeds, consts=None, interpret=False, inputs=None, opset=17, **attrs) -> None:
    """Compare a float-computing op with onnxruntime to 1e-5."""
    model = single(op, feeds, consts, inputs, 1, opset, **attrs)
    program = check_native(model, feeds, rtol=1e-5, atol=1e-5, interpret=interpret)
    assert op in [c.op_type for c in program.calls]


# --------------------------------------------------------------------------- Gather
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_gather_runtime_indices(axis: int, dtype) -> None:
    x = rand(5, 6, 7)
    size = x.shape[axis]
    i = idx([[0, size - 1, -1], [-size, 2, 1]], dtype)
    run("Gather", {"x": x, "i": i}, axis=axis, interpret=axis == -1 and dtype == np.int64)


@pytest.mark.parametrize("axis", [0, 2])
def test_gather_weight_indices_and_scalar_index(axis: int) -> None:
    run("Gather", {"x": ints(4, 3, 9)}, {"i": idx([3, -2, 0, 0])}, axis=axis, interpret=axis == 2)
    run("Gather", {"x": rand(4, 3, 9) > 0}, {"i": idx(-1)}, axis=axis)


def test_gather_embedding() -> None:
    """A vocab x hidden table (a weight) read at run-time token ids: a row copy per token."""
    table = rand(100, 48)
    ids = np.random.default_rng(1).integers(-100, 100, (3, 11))
    model = single("Gather", {"ids": ids}, {"emb": table}, inputs=["emb", "ids"], axis=0)
    program = check_native(model, {"ids": ids}, rtol=0, atol=0)
    assert [c.op_type for c in program.calls] == ["Gather"]


def test_gather_runtime_out_of_range_stays_in_bounds() -> None:
    """onnxruntime rejects such indices; the kernel clamps them (the interpreter would raise
    on any access outside a buffer)."""
    x = rand(6, 5)
    i = idx([7, -9, 2, 10**12, -(10**12)])
    program = lower_model(single("Gather", {"x": x, "i": i}, axis=0))
    want = x[[5, 0, 2, 5, 0]]
    from torsh_gen.backends.llvm.jit import JitProgram

    np.testing.assert_array_equal(JitProgram(program).run({"x": x, "i": i})["y0"], want)
    np.testing.assert_array_equal(interpret_program(program, {"x": x, "i": i})[0], want)


def _clamped(i: np.ndarray, size: int) -> np.ndarray:
    """What the kernels make of run-time indices: wrap negatives once, then clamp."""
    return np.clip(np.where(i < 0, i + size, i), 0, size - 1)


def _jit_and_interpret(model, feeds) -> list[np.ndarray]:
    from torsh_gen.backends.llvm.jit import JitProgram

    program = lower_model(model)
    got = JitProgram(program).run(feeds)
    interpreted = interpret_program(program, feeds)  # raises on any access outside a buffer
    for spec, out in zip(program.outputs, interpreted):
        np.testing.assert_array_equal(got[spec.name], out)
    return interpreted


def test_wild_runtime_indices_stay_in_bounds() -> None:
    """GatherElements, GatherND, ScatterND and ScatterElements with indices far outside."""
    x = rand(3, 4)
    wild = idx([[5, -7, 1, 99], [-1, 2, -(10**15), 3]])
    feeds = {"x": x, "i": wild}
    (got,) = _jit_and_interpret(single("GatherElements", feeds, axis=0), feeds)
    np.testing.assert_array_equal(got, np.take_along_axis(x, _clamped(wild, 3), 0))
    nd = idx([[7, -9], [1, 4], [-2, 0]])
    (got,) = _jit_and_interpret(single("GatherND", {"x": x, "i": nd}), {"x": x, "i": nd})
    np.testing.assert_array_equal(got, x[_clamped(nd[:, 0], 3), _clamped(nd[:, 1], 4)])
    u = rand(3, seed=3)
    feeds = {"x": x, "i": nd, "u": u}
    (got,) = _jit_and_interpret(single("ScatterND", feeds), feeds)
    want = x.copy()
    want[_clamped(nd[:, 0], 3), _clamped(nd[:, 1], 4)] = u
    np.testing.assert_array_equal(got, want)
    feeds = {"x": x, "i": wild, "u": rand(2, 4, seed=4)}
    (got,) = _jit_and_interpret(single("ScatterElements", feeds, opset=16, axis=0), feeds)
    want = x.copy()
    np.put_along_axis(want, _clamped(wild, 3), feeds["u"], 0)
    np.testing.assert_array_equal(got, want)


def test_indices_larger_than_data_are_refused() -> None:
    feeds = {"x": rand(3, 4), "i": np.zeros((3, 5), np.int64)}
    with pytest.raises(InputError, match="exceed"):
        lower_model(single("GatherElements", feeds, axis=0))


def test_gather_constant_out_of_range_is_an_error() -> None:
    with pytest.raises(InputError, match="out of range"):
        lower_model(single("Gather", {"x": rand(3, 4)}, {"i": idx([1, 4])}, axis=1))


# --------------------------------------------------------------------------- GatherElements, GatherND
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis: int) -> None:
    x = rand(4, 5, 6)
    shape = [3, 4, 6]
    size = x.shape[axis]
    i = np.random.default_rng(2).integers(-size, size, shape)
    run("GatherElements", {"x": x, "i": i}, axis=axis, interpret=axis == 1)


@pytest.mark.parametrize(
    "batch_dims,ishape", [(0, (2, 3, 2)), (0, (4, 1)), (0, (2, 3)), (1, (3, 2, 1))]
)
def test_gather_nd(batch_dims: int, ishape) -> None:
    x = rand(3, 4, 5)
    m = ishape[-1]
    sizes = x.shape[batch_dims : batch_dims + m]
    rng = np.random.default_rng(3)
    i = np.stack([rng.integers(-s, s, ishape[:-1]) for s in sizes], axis=-1).astype(np.int64)
    run("GatherND", {"x": x, "i": i}, batch_dims=batch_dims, interpret=batch_dims == 1)


# --------------------------------------------------------------------------- scatters
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max"])
def test_scatter_nd(reduction: str) -> None:
    x = rand(5, 4, 3)
    i = idx([[1], [-2], [0]]) if reduction == "none" else idx([[1], [3], [1]])
    u = rand(3, 4, 3, seed=5)
    opset = 18 if reduction in ("max",) else 16
    run(
        "ScatterND",
        {"x": x, "i": i, "u": u},
        opset=opset,
        reduction=reduction,
        interpret=reduction == "add",
    )


def test_scatter_nd_elementwise_indices_interpreted() -> None:
    x = ints(3, 4)
    run(
        "ScatterND",
        {"x": x, "i": idx([[0, 1], [2, -1], [1, 0]]), "u": ints(3, seed=7)},
        interpret=True,
    )


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("reduction", ["none", "add", "mul"])
def test_scatter_elements(axis: int, reduction: str) -> None:
    x = rand(4, 5)
    shape = (2, 3) if axis == 0 else (3, 2)
    size = x.shape[axis]
    perm = np.random.default_rng(4).permutation(size)
    if axis == 0:
        i = np.stack([perm[:2]] * 3, axis=1) - (size if reduction == "none" else 0)
    else:
        i = (
            np.stack([perm[:2]] * 3, axis=0)
            if reduction == "none"
            else np.array([[1, 1], [0, 3], [4, 4]])
        )
    i = i.astype(np.int64).reshape(shape)
    run_close(
        "ScatterElements",
        {"x": x, "i": i, "u": rand(*shape, seed=6)},
        opset=16,
        axis=axis,
        reduction=reduction,
        interpret=axis == 1 and reduction == "add",
    )


# --------------------------------------------------------------------------- OneHot
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(axis: int) -> None:
    i = idx([[0, 3, -1, 9], [-5, 2, 4, 1], [7, -8, 0, 2]])
    consts = {"d": idx(5), "v": np.array([-1.0, 2.5], np.float32)}
    run("OneHot", {"i": i}, consts, inputs=["i", "d", "v"], axis=axis, interpret=axis == 1)


def test_one_hot_runtime_values_and_float_indices() -> None:
    i = np.array([[0.0, 2.7, -1.0], [3.0, 1.0, -2.2]], np.float32)
    run(
        "OneHot",
        {"i": i, "v": idx([0, 7])},
        {"d": idx([4])},
        inputs=["i", "d", "v"],
        interpret=True,
    )


# --------------------------------------------------------------------------- Resize
CTMS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]


@pytest.mark.parametrize("ctm", CTMS)
@pytest.mark.parametrize("scale", [2.0, 0.5, 1.7])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_scales(ctm: str, scale: float, mode: str) -> None:
    x = rand(1, 3, 5, 7)
    scales = np.array([1, 1, scale, scale], np.float32)
    run_close(
        "Resize",
        {"x": x},
        {"s": scales},
        inputs=["x", "", "s"],
        mode=mode,
        coordinate_transformation_mode=ctm,
        interpret=ctm == "half_pixel" and scale == 0.5,
    )


@pytest.mark.parametrize(
    "nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
)
@pytest.mark.parametrize("sizes", [(1, 3, 10, 14), (1, 3, 3, 4), (1, 3, 5, 11), (1, 3, 8, 7)])
def test_resize_sizes_nearest(nearest_mode: str, sizes) -> None:
    x = rand(1, 3, 5, 7)
    run(
        "Resize",
        {"x": x},
        {"z": np.array(sizes, np.int64)},
        inputs=["x", "", "", "z"],
        nearest_mode=nearest_mode,
        coordinate_transformation_mode="half_pixel",
    )


@pytest.mark.parametrize(
    "sizes", [(1, 3, 10, 14), (1, 3, 3, 4), (1, 3, 5, 11), (1, 3, 8, 7), (2, 3, 9, 20)]
)
def test_resize_sizes_linear(sizes) -> None:
    x = rand(sizes[0], 3, 5, 7)
    run_close(
        "Resize",
        {"x": x},
        {"z": np.array(sizes, np.int64)},
        inputs=["x", "", "", "z"],
        mode="linear",
    )


def test_upsample_and_opset10_resize() -> None:
    x = rand(1, 2, 3, 4)
    s = np.array([1, 1, 2, 3], np.float32)
    run("Upsample", {"x": x}, {"s": s}, opset=9, interpret=True)
    run_close("Upsample", {"x": x}, {"s": s}, opset=9, mode="linear")
    run("Resize", {"x": x}, {"s": np.array([1, 1, 0.5, 0.5], np.float32)}, opset=10)
    run_close("Resize", {"x": x}, {"s": s}, opset=10, mode="linear")


def test_upsample7_axes_and_other_coordinate_modes() -> None:
    x = rand(1, 2, 5, 6)
    run("Upsample", {"x": x}, opset=7, scales=[1.0, 1.0, 2.0, 1.5])
    s = np.array([2.0, 0.6], np.float32)
    run_close(
        "Resize", {"x": x}, {"s": s}, inputs=["x", "", "s"], opset=18, axes=[2, 3], mode="linear"
    )
    for ctm in ("tf_half_pixel_for_nn", "half_pixel_symmetric"):
        run(
            "Resize",
            {"x": x},
            {"s": s},
            inputs=["x", "", "s"],
            opset=19,
            axes=[-2, -1],
            coordinate_transformation_mode=ctm,
        )


def test_resize_nearest_int_tensor_3d() -> None:
    run(
        "Resize",
        {"x": ints(2, 3, 6, dtype=np.int32)},
        {"z": np.array([2, 3, 13], np.int64)},
        inputs=["x", "", "", "z"],
        opset=13,
        interpret=True,
    )


def test_resize_cubic_of_integers_declined() -> None:
    from torsh_gen.errors import UnsupportedOpError

    model = single(
        "Resize",
        {"x": ints(1, 1, 4, 4, dtype=np.int32)},
        {"s": np.array([1, 1, 2, 2], np.float32)},
        inputs=["x", "", "s"],
        mode="cubic",
    )
    with pytest.raises(UnsupportedOpError, match="cubic Resize of i32 data"):
        lower_model(model)


# --------------------------------------------------------------------------- TopK
@pytest.mark.parametrize("axis", [-1, 1, 0])
@pytest.mark.parametrize("largest", [1, 0])
def test_topk(axis: int, largest: int) -> None:
    x = np.round(rand(6, 9, 5) * 2).astype(np.float32)  # many ties: lower index first
    model = single("TopK", {"x": x}, {"k": idx([3])}, n_out=2, opset=11, axis=axis, largest=largest)
    program = check_native(model, {"x": x}, rtol=0, atol=0, interpret=axis == 1 and largest == 1)
    assert "TopK" in [c.op_type for c in program.calls]


def test_topk_full_sort_ints_and_opset1() -> None:
    x = ints(4, 7, dtype=np.int32)
    model = single("TopK", {"x": x}, {"k": idx([7])}, n_out=2, opset=11, largest=0)
    check_native(model, {"x": x}, rtol=0, atol=0, interpret=True)
    check_native(
        single("TopK", {"x": rand(3, 10)}, n_out=2, opset=9, k=4),
        {"x": rand(3, 10)},
        rtol=0,
        atol=0,
    )
    big = rand(40, 60)  # enough rows for the parallel loop
    check_native(
        single("TopK", {"x": big}, {"k": idx([5])}, n_out=2, opset=11), {"x": big}, rtol=0, atol=0
    )


# --------------------------------------------------------------------------- Resize, run-time values
RUNTIME_CTMS = CTMS + ["half_pixel_symmetric", "tf_half_pixel_for_nn"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.mark.parametrize("ctm", RUNTIME_CTMS)
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_runtime_scales(ctm: str, mode: str) -> None:
    """Scales fed at run time: the kernel computes the tap tables from them. (align_corners
    needs whole output lengths here: onnxruntime and the reference part ways otherwise.)"""
    x = rand(1, 2, 3, 5)
    s = np.array([1, 1, 2.0, 0.8], np.float32)
    run_runtime(
        "Resize", {"x": x, "s": s}, (1, 2, 6, 4), None, ["x", "", "s"], 19,
        interpret=ctm == "half_pixel", tol=1e-5, mode=mode, coordinate_transformation_mode=ctm,
    )


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_runtime_sizes_keep_aspect_ratio(policy: str, mode: str) -> None:
    x = rand(2, 3, 6, 9)
    out = {"stretch": (2, 3, 4, 13), "not_larger": (2, 3, 4, 6), "not_smaller": (2, 3, 9, 13)}
    z = np.array([13, 4], np.int64)  # axes listed last axis first
    run_runtime(
        "Resize", {"x": x, "z": z}, out[policy], None, ["x", "", "", "z"], 18,
        interpret=policy == "not_larger", tol=1e-5, mode=mode, axes=[3, 2],
        keep_aspect_ratio_policy=policy,
    )


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("at_run_time", [True, False])
def test_resize_antialias(mode: str, at_run_time: bool) -> None:
    """Downscaling widens the filter by 1/scale (cubic by 0.3: 14 taps, a rolled loop)."""
    x = rand(1, 2, 10, 9)
    s = np.array([1, 1, 0.3, 0.5], np.float32)
    feeds, consts = {"x": x}, {}
    (feeds if at_run_time else consts)["s"] = s
    run_runtime(
        "Resize", feeds, (1, 2, 3, 4), consts, ["x", "", "s"], 18,
        interpret=at_run_time, tol=1e-5, mode=mode, antialias=1,
    )
    z = np.array([4, 3], np.int64)
    feeds, consts = {"x": x}, {}
    (feeds if at_run_time else consts)["z"] = z
    run_runtime(
        "Resize", feeds, (1, 2, 4, 3), consts, ["x", "", "", "z"], 18, tol=1e-5,
        mode=mode, antialias=1, axes=[2, 3],
    )


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("roi_at_run_time", [True, False])
def test_resize_tf_crop_and_resize(mode: str, roi_at_run_time: bool) -> None:
    """A roi partly outside the input: those positions take extrapolation_value."""
    x = rand(1, 2, 6, 7)
    roi = np.array([0.1, -0.2, 0.8, 1.3], np.float32)
    feeds, consts = {"x": x, "z": np.array([5, 8], np.int64)}, {}
    (feeds if roi_at_run_time else consts)["r"] = roi
    run_runtime(
        "Resize", feeds, (1, 2, 5, 8), consts, ["x", "r", "", "z"], 18,
        interpret=roi_at_run_time and mode == "linear", tol=1e-5, mode=mode, axes=[2, 3],
        coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=10.0,
    )


@pytest.mark.parametrize("scale", [2.0, 0.75])
def test_resize_cubic_exclude_outside_and_coefficient(scale: float) -> None:
    x = rand(1, 3, 4, 8)
    s = np.array([1, 1, scale, scale], np.float32)
    out = (1, 3, int(4 * scale), int(8 * scale))
    for consts, feeds in (({}, {"x": x, "s": s}), ({"s": s}, {"x": x})):
        run_runtime(
            "Resize", feeds, out, consts, ["x", "", "s"], 18, interpret=scale < 1 and not consts,
            tol=1e-5, mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1,
        )


def test_upsample_and_opset10_resize_runtime_scales() -> None:
    x = rand(1, 2, 3, 4)
    s = np.array([1, 1, 2, 3], np.float32)
    for op, opset in (("Upsample", 9), ("Resize", 10)):
        run_runtime("Upsample" if op == "Upsample" else "Resize", {"x": x, "s": s}, (1, 2, 6, 12),
                    opset=opset, interpret=op == "Upsample")
        run_runtime(op, {"x": x, "s": s}, (1, 2, 6, 12), opset=opset, tol=1e-5, mode="linear")


@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
def test_resize_runtime_sizes_nearest_ints(nearest_mode: str) -> None:
    x = ints(2, 3, 6, dtype=np.int32)
    z = np.array([3, 7, 4], np.int64)
    run_runtime(
        "Resize", {"x": x, "z": z}, (3, 7, 4), None, ["x", "", "", "z"], 13,
        interpret=nearest_mode == "ceil", nearest_mode=nearest_mode,
    )


def test_resize_runtime_unscaled_axis_is_left_as_is() -> None:
    """An axis whose length stays may still be rescaled at run time; at scale 1 the
    reference leaves it untouched (so do we), else it is resampled. An infinity shows
    it: a zero-weight tap on it would give NaN (onnxruntime does give some, so the oracle
    here is the cpu target's reference)."""
    from torsh_gen.backend import prepare

    x = rand(1, 4, 3, 5)
    x[0, 1, 2, 3] = np.inf
    for scale in (1.0, 1.2):
        s = np.array([1, scale, 2, 1], np.float32)
        model = with_output("Resize", {"x": x, "s": s}, (1, 4, 6, 5), None, ["x", "", "s"],
                            mode="linear")
        want = prepare(model).run([x, s])[0]
        np.testing.assert_allclose(in_bounds(model, {"x": x, "s": s})[0], want, rtol=1e-6)
        assert not np.isnan(want).any()


def test_resize_runtime_wild_values_stay_in_bounds() -> None:
    x = rand(1, 2, 3, 4)
    for mode, ctm in [("nearest", "half_pixel"), ("linear", "align_corners"),
                      ("cubic", "tf_crop_and_resize"), ("linear", "half_pixel_symmetric")]:
        feeds = {"x": x, "r": np.zeros(8, np.float32), "s": np.ones(4, np.float32)}
        model = with_output("Resize", feeds, (1, 2, 6, 2), None, ["x", "r", "s"], mode=mode,
                            coordinate_transformation_mode=ctm, antialias=int(mode != "nearest"))
        for v in (np.nan, np.inf, -np.inf, 0.0, -3.0, 1e-30, 1e30):
            s = np.array([1, v, v, 0.5], np.float32)
            r = np.array([v, 0, 0, 0, 1, 1, 1, v], np.float32)
            in_bounds(model, {"x": x, "r": r, "s": s})
    feeds = {"x": x, "z": np.zeros(4, np.int64)}
    model = with_output("Resize", feeds, (1, 2, 5, 3), None, ["x", "", "", "z"], mode="cubic")
    for z in ([1, 2, 0, -5], [1, 2, 2**62, 1], [-1, -1, -1, -1]):
        in_bounds(model, {"x": x, "z": np.array(z, np.int64)})


def test_resize_antialias_too_many_taps_declined() -> None:
    from torsh_gen.errors import UnsupportedOpError

    feeds = {"x": rand(1, 1, 2, 300), "s": np.array([1, 1, 1, 0.01], np.float32)}
    model = with_output("Resize", feeds, (1, 1, 2, 3), None, ["x", "", "s"], mode="linear",
                        antialias=1)
    with pytest.raises(UnsupportedOpError, match="takes over 64 taps"):
        lower_model(model)
