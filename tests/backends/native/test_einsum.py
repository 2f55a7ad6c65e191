"""Einsum through the native lowering, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from tests.backends.native.helpers import check_native, make_model, rand

CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)], (3, 5)),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], (2, 3, 5)),
    ("bhid,bhjd->bhij", [(1, 2, 3, 4), (1, 2, 5, 4)], (1, 2, 3, 5)),
    ("ij->ji", [(3, 4)], (4, 3)),
    ("ii->i", [(4, 4)], (4,)),
    ("ij,ij->", [(3, 4), (3, 4)], ()),
    ("i,j", [(3,), (4,)], (3, 4)),
    ("...ij,...jk", [(2, 3, 4), (2, 4, 2)], (2, 3, 2)),
    ("ij->", [(3, 4)], ()),
]


@pytest.mark.parametrize("eq,shapes,out", CASES, ids=[c[0] for c in CASES])
def test_einsum(eq: str, shapes: list, out: tuple) -> None:
    names = [f"x{k}" for k in range(len(shapes))]
    model = make_model([helper.make_node("Einsum", names, ["y"], equation=eq)],
                       [helper.make_tensor_value_info(n, TP.FLOAT, s) for n, s in zip(names, shapes)],
                       [helper.make_tensor_value_info("y", TP.FLOAT, out)], opset=12)
    program = check_native(model, {n: rand(*s, seed=k) for k, (n, s) in enumerate(zip(names, shapes))}, interpret=eq == "ij,jk->ik")
    assert [c.op_type for c in program.calls] == ["Einsum"]


@pytest.mark.parametrize("eq,shapes,out", [("->", [()], ()), (",i->i", [(), (4,)], (4,)), ("i,->", [(3,), ()], ())])
def test_einsum_with_scalar_operands(eq: str, shapes: list, out: tuple) -> None:
    """A rank-0 operand has the empty term."""
    names = [f"x{k}" for k in range(len(shapes))]
    model = make_model([helper.make_node("Einsum", names, ["y"], equation=eq)],
                       [helper.make_tensor_value_info(n, TP.DOUBLE, s) for n, s in zip(names, shapes)],
                       [helper.make_tensor_value_info("y", TP.DOUBLE, out)], opset=12)
    feeds = {n: rand(*s, seed=k, dtype=np.float64) for k, (n, s) in enumerate(zip(names, shapes))}
    check_native(model, feeds, interpret=True)


def test_einsum_term_that_does_not_match_the_rank_is_declined() -> None:
    from tests.backends.native.helpers import lower_model
    from torsh_gen.errors import UnsupportedOpError

    model = make_model([helper.make_node("Einsum", ["x"], ["y"], equation="ij->i")],
                       [helper.make_tensor_value_info("x", TP.FLOAT, (2, 3, 4))],
                       [helper.make_tensor_value_info("y", TP.FLOAT, (2,))], opset=12)
    with pytest.raises(UnsupportedOpError, match="does not match rank 3"):
        lower_model(model)
