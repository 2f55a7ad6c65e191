"""Data-movement ops through the kernel IR, the JIT and the interpreter, against onnxruntime.

Every case feeds the moved tensor as a graph input so that constant folding leaves the op
in place, and checks that the lowered program really calls the op's kernel.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.backends.native.helpers import check_native, make_model, rand


def single(
    op: str,
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    inputs: list[str] | None = None,
    n_out: int = 1,
    opset: int = 17,
    **attrs,
) -> onnx.ModelProto:
    """A one-node model: graph inputs from ``feeds``, initializers from ``consts``; ONNX's
    shape inference types the outputs. ``inputs`` orders the node's inputs ('' = absent)."""
    consts = consts or {}
    names = inputs if inputs is not None else list(feeds) + list(consts)
    outs = [f"y{j}" for j in range(n_out)]
    vi = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    model = make_model(
        [helper.make_node(op, names, outs, **attrs)],
        vi,
        [onnx.ValueInfoProto(name=o) for o in outs],
        inits,
        opset=opset,
    )
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def run(
    op: str,
    feeds: dict[str, np.ndarray],
    consts=None,
    interpret: bool = False,
    inputs=None,
    n_out: int = 1,
    opset: int = 17,
    **attrs,
) -> None:
    """Compare one op exactly with onnxruntime and check that its kernel was emitted."""
    model = single(op, feeds, consts, inputs, n_out, opset, **attrs)
    program = check_native(model, feeds, rtol=0, atol=0, interpret=interpret)
    assert op in [c.op_type for c in program.calls]


def ints(*shape: int, dtype=np.int64, seed: int = 0) -> np.ndarray:
    """Seeded integers in [-100, 100)."""
    return np.random.default_rng(seed).integers(-100, 100, shape).astype(dtype)


# --------------------------------------------------------------------------- transpose
@pytest.mark.parametrize(
    "perm", [[1, 0, 2, 3], [0, 2, 3, 1], [0, 3, 1, 2], [3, 2, 1, 0], [2, 0, 3, 1], None]
)
def test_transpose(perm) -> None:
    attrs = {} if perm is None else {"perm": perm}
    run("Transpose", {"x": rand(2, 3, 9, 17)}, **attrs)


def test_transpose_tiny_interpreted_and_dtypes() -> None:
    run("Transpose", {"x": rand(2, 3, 4)}, perm=[2, 0, 1], interpret=True)
    run("Transpose", {"x": ints(5, 11)}, perm=[1, 0], interpret=True)
    run("Transpose", {"x": ints(3, 4, 20, dtype=np.uint8)}, perm=[1, 0, 2])
    run("Transpose", {"x": rand(4, 9, 3) > 0}, perm=[2, 1, 0], interpret=True)
    run("Transpose", {"x": ints(64, 48, dtype=np.int32)}, perm=[1, 0])


def test_transpose_large_parallel() -> None:
    run("Transpose", {"x": rand(8, 64, 33)}, perm=[1, 0, 2])


@pytest.mark.parametrize("shape,perm", [((2, 37, 70), [0, 2, 1]), ((40, 3, 33), [2, 1, 0])])
def test_transpose_tiled(shape, perm) -> None:
    """Both long dims cut into cache blocks, with partial blocks at the edges."""
    run("Transpose", {"x": ints(*shape, dtype=np.int32)}, perm=perm, interpret=shape[0] == 2)
    run("Transpose", {"x": rand(*shape)}, perm=perm)


# --------------------------------------------------------------------------- concat, split
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_concat(axis: int, n: int) -> None:
    feeds = {}
    for k in range(n):
        shape = [2, 3, 5]
        shape[axis] += k * 3 + (k % 2)
        feeds[f"x{k}"] = rand(*shape, seed=k)
    run("Concat", feeds, axis=axis, interpret=n == 2 and axis == 1)


def test_concat_dtypes_and_weight_operand() -> None:
    run("Concat", {"a": ints(2, 3), "b": ints(2, 7, seed=1)}, axis=1, interpret=True)
    run("Concat", {"a": rand(3, 4) > 0, "b": rand(1, 4, seed=2) > 0}, axis=0, interpret=True)
    run(
        "Concat",
        {"a": ints(4, 9, dtype=np.uint8)},
        {"w": ints(4, 2, dtype=np.uint8, seed=3)},
        axis=1,
    )


@pytest.mark.parametrize(
    "case",
    [
        dict(opset=11, axis=1, split=[2, 5, 1]),
        dict(opset=13, axis=-1, sizes=[3, 9, 4]),
        dict(opset=13, axis=0, n_out=2),
        dict(opset=18, axis=2, n_out=3, num_outputs=3),
    ],
)
def test_split(case: dict) -> None:
    case = dict(case)
    opset, axis = case.pop("opset"), case.pop("axis")
    n_out = case.pop("n_out", 3)
    x = rand(4, 8, 16)
    consts, inputs = None, None
    if "sizes" in case:
        consts, inputs = {"s": np.array(case.pop("sizes"), np.int64)}, ["x", "s"]
    run("Split", {"x": x}, consts, inputs=inputs, n_out=n_out, opset=opset, axis=axis, **case)


def test_split_int64_interpreted() -> None:
    run("Split", {"x": ints(3, 10)}, n_out=2, opset=13, axis=1, interpret=True)


# --------------------------------------------------------------------------- slice
SLICES = [
    ([1, 0], [3, 100], [0, 2], None),  # clamped end
    ([-3], [-1], [1], None),  # negative bounds
    ([0, 1], [100, 13], [1, 2], [2, 3]),  # steps
    ([-1], [-1000], [2], [-1]),  # reverse the whole axis
    ([5, 9], [0, 1], [1, 2], [-2, -3]),  # negative steps, clamped starts
    ([2], [2], [0], None),  # empty
    ([0, 0, 0], [4, 6, 13], [0, 1, 2], None),  # the whole tensor
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice(starts, ends, axes, steps) -> None:
    consts = {
        "s": np.array(starts, np.int64),
        "e": np.array(ends, np.int64),
        "a": np.array(axes, np.int64),
    }
    inputs = ["x", "s", "e", "a"]
    if steps is not None:
        consts["k"] = np.array(steps, np.int64)
        inputs.append("k")
    x = rand(4, 6, 13)
    if starts == [2]:
        model = single("Slice", {"x": x}, consts, inputs)
        check_native(model, {"x": x}, rtol=0, atol=0)
        return
    run("Slice", {"x": x}, consts, inputs=inputs, interpret=steps == [-2, -3])


def test_slice_opset1_and_dtypes() -> None:
    run("Slice", {"x": ints(5, 7)}, opset=9, starts=[1, -4], ends=[4, 1000], interpret=True)
    consts = {"s": np.array([1], np.int32), "e": np.array([-1], np.int32)}
    run("Slice", {"x": rand(6, 7) > 0}, consts, inputs=["x", "s", "e"], interpret=True)


# --------------------------------------------------------------------------- expand, tile
@pytest.mark.parametrize(
    "shape,target",
    [((3, 1), (2, 3, 17)), ((1, 5, 1), (4, 5, 9)), ((7,), (1, 7)), ((2, 1, 3), (2, 4, 3))],
)
def test_expand(shape, target) -> None:
    run(
        "Expand",
        {"x": rand(*shape)},
        {"s": np.array(target, np.int64)},
        interpret=shape == (2, 1, 3),
    )


@pytest.mark.parametrize(
    "shape,reps", [((2, 3), (1, 2)), ((2, 3, 4), (2, 1, 3)), ((5,), (4,)), ((1, 9), (3, 2))]
)
def test_tile(shape, reps) -> None:
    run("Tile", {"x": ints(*shape)}, {"r": np.array(reps, np.int64)}, interpret=shape == (2, 3))


# --------------------------------------------------------------------------- depth <-> space
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space(mode: str) -> None:
    run("DepthToSpace", {"x": rand(2, 12, 3, 5)}, blocksize=2, mode=mode, interpret=mode == "CRD")
    run("SpaceToDepth", {"x": rand(1, 3, 6, 9)}, blocksize=3)


# --------------------------------------------------------------------------- pad
PADS = [
    [0, 1, 2, 3, 0, 2, 1, 1],
    [1, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 4, 0, 0, 0, 5],
    [0, 0, 2, 1, 0, 0, 1, 2],
]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", PADS)
def test_pad(mode: str, pads: list[int]) -> None:
    x = rand(2, 3, 5, 7)
    consts = {"p": np.array(pads, np.int64)}
    inputs = ["x", "p"]
    if mode == "constant":
        consts["v"] = np.array(1.5, np.float32)
        inputs.append("v")
    opset = 19 if mode == "wrap" else 17
    run("Pad", {"x": x}, consts, inputs=inputs, opset=opset, mode=mode, interpret=pads == PADS[0])


def test_pad_runtime_value_negative_pads_and_axes() -> None:
    x = rand(3, 9, 11)
    run(
        "Pad",
        {"x": x, "v": np.array(-2.0, np.float32)},
        {"p": np.array([1, -2, 3, 0, -1, 2], np.int64)},
        inputs=["x", "p", "v"],
        interpret=True,
    )
    run(
        "Pad",
        {"x": ints(4, 6)},
        {"p": np.array([2, 3], np.int64), "a": np.array([-1], np.int64)},
        inputs=["x", "p", "", "a"],
        opset=18,
        mode="reflect",
        interpret=True,
    )
    run("Pad", {"x": rand(4, 6)}, opset=10, pads=[1, 2, 0, 3], value=7.0)
    run(
        "Pad",
        {"x": ints(4, 6, dtype=np.uint8)},
        {"p": np.array([0, 1, 2, 3], np.int64), "v": np.array(7, np.uint8)},
    )
    run(
        "Pad",
        {"x": rand(4, 5) > 0},
        {"p": np.array([1, 1, 1, 1], np.int64)},
        inputs=["x", "p"],
        mode="edge",
    )


# --------------------------------------------------------------------------- masks, generators
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -3, 40])
def test_trilu(upper: int, k) -> None:
    consts, inputs = None, ["x"]
    if k is not None:
        consts, inputs = {"k": np.array(k, np.int64)}, ["x", "k"]
    run("Trilu", {"x": rand(2, 5, 19)}, consts, inputs=inputs, upper=upper, interpret=k == 2)


def test_trilu_runtime_k_and_ints() -> None:
    run("Trilu", {"x": ints(3, 7, 4), "k": np.array(-1, np.int64)}, upper=0, interpret=True)


@pytest.mark.parametrize("level", ["O0", "O3"])
def test_shape_size_constant_of_shape_range(level: str) -> None:
    """At O0 these stay as kernels (static shapes make them constants); O3 folds them."""
    x = rand(3, 4)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], start=-1),
        helper.make_node("Shape", ["x"], ["s2"]),
        helper.make_node(
            "ConstantOfShape", ["s2"], ["c"], value=helper.make_tensor("v", 7, [1], [9])
        ),
        helper.make_node("Size", ["x"], ["n"]),
        helper.make_node("Range", ["z", "l", "d"], ["r"]),
        helper.make_node("Range", ["zf", "lf", "df"], ["rf"]),
    ]
    values = [
        ("z", 2, np.int64),
        ("l", 13, np.int64),
        ("d", 3, np.int64),
        ("zf", 0.5, np.float32),
        ("lf", -2, np.float32),
        ("df", -0.25, np.float32),
    ]
    inits = [numpy_helper.from_array(np.array(v, t), k) for k, v, t in values]
    vi = [helper.make_tensor_value_info("x", 1, x.shape)]
    outs = [onnx.ValueInfoProto(name=o) for o in ("c", "s", "n", "r", "rf")]
    model = onnx.shape_inference.infer_shapes(make_model(nodes, vi, outs, inits))
    program = check_native(model, {"x": x}, rtol=0, atol=0, interpret=True, level=level)
    calls = {c.op_type for c in program.calls}
    if level == "O0":
        assert {"Shape", "Size", "ConstantOfShape", "Range"} <= calls


# --------------------------------------------------------------------------- run-time parameters
I64_MAX = np.iinfo(np.int64).max


def with_output(
    op: str,
    feeds: dict[str, np.ndarray],
    out_shape: list[int] | tuple[int, ...],
    consts: dict[str, np.ndarray] | None = None,
    inputs: list[str] | None = None,
    opset: int = 18,
    **attrs,
) -> onnx.ModelProto:
    """A one-node model whose output shape is declared: ONNX's shape inference cannot
    derive it when bounds, pads or scales are graph inputs, but native targets need it."""
    consts = consts or {}
    names = inputs if inputs is not None else list(feeds) + list(consts)
    vi = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    dtype = helper.np_dtype_to_tensor_dtype(next(iter(feeds.values())).dtype)
    return make_model(
        [helper.make_node(op, names, ["y"], **attrs)],
        vi,
        [helper.make_tensor_value_info("y", dtype, [int(d) for d in out_shape])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()],
        opset=opset,
    )


def run_runtime(
    op: str,
    feeds: dict[str, np.ndarray],
    out_shape,
    consts=None,
    inputs=None,
    opset: int = 18,
    interpret: bool = False,
    tol: float = 0.0,
    **attrs,
) -> None:
    """Compare with onnxruntime, parameters fed at run time, and check the op's kernel ran."""
    model = with_output(op, feeds, out_shape, consts, inputs, opset, **attrs)
    program = check_native(model, feeds, rtol=tol, atol=tol, interpret=interpret)
    assert op in [c.op_type for c in program.calls]


def in_bounds(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the interpreter, which raises on any read or write outside a buffer (whatever
    the run-time values, a kernel must stay inside), and the JIT, which must agree with it;
    the outputs."""
    from tests.backends.native.helpers import interpret_program, lower_model
    from torsh_gen.backends.llvm.jit import JitProgram

    program = lower_model(model)
    outs = interpret_program(program, feeds)
    jit = JitProgram(program).run(feeds)
    for spec, out in zip(program.outputs, outs):
        np.testing.assert_allclose(jit[spec.name], out, rtol=1e-6, atol=1e-6)
    return outs


RUNTIME_SLICES = [  # starts, ends, axes (None: absent), steps (None: absent), fed at run time
    ([1, -4], [3, I64_MAX], [0, 2], None),
    ([-1], [-I64_MAX], [1], [-1]),
    ([5, 9, 100], [0, 1, -100], [0, 1, 2], [-2, -3, -4]),
    ([0, 0, 3], [4, 6, 4], None, None),
    ([1, 2], [1000, -1], [-2, -1], [2, 3]),
    ([-100, 0], [100, 2], [1, 0], [1, 1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", RUNTIME_SLICES)
@pytest.mark.parametrize("axes_at_run_time", [True, False])
def test_slice_runtime_bounds(starts, ends, axes, steps, axes_at_run_time: bool) -> None:
    x = rand(4, 6, 13)
    feeds = {"x": x, "s": np.array(starts, np.int64), "e": np.array(ends, np.int64)}
    consts, inputs = {}, ["x", "s", "e"]
    if axes is not None:
        (feeds if axes_at_run_time else consts)["a"] = np.array(axes, np.int64)
        inputs.append("a")
    if steps is not None:
        feeds["k"] = np.array(steps, np.int64)
        inputs += [""] * (axes is None) + ["k"]
    index = [slice(None)] * 3
    for s, e, a, k in zip(starts, ends, axes or range(len(starts)), steps or [1] * len(starts)):
        index[a] = slice(s, e, k)
    out = x[tuple(index)].shape
    run_runtime("Slice", feeds, out, consts, inputs, interpret=starts == [5, 9, 100])


def test_slice_runtime_int32_bounds_and_constant_steps() -> None:
    x = ints(5, 7, dtype=np.int32)
    feeds = {"x": x, "s": np.array([-2, 1], np.int32), "e": np.array([-6, 7], np.int32)}
    consts = {"a": np.array([0, 1], np.int32), "k": np.array([-1, 3], np.int32)}
    run_runtime("Slice", feeds, (4, 2), consts, ["x", "s", "e", "a", "k"], interpret=True)


def test_slice_runtime_inconsistent_values_stay_in_bounds() -> None:
    x = rand(4, 6, 13)
    model = with_output("Slice", {"x": x, "s": np.array([0]), "e": np.array([0])}, (4, 2, 13),
                        {"a": np.array([1])}, ["x", "s", "e", "a"])
    feeds = {"x": x, "s": np.array([100]), "e": np.array([200])}  # an empty slice, not 2 rows
    np.testing.assert_array_equal(in_bounds(model, feeds)[0], x[:, :2])  # the first rows
    big = np.iinfo(np.int64)
    model = with_output("Slice", {"x": x, "s": np.array([0, 0]), "e": np.array([0, 0]),
                                  "a": np.array([0, 0]), "k": np.array([0, 0])}, (3, 5, 13))
    for values in ([big.min, big.max], [0, 0], [-1, big.min], [7, -9]):
        v = np.array(values, np.int64)
        in_bounds(model, {"x": x, "s": v, "e": v[::-1].copy(), "a": v % 5 - 2, "k": v})


def test_slice_runtime_axes_declined() -> None:
    from tests.backends.native.helpers import lower_model
    from torsh_gen.errors import UnsupportedOpError

    feeds = {"x": rand(4, 6, 13), "s": np.array([1]), "e": np.array([3]), "a": np.array([0])}
    model = with_output("Slice", feeds, (2, 2, 13))
    with pytest.raises(UnsupportedOpError, match="1 run-time Slice axes cannot change 2 axes"):
        lower_model(model)


RUNTIME_PADS = [[0, 1, 2, 3, 0, 2, 1, 1], [0, 0, -1, 3, 0, 1, 2, -3], [1, 0, 0, 2, 1, 0, 3, 0]]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", RUNTIME_PADS)
def test_pad_runtime_pads(mode: str, pads: list[int]) -> None:
    x = rand(2, 3, 5, 7)
    feeds = {"x": x, "p": np.array(pads, np.int64)}
    inputs = ["x", "p"]
    if mode == "constant":
        feeds["v"] = np.array(-1.5, np.float32)
        inputs.append("v")
    before, after = np.array(pads[:4]), np.array(pads[4:])
    out = tuple(np.array(x.shape) + before + after)
    run_runtime("Pad", feeds, out, None, inputs, 19, interpret=pads == RUNTIME_PADS[1], mode=mode)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_runtime_axes(mode: str) -> None:
    x = ints(3, 4, 6, dtype=np.int32)
    feeds = {"x": x, "p": np.array([2, 1, 1, 1], np.int64), "a": np.array([-1, 0], np.int64)}
    run_runtime("Pad", feeds, (5, 4, 9), None, ["x", "p", "", "a"], 19, interpret=True, mode=mode)
    feeds["a"] = np.array([2, 1], np.int64)  # one length changes, the other axis only shifts
    feeds["p"] = np.array([1, -1, 2, 1], np.int64)
    run_runtime("Pad", feeds, (3, 4, 9), None, ["x", "p", "", "a"], 19, mode=mode)


def test_pad_runtime_inconsistent_values_stay_in_bounds() -> None:
    x = rand(3, 4, 5)
    big = np.iinfo(np.int64)
    modes = ["constant", "reflect", "edge", "wrap"]
    for mode, out in itertools.product(modes, [(6, 4, 9), (3, 4, 9)]):
        feeds = {"x": x, "p": np.zeros(4, np.int64), "a": np.zeros(2, np.int64)}
        model = with_output("Pad", feeds, out, None, ["x", "p", "", "a"], 19, mode=mode)
        for values in ([big.min, big.max, -9, 50], [0, 0, 0, 0], [-4, -4, -5, -5], [9, 9, 9, 9]):
            p = np.array(values, np.int64)
            in_bounds(model, {"x": x, "p": p, "a": np.array([values[0] % 7 - 3, 1], np.int64)})


def test_pad_runtime_axes_declined() -> None:
    from tests.backends.native.helpers import lower_model
    from torsh_gen.errors import UnsupportedOpError

    feeds = {"x": rand(3, 4), "p": np.array([1, 1], np.int64), "a": np.array([0], np.int64)}
    model = with_output("Pad", feeds, (5, 6), None, ["x", "p", "", "a"])
    with pytest.raises(UnsupportedOpError, match="1 run-time Pad axes cannot change 2 dims"):
        lower_model(model)
