"""NHWC stays the model's layout at the boundary; inside, no Transpose pairs survive O2.

The frontend feeds conv-like ops NCHW and keeps elementwise chains in whatever layout
their inputs have, so a Transpose is left only where the layout must change: at the
graph's image inputs and at the model's own TRANSPOSE (and adjoint BATCH_MATMUL) ops.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.frontends.tflite.helpers import ALL_MODELS, fixture, litert_run, random_feeds

pytest.importorskip("ai_edge_litert")

from torsh_gen.frontends.tflite import load_tflite, read_tflite  # noqa: E402
from torsh_gen.ir.verify import verify  # noqa: E402
from torsh_gen.ops.execute import run_graph  # noqa: E402
from torsh_gen.passes.manager import run_passes  # noqa: E402
from torsh_gen.passes.pipelines import pipeline  # noqa: E402


def _allowed_transposes(name: str) -> int:
    """Rank-4 graph inputs and outputs, the model's own TRANSPOSE and adjoint BATCH_MATMUL ops."""
    model = read_tflite(fixture(name))
    boundary = sum(model.tensors[i].rank == 4 for i in model.inputs + model.outputs)
    own = sum(op.opcode == "TRANSPOSE" for op in model.operators)
    adjoint = sum(
        op.opcode == "BATCH_MATMUL" and (op.options.adjX or op.options.adjY)
        for op in model.operators
    )
    return boundary + own + adjoint


@pytest.mark.parametrize("name", ALL_MODELS)
def test_no_transpose_pairs_after_o2(name):
    graph = load_tflite(fixture(name))
    run_passes(graph, pipeline("O2"))
    verify(graph)
    transposes = [n for n in graph.nodes if n.op_type == "Transpose"]
    for n in transposes:
        src = n.inputs[0].producer
        assert src is None or src.op_type != "Transpose", f"{name}: Transpose pair at {n.name}"
    assert len(transposes) <= _allowed_transposes(name)


def test_cnn_keeps_nchw_inside():
    """The float CNN: one Transpose at the image input and the model's TRANSPOSE op only."""
    graph = load_tflite(fixture("mobilenet_float"))
    run_passes(graph, pipeline("O2"))
    transposes = [n for n in graph.nodes if n.op_type == "Transpose"]
    assert len(transposes) == 2
    assert transposes[0].inputs[0] is graph.inputs[0]
    assert graph.inputs[0].type.shape == (1, 24, 24, 3)


@pytest.mark.parametrize("name", ["mobilenet_float", "mobilenet_fp16", "transformer_block"])
def test_optimized_graph_still_matches_litert(name):
    graph = load_tflite(fixture(name))
    run_passes(graph, pipeline("O2"))
    feeds = random_feeds(fixture(name), seed=3)
    got = run_graph(graph, {v.name: x for v, x in zip(graph.inputs, feeds)})
    for g, w in zip(got, litert_run(fixture(name), feeds)):
        np.testing.assert_allclose(np.asarray(g), w, rtol=0, atol=1e-5)


def test_fp16_weights_fold_to_float32_constants():
    graph = load_tflite(fixture("mobilenet_fp16"))
    casts = sum(n.op_type == "Cast" for n in graph.nodes)
    assert casts >= 10  # one per float16 weight, as imported
    run_passes(graph, pipeline("O2"))
    assert not any(n.op_type == "Cast" for n in graph.nodes)
