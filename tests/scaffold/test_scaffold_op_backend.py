"""The CPU backend calls plugin kernels (``OpSpec.artifact_kernel``) with every attribute kind.

Runs in a subprocess, so the test ops never enter this process's registry.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN_KERNEL = '''
import numpy as np


def compute(a, b, *, k, axes, mode, table, scale):
    """Two outputs from every attribute kind: int, ints, string, tensor, float."""
    s = a + b if mode == "add" else a - b
    return (s * k * scale + table).astype(a.dtype), np.asarray(list(axes) + [k], dtype=np.int64)
'''

PLUGIN_SPEC = '''
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.registry import FLOAT, INT, INTS, STRING, TENSOR, OpSpec, op

from . import kern


@op("Mix", domain="test.plugin")
class Mix(OpSpec):
    attrs = {"k": INT(2), "axes": INTS([0]), "mode": STRING("add"), "table": TENSOR(), "scale": FLOAT(1.0)}
    artifact_kernel = "pk.kern:compute"

    def infer(self, ctx):
        t = ctx.input_type(0)
        return [t, TensorType(DType.INT64, (len(ctx.attrs.axes) + 1,))]

    def run(self, ctx, a, b):
        a_ = ctx.attrs
        return kern.compute(a, b, k=a_.k, axes=a_.axes, mode=a_.mode, table=a_.table, scale=a_.scale)


@op("NoKernel", domain="test.plugin")
class NoKernel(OpSpec):
    def infer(self, ctx):
        return [ctx.input_type(0)]

    def run(self, ctx, a):
        return a
'''

DRIVER = '''
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from onnx import TensorProto, helper, numpy_helper
import pk.spec  # registers the test ops
from torsh_gen.errors import UnsupportedOpError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model
from torsh_gen.tools.run import run_model

table = numpy_helper.from_array(np.arange(4, dtype=np.float32), "table")
nodes = [helper.make_node("Mix", ["a", "b"], ["o", "n"], domain="test.plugin", k=3, axes=[1, 0],
                          mode="sub", table=table),
         helper.make_node("Relu", ["o"], ["y"])]
vi = helper.make_tensor_value_info
graph = helper.make_graph(nodes, "g", [vi("a", TensorProto.FLOAT, [2, 4]), vi("b", TensorProto.FLOAT, [2, 4])],
                          [vi("y", TensorProto.FLOAT, [2, 4]), vi("n", TensorProto.INT64, [3])])
opsets = [helper.make_opsetid("", 17), helper.make_opsetid("test.plugin", 1)]
model = helper.make_model(graph, opset_imports=opsets)
model.ir_version = 8
rng = np.random.default_rng(0)
a, b = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)
want_y = np.maximum((a - b) * 3 + np.arange(4, dtype=np.float32), 0)
ref = run_model(load_onnx(model.SerializeToString()), {"a": a, "b": b})
np.testing.assert_allclose(ref["y"], want_y, rtol=1e-6)
compile_model(model, sys.argv[2])
src = open(sys.argv[2] + "/model.py").read()
assert "from pk.kern import compute as _p_compute" in src, src
assert 'o, n = _p_compute(a, b, axes=[1, 0], k=3, mode="sub", scale=1.0, table=self.w_table)' in src, src
art = load_artifact(sys.argv[2]).run(a=a, b=b)
np.testing.assert_allclose(art["y"], want_y, rtol=1e-6)
assert art["n"].tolist() == [1, 0, 3]

bad = helper.make_model(helper.make_graph([helper.make_node("NoKernel", ["a"], ["y"], domain="test.plugin")], "g",
                        [vi("a", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])]), opset_imports=opsets)
bad.ir_version = 8
try:
    compile_model(bad, sys.argv[2] + "_bad")
except UnsupportedOpError as e:
    assert "test.plugin::NoKernel (from pk.spec) cannot be compiled: its spec has no artifact_kernel" in str(e), e
else:
    raise AssertionError("compiling a plugin op without artifact_kernel must fail")
print("ok")
'''


def test_artifact_calls_plugin_kernel_with_every_attribute_kind(tmp_path: Path):
    pk = tmp_path / "lib" / "pk"
    pk.mkdir(parents=True)
    (pk / "__init__.py").write_text("")
    (pk / "kern.py").write_text(textwrap.dedent(PLUGIN_KERNEL))
    (pk / "spec.py").write_text(textwrap.dedent(PLUGIN_SPEC))
    r = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "lib"), str(tmp_path / "mixart")],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
