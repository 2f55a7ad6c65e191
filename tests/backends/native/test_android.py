"""The android-arm64 packaging: a library bionic can load (imports, DT_NEEDED, no symbol
versions), the JNI bridge against a JDK's jni.h, the Kotlin class and module layout, and
the library itself run under qemu (glibc standing in for bionic's libc.so)."""

from __future__ import annotations

import glob
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import make_model, ort_run, rand
from torsh_gen.backends.llvm.native_build import kotlin_string
from torsh_gen.backends.llvm.package_android import STUB_FUNCTIONS, jni_mangle, kotlin_names
from torsh_gen.tools.compile import compile_model

CROSS = shutil.which("aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64")
READELF = shutil.which("readelf") or shutil.which("aarch64-linux-gnu-readelf")
JNI_INCLUDES = sorted(glob.glob("/usr/lib/jvm/*/include/linux/jni_md.h"))
pytestmark = pytest.mark.skipif(
    CROSS is None or READELF is None or not JNI_INCLUDES,
    reason="needs aarch64-linux-gnu-gcc, readelf and a JDK's jni.h "
    "(make toolchains; apt install default-jdk-headless)",
)

NAME_A = 'in"put*/ \n\\ $x ${y}'
NAME_C = '*/ #include <stdio.h>\n"); System.exit(1); ("'

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "@P@.h"
/* run @P@ on in<i>.bin, write out<j>.bin (raw bytes), in the folder argv[2] */
static int io(const char *dir, const char *kind, int k, void *data, size_t n, int writing) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s%d.bin", dir, kind, k);
    FILE *f = fopen(path, writing ? "wb" : "rb");
    size_t done = f ? (writing ? fwrite(data, 1, n, f) : fread(data, 1, n, f)) : 0;
    if (f) fclose(f);
    return done == n ? 0 : 1;
}
int main(int argc, char **argv) {
    @P@_model *m = @P@_create(argc > 1 && argv[1][0] ? argv[1] : NULL, 2);
    if (!m) { fprintf(stderr, "%s\n", @P@_last_error(NULL)); return 1; }
    void *ins[8], *outs[8];
    for (int i = 0; i < @U@_NUM_INPUTS; i++) {
        ins[i] = malloc(@P@_input_info(i)->nbytes);
        if (io(argv[2], "in", i, ins[i], @P@_input_info(i)->nbytes, 0)) return 2;
    }
    for (int j = 0; j < @U@_NUM_OUTPUTS; j++) outs[j] = malloc(@P@_output_info(j)->nbytes);
    if (@P@_run(m, (const void *const *)ins, outs)) {
        fprintf(stderr, "%s\n", @P@_last_error(m));
        return 1;
    }
    for (int j = 0; j < @U@_NUM_OUTPUTS; j++)
        if (io(argv[2], "out", j, outs[j], @P@_output_info(j)->nbytes, 1)) return 3;
    @P@_destroy(m);
    return 0;
}
"""


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in [("W1", (16, 32)), ("b1", (32,)), ("W2", (32, 4)), ("b2", (4,))]
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "b2"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TP.FLOAT, (2, 16))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (2, 4))],
        inits,
    )


def _names_model() -> onnx.ModelProto:
    """Hostile names, a weight (embedded in the tests) and 65536 elements (the thread pool)."""
    w = numpy_helper.from_array(np.linspace(-2, 2, 1024, dtype=np.float32), "w")
    nodes = [
        helper.make_node("Mul", [NAME_A, "w"], ["t"]),
        helper.make_node("Tanh", ["t"], [NAME_C]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info(NAME_A, TP.FLOAT, (64, 1024))],
        [helper.make_tensor_value_info(NAME_C, TP.FLOAT, (64, 1024))],
        [w],
    )


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("android")
    compile_model(_mlp(), root / "mlp_droid", target="android-arm64")
    compile_model(_names_model(), root / "odd_names", target="android-arm64", embed_weights=True)
    return {"root": root, "mlp": root / "mlp_droid", "names": root / "odd_names"}


def _lib(pkg: Path) -> Path:
    return pkg / "src" / "main" / "jniLibs" / "arm64-v8a" / f"lib{pkg.name}.so"


def _readelf(*args: str) -> str:
    return subprocess.run([READELF, *args], capture_output=True, text=True, check=True).stdout


def test_module_layout(packages) -> None:
    pkg = packages["mlp"]
    names = kotlin_names(pkg.name)
    assert names["kt_package"] == "torsh.models.mlp_droid" and names["kt_class"] == "MlpDroid"
    for rel in [
        "build.gradle.kts",
        "README.md",
        "manifest.json",
        "src/main/AndroidManifest.xml",
        "src/main/assets/mlp_droid/weights.bin",
        "src/main/cpp/mlp_droid.h",
        "src/main/cpp/mlp_droid_jni.c",
        "src/main/cpp/build.sh",
        "src/main/kotlin/torsh/models/mlp_droid/MlpDroid.kt",
    ]:
        assert (pkg / rel).is_file(), rel
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert (
        manifest["target"] == "android-arm64"
        and manifest["triple"] == "aarch64-unknown-linux-android"
    )
    assert all((pkg / f).exists() for f in manifest["files"].values())
    assert not (pkg / "src" / "main" / "cpp" / "stub").exists()  # build leftovers removed
    assert not (packages["names"] / "src" / "main" / "assets").exists()  # embedded weights
    assert (packages["names"] / "src" / "main" / "cpp" / "weights.S").is_file()
    assert 'namespace = "torsh.models.mlp_droid"' in (pkg / "build.gradle.kts").read_text()
    assert "not compiled" in (pkg / "README.md").read_text()


@pytest.mark.parametrize("which", ["mlp", "names"])
def test_library_is_bionic_loadable(packages, which: str) -> None:
    pkg = packages[which]
    lib = _lib(pkg)
    dynamic = _readelf("-d", str(lib))
    assert re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic) == ["libc.so"]
    assert f"Library soname: [lib{pkg.name}.so]" in dynamic
    assert "(HASH)" in dynamic and "TEXTREL" not in dynamic
    sections = _readelf("-S", "-W", str(lib))
    assert ".gnu.version" not in sections  # no versioned imports (GLIBC_2.x) at all
    syms = _readelf("--dyn-syms", "-W", str(lib))
    rows = [line.split() for line in syms.splitlines() if re.match(r"\s*\d+:", line)]
    imports = {r[7] for r in rows if len(r) >= 8 and r[6] == "UND"}
    assert imports and imports <= set(STUB_FUNCTIONS), imports - set(STUB_FUNCTIONS)
    assert not any("@" in r[-1] for r in rows)
    exports = {r[7] for r in rows if len(r) >= 8 and r[6] != "UND" and r[3] == "FUNC"}
    names = kotlin_names(pkg.name)
    prefix = f"Java_{jni_mangle(names['kt_package'])}_{jni_mangle(names['kt_class'])}_"
    kotlin = (pkg / "src/main/kotlin" / names["kt_path"] / f"{names['kt_class']}.kt").read_text()
    natives = re.findall(r"private external fun (\w+)\(", kotlin)
    assert sorted(natives) == [
        "nativeCreate",
        "nativeDestroy",
        "nativeOutputShape",
        "nativeRun",
        "nativeRunBuffers",
    ]
    assert {prefix + n for n in natives} <= exports
    assert f"{pkg.name}_run_checked" in exports and not any(
        "graph_run" in e or "parallel" in e for e in exports
    )


def test_jni_bridge_compiles_against_jdk(packages) -> None:
    jdk = Path(JNI_INCLUDES[0]).parents[1]
    for pkg in (packages["mlp"], packages["names"]):
        cpp = pkg / "src" / "main" / "cpp"
        flags = [
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-unused-parameter",
            f"-I{jdk}",
            f"-I{jdk}/linux",
            f"-I{cpp}",
        ]
        for cc, extra in (
            ("gcc", ["-fsyntax-only"]),
            (CROSS, ["-c", "-o", str(pkg.parent / f"{pkg.name}_jni.o")]),
        ):
            if shutil.which(cc) is None:
                continue
            proc = subprocess.run(
                [cc, *flags, *extra, str(cpp / f"{pkg.name}_jni.c")], capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stderr


def test_kotlin_names_are_escaped(packages) -> None:
    pkg = packages["names"]
    names = kotlin_names(pkg.name)
    text = (pkg / "src/main/kotlin" / names["kt_path"] / f"{names['kt_class']}.kt").read_text()
    assert kotlin_string(NAME_A) in text and kotlin_string(NAME_C) in text
    for raw in (NAME_A, NAME_C, "${y}", "System.exit(", "*/ #include"):
        assert raw not in text
    assert re.fullmatch(r'"[A-Za-z0-9_ .\\u-]*"', kotlin_string(NAME_C))
    assert "const val WEIGHTS_EMBEDDED: Boolean = true" in text
    assert kotlin_names("class")["kt_package"] == "torsh.models.class_"
    assert (
        kotlin_names("file")["kt_class"] == "FileModel"
        and kotlin_names("_2d_net")["kt_class"] == "Model2dNet"
    )


@pytest.mark.skipif(QEMU is None, reason="qemu-aarch64 is not installed (apt install qemu-user)")
@pytest.mark.parametrize("which", ["mlp", "names"])
def test_library_runs_under_qemu(packages, which: str, tmp_path: Path) -> None:
    """glibc's libc.so.6 under the name libc.so resolves the unversioned imports as bionic would."""
    pkg, root = packages[which], packages["root"]
    model = _mlp() if which == "mlp" else _names_model()
    shape = (2, 16) if which == "mlp" else (64, 1024)
    p = pkg.name
    (tmp_path / "drv.c").write_text(DRIVER.replace("@P@", p).replace("@U@", p.upper()))
    lib_dir = _lib(pkg).parent
    build = subprocess.run(
        [
            CROSS,
            "-O2",
            f"-I{pkg / 'src/main/cpp'}",
            str(tmp_path / "drv.c"),
            "-o",
            str(tmp_path / "drv"),
            f"-L{lib_dir}",
            f"-l{p}",
            "-Wl,--allow-shlib-undefined",
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (tmp_path / "libc.so").symlink_to("/usr/aarch64-linux-gnu/lib/libc.so.6")
    x = rand(*shape, seed=7)
    x.tofile(tmp_path / "in0.bin")
    weights = str(pkg / "src/main/assets" / p / "weights.bin") if which == "mlp" else ""
    env = {"LD_LIBRARY_PATH": f"{lib_dir}:{tmp_path}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [QEMU, "-L", "/usr/aarch64-linux-gnu", str(tmp_path / "drv"), weights, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(tmp_path / "out0.bin", dtype=np.float32).reshape(
        ort_run(model, {model.graph.input[0].name: x})[0].shape
    )
    np.testing.assert_allclose(
        got, ort_run(model, {model.graph.input[0].name: x})[0], rtol=1e-4, atol=1e-4
    )
    assert root.exists()
