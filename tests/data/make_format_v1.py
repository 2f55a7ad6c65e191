"""How tests/data/format_v1.torsh was made (run once with format version 1; never regenerate).

The checked-in file pins format version 1: tests load it with every later torsh-gen, so
readers stay backward compatible. It holds examples/tiny_cnn.onnx plus an If node whose
branches read an outer-scope value, to cover nested graphs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from torsh_gen.frontends.onnx import load_onnx  # noqa: E402
from torsh_gen.ir.serialize import save_torsh  # noqa: E402

root = Path(__file__).resolve().parents[2]
model = onnx.load(root / "examples" / "tiny_cnn.onnx")
g = model.graph
g.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
then_b = helper.make_graph([helper.make_node("Identity", ["probs"], ["t_out"])], "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
else_b = helper.make_graph([helper.make_node("Neg", ["probs"], ["e_out"])], "else", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
g.node.append(helper.make_node("If", ["flag"], ["result"], name="choose", then_branch=then_b, else_branch=else_b))
del g.output[:]
g.output.append(helper.make_tensor_value_info("result", TensorProto.FLOAT, ["batch", 10]))
save_torsh(load_onnx(model), Path(__file__).with_name("format_v1.torsh"))
print("wrote format_v1.torsh")
