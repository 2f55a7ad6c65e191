"""Before/after cases for the ``simplify`` pass: op lists, names and numerical equality."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.passes.irtext import build, check_pass, feeds, model, node, ops, run_ort, text
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.passes import run_passes

I64 = np.int64
BIG = np.iinfo(np.int64).max


def simplified(g, **dims):
    """The graph after ``simplify``, checked against the original with two batch sizes."""
    return check_pass(
        g, ["simplify"], [feeds(g, 0, **dims), feeds(g, 1, **{k: v + 3 for k, v in dims.items()})]
    )


# --------------------------------------------------------------------------- no-ops
def test_identity_in_the_middle_is_removed():
    g = build(
        [node("Relu", "x", "a"), node("Identity", "a", "b"), node("Neg", "b", "y")],
        ["x: float[batch,4]"],
        ["y: float[batch,4]"],
    )
    after = simplified(g, batch=2)
    assert ops(after) == ["Relu", "Neg"]
    assert after.nodes[1].inputs[0] is after.nodes[0].outputs[0]


def test_graph_output_of_removed_node_keeps_its_name():
    g = build(
        [node("Relu", "x", "a"), node("Identity", "a", "y"), node("Neg", "y", "z")],
        ["x: float[batch,4]"],
        ["y: float[batch,4]", "z: float[batch,4]"],
    )
    after = simplified(g, batch=2)
    assert ops(after) == ["Relu", "Neg"]
    assert [v.name for v in after.outputs] == ["y", "z"]
    assert after.nodes[0].outputs[0].name == "y"
    assert "%y: float[batch,4] = Relu(%x)" in text(after)


def test_identity_between_input_and_output_stays():
    g = build([node("Identity", "x", "y")], ["x: float[3]"], ["y: float[3]"])
    assert ops(simplified(g)) == ["Identity"]


@pytest.mark.parametrize("opset", [7, 12, 17])
def test_inference_dropout_is_removed_with_unused_mask(opset):
    outs = "d mask" if opset >= 10 else "d"
    g = build(
        [node("Dropout", "x", outs), node("Relu", "d", "y")],
        ["x: float[batch,5]"],
        ["y: float[batch,5]"],
        opset=opset,
    )
    assert ops(simplified(g, batch=2)) == ["Relu"]


def test_dropout_with_constant_false_training_mode_is_removed():
    g = build(
        [node("Dropout", "x r t", "d"), node("Relu", "d", "y")],
        ["x: float[4]"],
        ["y: float[4]"],
        {"r": np.array(0.3, np.float32), "t": np.array(False)},
    )
    assert ops(simplified(g)) == ["Relu"]


def test_dropout_whose_mask_is_read_stays():
    g = build(
        [node("Dropout", "x", "d mask"), node("Cast", "mask", "m", to=1), node("Add", "d m", "y")],
        ["x: float[4]"],
        ["y: float[4]"],
    )
    assert "Dropout" in ops(simplified(g))


def test_cast_to_same_dtype_is_removed():
    g = build(
        [node("Cast", "x", "c", to=1), node("Relu", "c", "y")],
        ["x: float[batch,3]"],
        ["y: float[batch,3]"],
    )
    assert ops(simplified(g, batch=2)) == ["Relu"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ((1, 2, 4), ["Relu"]),  # any shape kept exactly
        ((0, 8), ["Relu"]),  # 0 copies the dynamic batch dim
        ((0, -1), ["Relu"]),
        ((-1, 8), ["Relu"]),
        ((0, 2, 4), ["Reshape", "Relu"]),
    ],
)
def test_reshape_that_keeps_the_shape_is_removed(target, expected):
    shape = "[batch,8]" if target[0] in (0, -1) else "[1,2,4]"
    g = build(
        [node("Reshape", "x s", "r"), node("Relu", "r", "y")],
        [f"x: float{shape}"],
        ["y: float"],
        {"s": np.array(target, I64)},
    )
    assert ops(simplified(g, batch=2)) == expected


def test_flatten_expand_squeeze_unsqueeze_noops_are_removed():
    g = build(
        [
            node("Flatten", "x", "f", axis=1),
            node("Expand", "f e", "e1"),
            node("Unsqueeze", "e1 ax", "u"),
            node("Squeeze", "u ax", "s"),
            node("Relu", "s", "y"),
        ],
        ["x: float[batch,6]"],
        ["y: float[batch,6]"],
        {"e": np.array([1, 6], I64), "ax": np.array([1], I64)},
    )
    assert ops(simplified(g, batch=2)) == ["Relu"]


def test_expand_that_broadcasts_stays():
    g = build(
        [node("Expand", "x e", "y")],
        ["x: float[1,6]"],
        ["y: float[3,6]"],
        {"e": np.array([3, 1], I64)},
    )
    assert ops(simplified(g)) == ["Expand"]


def test_identity_transpose_pad_slice_concat_are_removed():
    g = build(
        [
            node("Transpose", "x", "t", perm=[0, 1, 2]),
            node("Pad", "t pads", "p"),
            node("Slice", "p st en ax", "s"),
            node("Slice", "s st2 en2", "s2"),
            node("Concat", "s2", "c", axis=1),
            node("Relu", "c", "y"),
        ],
        ["x: float[batch,3,5]"],
        ["y: float[batch,3,5]"],
        {
            "pads": np.zeros(6, I64),
            "st": np.array([0, -5], I64),
            "en": np.array([BIG, 5], I64),
            "ax": np.array([1, 2], I64),
            "st2": np.array([0], I64),
            "en2": np.array([BIG], I64),
        },
    )
    assert ops(simplified(g, batch=2)) == ["Relu"]


def test_slice_that_drops_elements_stays():
    g = build(
        [node("Slice", "x st en", "y")],
        ["x: float[4,5]"],
        ["y: float[4,4]"],
        {"st": np.array([0, 0], I64), "en": np.array([BIG, 4], I64)},
    )
    assert ops(simplified(g)) == ["Slice"]


def test_default_perm_transpose_of_a_vector_is_removed():
    g = build(
        [node("Transpose", "x", "t"), node("Relu", "t", "y")], ["x: float[7]"], ["y: float[7]"]
    )
    assert ops(simplified(g)) == ["Relu"]


# --------------------------------------------------------------------------- merges
def test_inverse_transposes_disappear():
    g = build(
        [
            node("Transpose", "x", "a", perm=[0, 2, 3, 1]),
            node("Transpose", "a", "b", perm=[0, 3, 1, 2]),
            node("Relu", "b", "y"),
        ],
        ["x: float[batch,3,4,5]"],
        ["y: float[batch,3,4,5]"],
    )
    assert ops(simplified(g, batch=1)) == ["Relu"]


def test_transpose_pair_becomes_one():
    g = build(
        [node("Transpose", "x", "a", perm=[1, 0, 2]), node("Transpose", "a", "y", perm=[0, 2, 1])],
        ["x: float[2,3,4]"],
        ["y: float[3,4,2]"],
    )
    after = simplified(g)
    assert ops(after) == ["Transpose"]
    assert after.nodes[0].attr("perm") == [1, 2, 0]
    assert after.nodes[0].inputs[0].name == "x"
    assert after.outputs[0].name == "y"


def test_transpose_shared_by_two_readers_is_kept_for_the_other():
    g = build(
        [
            node("Transpose", "x", "a", perm=[1, 0]),
            node("Transpose", "a", "b", perm=[1, 0]),
            node("Add", "a a", "c"),
            node("Relu", "b", "y"),
        ],
        ["x: float[3,3]"],
        ["y: float[3,3]", "c: float[3,3]"],
    )
    assert ops(simplified(g)) == ["Transpose", "Add", "Relu"]


def test_reshape_chains_merge():
    g = build(
        [
            node("Flatten", "x", "f", axis=1),
            node("Reshape", "f s1", "r1"),
            node("Reshape", "r1 s2", "r2"),
            node("Relu", "r2", "y"),
        ],
        ["x: float[batch,3,4,5]"],
        ["y: float[batch,12,5]"],
        {"s1": np.array([0, 60], I64), "s2": np.array([0, 12, 5], I64)},
    )
    after = simplified(g, batch=2)
    assert ops(after) == ["Reshape", "Relu"]
    assert after.nodes[0].inputs[0].name == "x"


def test_reshape_of_squeeze_merges_and_resolves_static_zero():
    g = build(
        [node("Squeeze", "x ax", "s"), node("Reshape", "s shp", "y")],
        ["x: float[2,1,6]"],
        ["y: float[2,3,2]"],
        {"ax": np.array([1], I64), "shp": np.array([0, 3, 2], I64)},
    )
    after = simplified(g)
    assert ops(after) == ["Reshape"]
    assert after.nodes[0].inputs[1].const.tolist() == [2, 3, 2]


def test_reshape_with_zero_on_unknown_intermediate_dim_stays_unmerged():
    g = build(
        [
            node("Transpose", "x", "t", perm=[1, 0]),
            node("Flatten", "t", "f", axis=1),
            node("Reshape", "f shp", "y"),
        ],
        ["x: float[4,batch]"],
        ["y: float"],
        {"shp": np.array([0, 2, 2], I64)},
    )
    assert ops(simplified(g, batch=3)) == ["Transpose", "Reshape"]


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ((1, 11, 1), []),  # float32 -> float64 -> float32: exact round trip
        ((1, 10, 1), ["Cast", "Cast"]),  # through float16 loses precision
        ((1, 11, 10), ["Cast"]),  # float32 -> float64 -> float16 == float32 -> float16
    ],
)
def test_cast_chains(chain, expected):
    src, mid, dst = chain
    names = {1: "float", 10: "float16", 11: "double"}
    g = build(
        [node("Cast", "x", "a", to=mid), node("Cast", "a", "b", to=dst), node("Neg", "b", "y")],
        [f"x: {names[src]}[3,4]"],
        [f"y: {names[dst]}[3,4]"],
    )
    assert ops(simplified(g)) == expected + ["Neg"]


def test_int_cast_through_wider_int_merges():
    g = build(
        [node("Cast", "x", "a", to=7), node("Cast", "a", "y", to=1)],
        ["x: int32[5]"],
        ["y: float[5]"],
    )
    after = simplified(g)
    assert ops(after) == ["Cast"]
    assert after.nodes[0].inputs[0].name == "x"


@pytest.mark.parametrize("order", ["unsqueeze_first", "squeeze_first"])
def test_squeeze_unsqueeze_inverses_cancel(order):
    first, second = (
        ("Unsqueeze", "Squeeze") if order == "unsqueeze_first" else ("Squeeze", "Unsqueeze")
    )
    shape = "[batch,5]" if order == "unsqueeze_first" else "[batch,1,5]"
    g = build(
        [node(first, "x ax", "a"), node(second, "a ax2", "b"), node("Relu", "b", "y")],
        [f"x: float{shape}"],
        [f"y: float{shape}"],
        {"ax": np.array([1], I64), "ax2": np.array([-2], I64)},
    )
    assert ops(simplified(g, batch=2)) == ["Relu"]


def test_squeeze_after_unsqueeze_on_other_axes_stays():
    g = build(
        [node("Unsqueeze", "x ax", "a"), node("Squeeze", "a ax2", "y")],
        ["x: float[1,5]"],
        ["y: float[1,5]"],
        {"ax": np.array([1], I64), "ax2": np.array([0], I64)},
    )
    assert ops(simplified(g)) == ["Unsqueeze", "Squeeze"]


# --------------------------------------------------------------------------- shape chains
def _split_heads(extra=()):
    """Reshape(x, Concat(dim0, dim1 of x, [4, 16])) as exported by torch for ``view``."""
    return [
        node("Shape", "x", "s"),
        node("Gather", "s i0", "b", axis=0),
        node("Gather", "s i1", "q", axis=0),
        node("Unsqueeze", "b zero", "b1"),
        node("Unsqueeze", "q zero", "q1"),
        node("Concat", "b1 q1 heads", "shape", axis=0),
        node("Reshape", "x shape", "h"),
        node("Transpose", "h", "y", perm=[0, 2, 1, 3]),
        *extra,
    ]


def test_shape_gather_concat_reshape_becomes_constant_and_stays_dynamic():
    inits = {
        "i0": np.array(0, I64),
        "i1": np.array(1, I64),
        "zero": np.array([0], I64),
        "heads": np.array([4, 16], I64),
    }
    g = build(_split_heads(), ["x: float[batch,seq,64]"], ["y: float[batch,4,seq,16]"], inits)
    after = check_pass(g, ["simplify"], [feeds(g, 0, batch=1, seq=7), feeds(g, 1, batch=3, seq=5)])
    assert ops(after) == ["Reshape", "Transpose"]
    assert after.nodes[0].inputs[1].const.tolist() == [0, 0, 4, 16]
    np.testing.assert_allclose(run_ort(after, feeds(g, 2, batch=2, seq=9))[0].shape, (2, 4, 9, 16))


def test_shape_slice_piece_and_other_tensor_with_same_symbol():
    # merge heads back: Reshape(h, Concat(Shape(x, 0, 2), [64])) where x and h share batch/seq
    g = build(
        [
            node("Reshape", "x split", "h"),
            node("Shape", "x", "s", start=0, end=2),
            node("Concat", "s dim", "shape", axis=0),
            node("Reshape", "h shape", "y"),
        ],
        ["x: float[batch,seq,64]"],
        ["y: float[batch,seq,64]"],
        {"split": np.array([0, 0, 4, 16], I64), "dim": np.array([64], I64)},
    )
    after = check_pass(g, ["simplify"], [feeds(g, 0, batch=1, seq=3), feeds(g, 1, batch=4, seq=2)])
    # both reshapes merge into one that keeps x's shape; it stays only because x is the
    # graph input and y the graph output, which must remain two names
    assert ops(after) == ["Reshape"]
    assert after.nodes[0].inputs[0].name == "x"
    assert after.nodes[0].inputs[1].const.tolist() == [0, 0, 64]


def test_shape_chain_with_unrelated_dim_stays():
    g = build(
        [
            node("Shape", "x", "s"),
            node("Gather", "s i1", "q", axis=0),
            node("Unsqueeze", "q zero", "q1"),
            node("Concat", "q1 m1", "shape", axis=0),
            node("Reshape", "x shape", "y"),
        ],
        ["x: float[batch,seq]"],
        ["y: float"],
        {"i1": np.array(1, I64), "zero": np.array([0], I64), "m1": np.array([-1], I64)},
    )
    after = simplified(g, batch=2, seq=3)
    assert "Reshape" in ops(after) and "Concat" in ops(after)


# --------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize(
    ("op", "const", "const_first"),
    [
        ("Mul", 1.0, False),
        ("Mul", 1.0, True),
        ("Add", 0.0, True),
        ("Sub", 0.0, False),
        ("Div", 1.0, False),
        ("Pow", 1.0, False),
    ],
)
def test_arithmetic_with_neutral_constant_is_removed(op, const, const_first):
    ins = "c x" if const_first else "x c"
    g = build(
        [node(op, ins, "a"), node("Relu", "a", "y")],
        ["x: float[batch,3]"],
        ["y: float[batch,3]"],
        {"c": np.full((1, 3), const, np.float32)},
    )
    assert ops(simplified(g, batch=2)) == ["Relu"]


@pytest.mark.parametrize(
    ("op", "ins", "const"),
    [
        ("Sub", "c x", np.zeros(3, np.float32)),  # 0 - x
        ("Div", "c x", np.ones(3, np.float32)),  # 1 / x
        ("Add", "x c", np.zeros((2, 3), np.float32)),  # broadcasts x to more rows
        ("Mul", "x c", np.array([1, 2, 1], np.float32)),
    ],
)
def test_arithmetic_that_changes_values_or_shapes_stays(op, ins, const):
    g = build([node(op, ins, "y")], ["x: float[1,3]"], ["y: float"], {"c": const})
    assert ops(simplified(g)) == [op]


def test_overridable_input_is_not_a_constant():
    m = model(
        [node("Mul", "x c", "y")],
        ["x: float[3]", "c: float[1]"],
        ["y: float[3]"],
        {"c": np.ones(1, np.float32)},
    )
    assert ops(simplified(load_onnx(m))) == ["Mul"]


def test_integer_multiply_by_one_is_removed():
    g = build(
        [node("Mul", "x c", "a"), node("Neg", "a", "y")],
        ["x: int64[4]"],
        ["y: int64[4]"],
        {"c": np.array(1, I64)},
    )
    assert ops(simplified(g)) == ["Neg"]


# --------------------------------------------------------------------------- subgraphs, fixed point
def test_rewrites_inside_if_branches():
    then_g = helper.make_graph(
        [node("Identity", "x", "t0"), node("Relu", "t0", "t1")],
        "then",
        [],
        [helper.make_tensor_value_info("t1", 1, [3])],
    )
    else_g = helper.make_graph(
        [node("Transpose", "x", "e0", perm=[0]), node("Neg", "e0", "e1")],
        "else",
        [],
        [helper.make_tensor_value_info("e1", 1, [3])],
    )
    g = build(
        [node("If", "cond", "y", then_branch=then_g, else_branch=else_g)],
        ["cond: bool[]", "x: float[3]"],
        ["y: float[3]"],
    )
    after = check_pass(
        g,
        ["simplify"],
        [
            {"cond": np.array(True), "x": np.arange(3, dtype=np.float32) - 1},
            {"cond": np.array(False), "x": np.ones(3, np.float32)},
        ],
    )
    branches = {k: [n.op_type for n in a.value.nodes] for k, a in after.nodes[0].attrs.items()}
    assert branches == {"then_branch": ["Relu"], "else_branch": ["Neg"]}


def test_chain_simplifies_to_a_fixed_point_and_reports():
    g = build(
        [
            node("Cast", "x", "c0", to=11),
            node("Cast", "c0", "c1", to=1),
            node("Transpose", "c1", "t0", perm=[1, 0]),
            node("Identity", "t0", "i0"),
            node("Transpose", "i0", "t1", perm=[1, 0]),
            node("Mul", "t1 one", "m"),
            node("Reshape", "m s", "r"),
            node("Relu", "r", "y"),
        ],
        ["x: float[batch,4]"],
        ["y: float[batch,4]"],
        {"one": np.ones(1, np.float32), "s": np.array([-1, 4], I64)},
    )
    after = simplified(g, batch=2)
    assert ops(after) == ["Relu"]
    reports = run_passes(g, ["simplify"], check=True)
    assert reports[0].changed and reports[0].notes
    assert not run_passes(g, ["simplify"], check=True)[0].changed


def test_constant_nodes_count_as_constants():
    shape = helper.make_tensor("s", 7, [2], [0, -1])
    g = build(
        [
            node("Constant", "", "s", value=shape),
            node("Constant", "", "one", value_float=1.0),
            node("Reshape", "x s", "r"),
            node("Mul", "r one", "m"),
            node("Relu", "m", "y"),
        ],
        ["x: float[batch,6]"],
        ["y: float[batch,6]"],
    )
    assert ops(simplified(g, batch=2)) == ["Relu"]


def test_static_dims_of_a_dynamic_shape_become_constants_and_feed_reshape_chains():
    # torch's view(b, t, h, d // h): the head size is computed from the static last dim
    g = build(
        [
            node("Shape", "x", "s"),
            node("Gather", "s i0", "b", axis=0),
            node("Gather", "s i2", "d", axis=0),
            node("Div", "d heads", "hd"),
            node("Unsqueeze", "b zero", "b1"),
            node("Unsqueeze", "hd zero", "hd1"),
            node("Concat", "b1 m1 h1 hd1", "shape", axis=0),
            node("Reshape", "x shape", "y"),
            node("Cast", "d", "df", to=1),
            node("Mul", "y df", "z"),
        ],
        ["x: float[batch,seq,64]"],
        ["z: float[batch,seq,4,16]"],
        {
            "i0": np.array(0, I64),
            "i2": np.array(2, I64),
            "heads": np.array(4, I64),
            "zero": np.array([0], I64),
            "m1": np.array([-1], I64),
            "h1": np.array([4], I64),
        },
    )
    after = check_pass(g, ["simplify"], [feeds(g, 0, batch=1, seq=3), feeds(g, 1, batch=2, seq=5)])
    assert ops(after) == ["Reshape", "Cast", "Mul"]  # the Div only fed the shape: dropped
    assert after.nodes[0].inputs[1].const.tolist() == [0, -1, 4, 16]
    assert after.nodes[1].inputs[0].const.tolist() == 64


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python")
def test_torch_exported_attention_loses_its_shape_arithmetic():
    torch = pytest.importorskip("torch")
    import io

    class Attention(torch.nn.Module):
        def __init__(self, d: int = 32, h: int = 4) -> None:
            super().__init__()
            self.h, self.qkv, self.o = h, torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = (
                z.view(b, t, self.h, d // self.h).transpose(1, 2)
                for z in self.qkv(x).split(d, dim=-1)
            )
            a = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
            return self.o((a @ v).transpose(1, 2).reshape(b, t, d))

    torch.manual_seed(0)
    buf = io.BytesIO()
    axes = {0: "batch", 1: "seq"}
    torch.onnx.export(
        Attention().eval(),
        (torch.randn(2, 5, 32),),
        buf,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": axes, "y": axes},
        opset_version=17,
        dynamo=False,
    )
    g = load_onnx(buf.getvalue())
    passes = ["fold_constants", "simplify", "eliminate_dead_code"]
    after = check_pass(
        g, passes, [feeds(g, 0, batch=1, seq=7), feeds(g, 1, batch=3, seq=2)], rtol=1e-5, atol=1e-6
    )
    assert not {"Shape", "Gather", "Concat", "Unsqueeze"} & set(ops(after))
    assert all(
        n.outputs[0].type.shape[:1] == ("batch",) for n in after.nodes if n.op_type == "Reshape"
    )
    x = feeds(g, 2, batch=2, seq=6)
    np.testing.assert_allclose(run_ort(after, x)[0], run_ort(g, x)[0], rtol=1e-5, atol=1e-6)
