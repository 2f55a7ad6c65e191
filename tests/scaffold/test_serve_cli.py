"""``scaffold serve`` without servers: bad input, names, determinism, escaping, formatting."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import black
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import EXAMPLE, make_model, tensor_info
from tests.scaffold import serve_support as sup
from torsh_gen.cli.main import main
from torsh_gen.errors import InputError
from torsh_gen.scaffold.serve import PINS, batch_dim, generate_service, service_name
from torsh_gen.scaffold.serve_proto import json_name, proto_fields

BLACK_MODE = black.Mode(line_length=100, target_versions={black.TargetVersion.PY311})

pytest.importorskip("grpc_tools")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_cli_writes_a_project_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "svc"
    code, stdout, err = cli(
        capsys,
        "scaffold",
        "serve",
        str(EXAMPLE),
        "--rest",
        "--engine",
        "onnxruntime",
        "-o",
        str(out),
    )
    assert code == 0, err
    assert (
        "tiny_cnn" in stdout
        and (out / "tiny_cnn" / "model.onnx").read_bytes() == EXAMPLE.read_bytes()
    )
    before = _files(out)
    code, _, err = cli(capsys, "scaffold", "serve", str(EXAMPLE), "--rest", "-o", str(out))
    assert code == 2 and "already exists" in err and "--force" in err and "Traceback" not in err
    assert _files(out) == before  # untouched
    code, _, err = cli(
        capsys,
        "scaffold",
        "serve",
        str(EXAMPLE),
        "--grpc",
        "-o",
        str(out),
        "--force",
        "--name",
        "svc",
    )
    assert code == 0, err
    assert (out / "svc" / "proto" / "svc_pb2_grpc.py").is_file() and not (out / "tiny_cnn").exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers  # no temporary folders left
    umask = os.umask(0)
    os.umask(umask)
    for folder in (out, out / "svc" / "artifact"):  # not private like a mkdtemp folder
        assert (folder.stat().st_mode & 0o777) == 0o777 & ~umask, folder


@pytest.mark.parametrize(
    "args, words",
    [
        (["--rest", "--grpc"], "exactly one of --rest or --grpc"),
        ([], "exactly one of --rest or --grpc"),
        (["--rest", "--name", "1abc"], "not usable as a package name"),
        (["--rest", "--name", "My-Model"], "not usable as a package name"),
        (["--rest", "--name", 'a"; import os'], "not usable as a package name"),
        (["--rest", "--name", "class"], "Python keyword"),
        (["--rest", "--name", "tests"], "would shadow"),
        (["--rest", "--name", "json"], "would shadow"),
    ],
)
def test_bad_arguments_fail_with_one_line(tmp_path, capsys, args, words):
    out = tmp_path / "svc"
    code, _, err = cli(capsys, "scaffold", "serve", str(EXAMPLE), "-o", str(out), *args)
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert not out.exists()


def test_missing_model_and_unservable_models(tmp_path, capsys):
    code, _, err = cli(
        capsys,
        "scaffold",
        "serve",
        str(tmp_path / "none.onnx"),
        "--rest",
        "-o",
        str(tmp_path / "a"),
    )
    assert code == 2 and "no such file" in err
    strings = make_model(
        [helper.make_node("Identity", ["s"], ["t"])],
        [tensor_info("s", [2], TensorProto.STRING)],
        [tensor_info("t", [2], TensorProto.STRING)],
    )
    onnx.save(strings, tmp_path / "strings.onnx")
    code, _, err = cli(
        capsys,
        "scaffold",
        "serve",
        str(tmp_path / "strings.onnx"),
        "--grpc",
        "-o",
        str(tmp_path / "b"),
    )
    assert code == 2 and "dtypes a service cannot carry" in err and "'s'" in err
    assert not (tmp_path / "b").exists()


def test_names_and_batch_dim():
    assert service_name(None, "My Model-v2.onnx") == "my_model_v2"
    assert service_name(None, "123.onnx") == "model_123"
    assert service_name(None, "class.onnx") == "class_"
    assert service_name(None, "json.onnx") == "json_model"  # never shadow the stdlib
    assert service_name(None, "grpc.onnx") == "grpc_model"
    with pytest.raises(InputError):
        service_name("onnx", "x.onnx")
    from torsh_gen.scaffold.common import TensorSpec

    x = TensorSpec("x", "x", "float32", ("n", 3))
    assert batch_dim([x], [TensorSpec("y", "y", "float32", ("n",))]) == "n"
    assert batch_dim([x], [TensorSpec("y", "y", "float32", ("m",))]) is None
    assert batch_dim([x], [TensorSpec("y", "y", "float32", None)]) is None
    assert (
        batch_dim(
            [TensorSpec("x", "x", "float32", (1, 3))], [TensorSpec("y", "y", "float32", (1,))]
        )
        is None
    )


def test_proto_field_names_are_unique_safe_identifiers():
    from torsh_gen.scaffold.common import TensorSpec

    names = ["a_b", "aB", "a__b", "ab_", "message", "Tensor", "x.1", "x_1", "x1", "", "9", "é"]
    fields = proto_fields([TensorSpec(n, "i", "float32", ()) for n in names])
    assert len(set(fields)) == len(fields) == len(names)
    assert len({json_name(f).lower() for f in fields}) == len(fields)
    for f in fields:
        assert f.isidentifier() and f.isascii() and f == f.lower() and f[0].isalpha()
        assert f not in {"message", "tensor"}


def test_output_is_deterministic(tmp_path):
    from torsh_gen.tools.serve_model import serve_model

    for kind in ("rest", "grpc"):
        a = generate_service(serve_model(EXAMPLE), tmp_path / f"{kind}1", kind=kind)
        b = generate_service(serve_model(EXAMPLE), tmp_path / f"{kind}2", kind=kind)
        assert a.files == b.files
        assert _files(tmp_path / f"{kind}1") == _files(tmp_path / f"{kind}2")


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_hostile_names_never_become_code(tmp_path, kind):
    model_path = tmp_path / "evil.onnx"
    onnx.save(sup.hostile_model(), model_path)
    out = tmp_path / "svc"
    sup.generate(model_path, out, kind, "onnxruntime", warm=False)
    for path in sorted(out.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)  # valid Python
        if "_pb2" not in path.name:
            assert black.format_str(text, mode=BLACK_MODE) == text, f"{path} is not black-formatted"
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"__import__", "print", "eval", "exec"}, path
        assert text.isascii(), path
    for path in [out / "README.md", *out.rglob("*.proto")]:
        for line in path.read_text().splitlines():  # a raw newline in a name would start a line
            assert not line.startswith(("__import__", '"""', ")")), line
            if line.lstrip().startswith("Tensor "):
                assert re.fullmatch(r"  Tensor [a-z][a-z0-9_]* = \d+;", line), line
    readme = (out / "README.md").read_text()
    assert "| `class` |" in readme  # the model name, in a table cell


def test_pins_match_the_tested_environment():
    """The generated pyproject pins what these tests run with; gRPC stubs need it exactly."""
    from importlib.metadata import version

    installed = {name: version(name) for name in PINS if _installed(name)}
    mismatched = {k: (v, PINS[k]) for k, v in installed.items() if v != PINS[k]}
    if mismatched:
        pytest.skip(
            f"installed versions differ from the generated pins (fine, but untested): {mismatched}"
        )


def _installed(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def test_a_hostile_file_name_stays_inside_docstrings(tmp_path):
    model_path = tmp_path / 'we"""ird\\.onnx'
    onnx.save(sup.hostile_model(), model_path)
    out = tmp_path / "svc"
    sup.generate(model_path, out, "rest", "onnxruntime", name="weird")
    init = ast.parse((out / "weird" / "__init__.py").read_text())
    assert [type(n).__name__ for n in init.body] == ["Expr", "Assign"]  # docstring, __version__
    assert 'we"""ird\\.onnx' in ast.get_docstring(init)
    assert 'we"""ird\\.onnx' in ast.get_docstring(
        ast.parse((out / "weird" / "signature.py").read_text())
    )


def test_grpc_pins_follow_the_installed_grpcio_tools(monkeypatch):
    import importlib.metadata

    from torsh_gen.scaffold.serve_proto import PROTO_PINS, proto_pins

    fake = {name: "9.9.9" for name in PROTO_PINS}
    monkeypatch.setattr(importlib.metadata, "version", lambda name: fake[name])
    assert proto_pins() == fake  # stubs compiled by another grpcio-tools need its runtime
    fake["grpcio-tools"] = PROTO_PINS["grpcio-tools"]
    assert proto_pins() == PROTO_PINS


def test_external_data_models_ship_as_one_file(tmp_path):
    import numpy as np
    import onnxruntime as ort
    from onnx import numpy_helper

    from torsh_gen.tools.serve_model import serve_model

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [tensor_info("x", ["n", 64])],
        [tensor_info("y", ["n", 64])],
        [w],
    )
    onnx.save(
        model,
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        location="ext.data",
        size_threshold=0,
    )
    served = serve_model(tmp_path / "ext.onnx")
    session = ort.InferenceSession(
        served.onnx, providers=["CPUExecutionProvider"]
    )  # no data file needed
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(
        session.run(None, {"x": x})[0], x @ np.arange(4096, dtype=np.float32).reshape(64, 64)
    )


def test_torsh_models_are_exported_for_onnxruntime(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from torsh_gen.tools.loading import load_model, save_model
    from torsh_gen.tools.serve_model import serve_model

    save_model(load_model(EXAMPLE), tmp_path / "tiny.torsh")
    served = serve_model(tmp_path / "tiny.torsh")
    assert served.source == "tiny.torsh"
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    ours = ort.InferenceSession(served.onnx, providers=["CPUExecutionProvider"]).run(None, {"image": x})
    want = sup.onnxruntime_outputs(EXAMPLE, {"image": x})["probs"]
    np.testing.assert_allclose(ours[0], want, rtol=1e-5, atol=1e-6)
