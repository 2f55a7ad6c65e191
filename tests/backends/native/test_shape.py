"""Data-movement ops through the kernel IR, the JIT and the interpreter, against onnxruntime.

Every case feeds the moved tensor as a graph input so that constant folding leaves the op
in place, and checks that the lowered program really calls the op's kernel.
"""

from __future__ import annotations

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
