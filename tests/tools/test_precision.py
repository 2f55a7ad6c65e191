"""``optimize --precision``: targets on the trained digits models, mixed budget, guard, CLI errors.

Accuracy and error are measured on the digits test split against the float32 model, in
onnxruntime (fp16) or the reference interpreter (bf16), and through the compiled CPU
artifact for every variant.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.cli.test_cli import cli
from torsh_gen.errors import InputError
from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model
from torsh_gen.tools.digits import accuracy, digits_model, digits_split
from torsh_gen.tools.precision import (
    PrecisionBudgetError,
    check_precision,
    convert_precision,
    output_errors,
    precision_model,
    run_feeds,
)

TARGET_REL = {"fp16": 1e-3, "bf16": 1e-2}


@pytest.fixture(scope="module")
def split():
    return digits_split()


@pytest.fixture(scope="module")
def digits(split):
    """Per kind: the float32 ONNX bytes and its test-split logits."""
    out = {}
    for kind in ("cnn", "mlp"):
        data = digits_model(kind).SerializeToString()
        ref, _ = run_feeds(load_onnx(data), [split.inputs("test")])
        out[kind] = (data, ref["logits"])
    return out


@pytest.fixture(scope="module")
def converted(digits, split):
    """(kind, precision) -> PrecisionResult measured on the test split."""
    feeds = [split.inputs("test")]
    return {
        (kind, p): convert_precision(load_onnx(digits[kind][0]), p, feeds=feeds, data="digits test split")
        for kind in ("cnn", "mlp")
        for p in ("fp16", "bf16")
    }


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_digits_targets_accuracy_and_error(converted, digits, split, kind, precision):
    result = converted[(kind, precision)]
    ref = digits[kind][1]
    # the converted ONNX file itself: onnxruntime runs fp16, the reference interpreter bf16
    out, engine = run_feeds(result.graph, [split.inputs("test")])
    assert engine.startswith("onnxruntime" if precision == "fp16" else "reference")
    # and the measurement the report uses: one rounding per node, emulated in onnxruntime
    emulated, _ = run_feeds(result.graph, [split.inputs("test")], emulate=True)
    for outputs in (out, emulated):
        assert accuracy(ref, split.y_test) - accuracy(outputs["logits"], split.y_test) <= 0.1
        err = output_errors(outputs, {"logits": ref})["logits"]
        assert 0 < err["max_rel"] <= TARGET_REL[precision]
        assert err["cosine"] > 0.99999
    assert result.max_rel_error == pytest.approx(err["max_rel"])
    assert result.size_after < 0.55 * result.size_before
    assert result.weight_bytes_after == result.weight_bytes_before // 2
    assert not result.kept  # nothing sensitive in these nets


def test_compiled_artifact_runs_fp16_bf16_and_mixed(converted, digits, split, tmp_path):
    """Every variant compiles with no reference-kernel node and meets the targets in the artifact.

    The artifact computes each 16-bit node in float32 and rounds once, as onnxruntime does;
    the two differ by output roundings (an fp16 ulp is ~5e-4 of a logit), never more.
    """
    ref = digits["cnn"][1]
    feeds = [split.inputs("test")]
    mixed = convert_precision(load_onnx(digits["cnn"][0]), "mixed", feeds=feeds, max_rel_error=1e-4)
    for name, result, target in (("fp16", converted[("cnn", "fp16")], 1e-3),
                                 ("bf16", converted[("cnn", "bf16")], 1e-2),
                                 ("mixed", mixed, 1e-3)):
        report = compile_model(to_onnx(result.graph), tmp_path / f"cnn_{name}")  # a Graph would be optimized in place
        assert report.reference_nodes == 0  # fp16/bf16 nodes run through the float32 fast paths
        out = load_artifact(tmp_path / f"cnn_{name}").run(**feeds[0])
        assert out["logits"].dtype == np.float32
        assert output_errors(out, {"logits": ref})["logits"]["max_rel"] <= target
        same_graph, _ = run_feeds(result.graph, feeds)
        assert output_errors(out, same_graph)["logits"]["max_rel"] <= target
        assert accuracy(ref, split.y_test) - accuracy(out["logits"], split.y_test) <= 0.1


def test_mixed_meets_its_budget_by_keeping_the_sensitive_nodes(digits, split):
    feeds = [split.inputs("test")]
    full = convert_precision(load_onnx(digits["cnn"][0]), "fp16", feeds=feeds)
    budget = full.max_rel_error * 0.6  # below the error of the last layer's fp16 rounding alone
    result = convert_precision(load_onnx(digits["cnn"][0]), "mixed", feeds=feeds, max_rel_error=budget)
    assert result.within_budget and result.max_rel_error <= budget
    over = [k for k in result.kept if k["reason"].startswith("over budget")]
    assert over and result.converted  # some nodes stay float32, the rest are converted
    assert "fc11" in {k["node"] for k in over}  # rounding the logits to fp16 alone is over budget
    assert {s["node"] for s in result.search} == set(result.converted) | {k["node"] for k in over}
    assert full.size_after < result.size_after < result.size_before
    # the search order is least sensitive first
    sens = [s["sensitivity"] for s in result.search]
    assert sens == sorted(sens)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_emulation_rounds_like_the_reference_interpreter(converted, split, precision):
    """The measurement engine: each 16-bit node computed in float32 and rounded once, in ORT."""
    from torsh_gen.ops.execute import run_graph

    graph = converted[("cnn", precision)].graph
    feeds = split.inputs("test", 64)
    emulated, engine = run_feeds(graph, [feeds], emulate=True)
    assert "emulated" in engine
    ref = run_graph(graph, feeds)[0]
    ulp = 2.0 ** -10 if precision == "fp16" else 2.0 ** -7
    # the same arithmetic up to summation order: differences of an ulp or so at the logits' scale
    assert np.max(np.abs(emulated["logits"] - ref)) <= ulp * np.max(np.abs(ref))
    assert np.mean(emulated["logits"] == ref) > 0.95
    assert converted[("cnn", precision)].engine == engine


def test_switchboard_predicts_the_real_conversion_of_any_subset(digits, split):
    """Switching a node's rounding on computes what converting exactly those nodes computes."""
    from torsh_gen.ir.types import DType
    from torsh_gen.passes.precision import convert_float_precision, name_nodes
    from torsh_gen.tools.precision_emulation import Switchboard

    base = load_onnx(digits["cnn"][0])
    name_nodes(base)
    probe = load_onnx(to_onnx(base).SerializeToString())
    candidates = convert_float_precision(probe, DType.BFLOAT16).converted
    board = Switchboard(base, candidates, DType.BFLOAT16)
    feeds = [split.inputs("test", 100)]
    rng = np.random.default_rng(0)
    for _ in range(3):
        lowered = {c for c in candidates if rng.random() < 0.5}
        real = load_onnx(to_onnx(base).SerializeToString())
        convert_float_precision(real, DType.BFLOAT16, keep_fp32=set(candidates) - lowered)
        expected, _ = run_feeds(real, feeds, emulate=True)
        got = board.run(lowered, feeds)
        # the same roundings; onnxruntime fuses the two graphs differently, so a value near a
        # rounding boundary may flip by one bf16 ulp (2^-8): allow that, at the logits' scale
        scale = np.abs(expected["logits"]).max()
        assert np.abs(got["logits"] - expected["logits"]).max() <= 2.0**-8 * scale
        ref = digits["cnn"][1][:100]
        err_board = output_errors(got, {"logits": ref})["logits"]["max_rel"]
        err_real = output_errors(expected, {"logits": ref})["logits"]["max_rel"]
        assert abs(err_board - err_real) <= 0.25 * err_real
    # all switches off: the float32 model (up to onnxruntime's float32 summation order)
    np.testing.assert_allclose(board.run(set(), feeds)["logits"], run_feeds(base, feeds)[0]["logits"], rtol=1e-5, atol=1e-5)


def test_mixed_with_a_loose_budget_converts_everything(digits, split):
    result = convert_precision(load_onnx(digits["mlp"][0]), "mixed", feeds=[split.inputs("test")], max_rel_error=0.05)
    assert not result.kept and not result.search and result.evaluations == 1


def tiny_encoder() -> onnx.ModelProto:
    """One attention + LayerNorm block (BERT-style shapes, random weights)."""
    r = np.random.default_rng(0)
    d, s = 32, 16

    def w(name, *shape):
        return numpy_helper.from_array((r.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["sc"], name="scores"),
        helper.make_node("Softmax", ["sc"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["ctx"], name="ctx"),
        helper.make_node("Add", ["ctx", "x"], ["res"], name="residual"),
        helper.make_node("LayerNormalization", ["res", "g", "b"], ["ln"], name="ln", axis=-1),
        helper.make_node("Erf", ["ln"], ["e"], name="erf"),
        helper.make_node("Mul", ["ln", "e"], ["y"], name="gate"),
    ]
    inits = [w("wq", d, d), w("wk", d, d), w("wv", d, d),
             numpy_helper.from_array(np.ones(d, np.float32), "g"), numpy_helper.from_array(np.zeros(d, np.float32), "b")]
    graph = helper.make_graph(nodes, "enc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, s, d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, s, d])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_encoder_keeps_softmax_and_layernorm_and_its_artifact_agrees(precision, tmp_path):
    data = tiny_encoder().SerializeToString()
    result = convert_precision(load_onnx(data), precision)
    kept = {k["node"]: k["reason"] for k in result.kept}
    assert set(kept) == {"softmax", "ln"} and all(r.startswith("sensitive op") for r in kept.values())
    assert result.outputs["y"]["cosine"] > 0.9999
    x = {"x": np.random.default_rng(1).standard_normal((1, 16, 32)).astype(np.float32)}
    ref, _ = run_feeds(load_onnx(data), [x])
    ours, _ = run_feeds(result.graph, [x])
    compile_model(result.graph, tmp_path / "enc")
    art = load_artifact(tmp_path / "enc").run(**x)
    # the artifact computes each fp16/bf16 node (or fused chain) in float32 and rounds once:
    # its error against float32 is that of the converted ONNX model, give or take roundings
    onnx_err, art_err = output_errors(ours, ref)["y"], output_errors(art, ref)["y"]
    assert art_err["max_rel"] <= 1.5 * onnx_err["max_rel"]
    assert art_err["cosine"] > 0.9999


def test_budget_guard_writes_nothing_unless_forced(tmp_path):
    src = tmp_path / "enc.onnx"
    onnx.save(tiny_encoder(), src)
    out = tmp_path / "enc_bf16.onnx"
    with pytest.raises(PrecisionBudgetError, match="nothing written"):
        precision_model(src, out, "bf16", max_rel_error=1e-7)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["enc.onnx"]
    result, _ = precision_model(src, out, "bf16", max_rel_error=1e-7, force=True)
    assert out.exists() and result.written and not result.within_budget
    types = {t.name: t.data_type for t in onnx.load(out).graph.initializer}
    assert types["g"] == TensorProto.FLOAT and TensorProto.BFLOAT16 in types.values()  # LayerNorm's stay


def test_check_precision_refuses_what_the_target_cannot_run():
    assert check_precision("fp16", "onnxruntime") == "fp16"
    assert check_precision("mixed", "cpu", "bf16") == "bf16"
    with pytest.raises(InputError, match="cannot run bf16"):
        check_precision("bf16", "onnxruntime")
    with pytest.raises(InputError, match="cannot run bf16"):
        check_precision("mixed", "onnxruntime", "bf16")
    with pytest.raises(InputError, match="unknown precision 'int3'"):
        check_precision("int3")


def test_model_without_float32_compute_is_refused(tmp_path):
    g = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "i",
                          [helper.make_tensor_value_info("x", TensorProto.INT32, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "int.onnx")
    with pytest.raises(InputError, match="no float32 computation"):
        precision_model(tmp_path / "int.onnx", tmp_path / "o.onnx", "fp16")


@pytest.fixture()
def cnn_file(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(digits_model("cnn"), path)
    return path


def test_cli_fp16_with_calibration_data_reports_and_writes(capsys, cnn_file, split, tmp_path):
    np.savez(tmp_path / "calib.npz", image=split.x_test[:64])
    out = tmp_path / "cnn16.onnx"
    code, stdout, err = cli(capsys, "optimize", str(cnn_file), "-o", str(out), "--precision", "fp16",
                            "--calib", str(tmp_path / "calib.npz"), "--max-rel-error", "1e-3", "-f", "json")
    assert code == 0, err
    data = json.loads(stdout)["precision"]
    assert data["within_budget"] and data["data"].endswith("(64 samples)")
    assert data["outputs"]["logits"]["max_rel"] <= 1e-3 and data["size_bytes"]["after"] < data["size_bytes"]["before"]
    assert onnx.load(out).graph.initializer[0].data_type == TensorProto.FLOAT16


def test_cli_table_lists_kept_nodes_and_why(capsys, tmp_path):
    src = tmp_path / "enc.onnx"
    onnx.save(tiny_encoder(), src)
    code, stdout, err = cli(capsys, "optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--precision", "fp16")
    assert code == 0, err
    assert "kept in float32" in stdout and "softmax" in stdout and "LayerNormalization" in stdout
    assert "error against float32" in stdout


def test_cli_guard_failure_is_one_line_and_exit_1(capsys, cnn_file, tmp_path):
    out = tmp_path / "o.onnx"
    code, _, err = cli(capsys, "optimize", str(cnn_file), "-o", str(out), "--precision", "bf16", "--max-rel-error", "1e-6")
    assert code == 1 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and "over --max-rel-error" in err and "--force" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precision", "fp8"], "unknown precision 'fp8'"),
        (["--precision", "bf16", "--target", "onnxruntime"], "cannot run bf16"),
        (["--precision", "mixed"], "needs a budget"),
        (["--precision", "fp16", "--max-rel-error", "-1"], "non-negative"),
        (["--precision", "mixed", "--mixed-type", "fp8", "--max-rel-error", "1e-3"], "unknown low-precision type"),
        (["--calib", "x.npz"], "only apply with --precision"),
        (["--precision", "fp16", "--custom-ops"], "drop --custom-ops"),
        (["--precision", "fp16", "--calib", "BAD"], "unknown input name(s) ['pixels']"),
        (["--precision", "fp16", "--calib", "NAN"], "NaN"),
        (["--precision", "fp16", "--calib", "MISSING"], "no such calibration data"),
    ],
)
def test_cli_bad_input_is_refused_before_any_work(capsys, cnn_file, tmp_path, args, message):
    np.savez(tmp_path / "bad.npz", pixels=np.zeros((4, 1, 8, 8), np.float32))
    nan = np.zeros((4, 1, 8, 8), np.float32)
    nan[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", image=nan)
    paths = {"BAD": tmp_path / "bad.npz", "NAN": tmp_path / "nan.npz", "MISSING": tmp_path / "none.npz"}
    args = [str(paths.get(a, a)) for a in args]
    out = tmp_path / "o.onnx"
    code, _, err = cli(capsys, "optimize", str(cnn_file), "-o", str(out), *args)
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_existing_optimize_options_still_work(capsys, cnn_file, tmp_path):
    code, stdout, err = cli(capsys, "optimize", str(cnn_file), "-o", str(tmp_path / "o.onnx"), "--check", "-f", "json")
    assert code == 0, err
    assert json.loads(stdout)["onnxruntime_check"]["match"] is True


def test_calib_folder_of_npy_files(capsys, cnn_file, split, tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"{i}.npy", split.x_test[i * 8 : (i + 1) * 8])
    code, stdout, err = cli(capsys, "optimize", str(cnn_file), "-o", str(tmp_path / "m.onnx"), "--precision", "mixed",
                            "--max-rel-error", "1e-2", "--calib", str(folder), "-f", "json")
    assert code == 0, err
    data = json.loads(stdout)["precision"]
    assert data["data"].endswith("(24 samples)") and data["within_budget"]
    assert Path(tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_hostile_names_stay_data_in_upcast_artifacts(precision, tmp_path, monkeypatch):
    """Node and value names carrying code reach the upcasting kernels' identifiers only sanitized."""
    from tests.backends.models import hostile_names

    monkeypatch.chdir(tmp_path)
    data = hostile_names().SerializeToString()
    result = convert_precision(load_onnx(data), precision)
    compile_model(to_onnx(result.graph), tmp_path / "art")
    assert "_f32" in (tmp_path / "art" / "model.py").read_text()  # the upcast path was taken
    x = {v.name: np.random.default_rng(0).standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
         for v in hostile_names().graph.input}
    ours = load_artifact(tmp_path / "art").run(**x)
    ref, _ = run_feeds(load_onnx(data), [x])
    errors = output_errors(ours, ref)
    assert all(e["max_rel"] <= TARGET_REL[precision] for e in errors.values())
    assert not list(tmp_path.rglob("PWNED"))
