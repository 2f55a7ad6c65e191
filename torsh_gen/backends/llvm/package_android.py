"""Packaging of ``android-arm64``: an Android library module around a bionic-loadable .so.

The aarch64 code and C runtime are those of the Linux targets; what differs is the link.
Bionic resolves imports by name and refuses GLIBC_ symbol versions and glibc-only
libraries, so the library is linked with ``-nostdlib`` against a stub ``libc.so`` built
from ``libc_stub.c`` (functions with the same ABI in glibc and bionic): its only
``DT_NEEDED`` is ``libc.so`` and no import carries a version. The JNI bridge is compiled
into the same library against a JDK's ``jni.h`` (the JNI ABI is the same on Android), so
the module ships a prebuilt library and needs no NDK::

    build.gradle.kts, src/main/AndroidManifest.xml     the module
    src/main/jniLibs/arm64-v8a/lib<name>.so            model + runtime + JNI bridge
    src/main/kotlin/torsh/models/<name>/<Class>.kt     run(Map<String, FloatArray>)
    src/main/assets/<name>/weights.bin                 unless --embed-weights
    src/main/cpp/                                      sources, model.o and build.sh
    manifest.json, README.md

The Kotlin class is generated, not compiled (there is no Kotlin compiler here).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from torsh_gen.backends.kernel.program import Program
from torsh_gen.backends.llvm.artifact import ArtifactInfo, PackageResult
from torsh_gen.backends.llvm.native_build import (
    CFLAGS,
    LDFLAGS,
    Build,
    NativeBuildError,
    Sources,
    api_symbols,
    compile_objects,
    export_map,
    kotlin_string,
    render,
    write_sources,
)
from torsh_gen.backends.llvm.package_sharedlib import result, tidy, write_manifest
from torsh_gen.backends.llvm.targets import TargetSpec

#: What the runtime and the JNI bridge import: all in bionic's libc.so with glibc's ABI.
STUB_FUNCTIONS = (
    "calloc",
    "close",
    "free",
    "lseek",
    "malloc",
    "memcpy",
    "memmove",
    "memset",
    "mmap",
    "munmap",
    "open",
    "pthread_cond_broadcast",
    "pthread_cond_destroy",
    "pthread_cond_init",
    "pthread_cond_signal",
    "pthread_cond_wait",
    "pthread_create",
    "pthread_join",
    "pthread_mutex_destroy",
    "pthread_mutex_init",
    "pthread_mutex_lock",
    "pthread_mutex_unlock",
    "sched_getaffinity",
    "snprintf",
    "strcmp",
    "strcpy",
    "strlen",
    "vsnprintf",
)
#: No glibc-only helpers: stack protector, fortified calls and outline atomics import
#: symbols bionic lacks or defines differently.
ANDROID_CFLAGS = (
    "-fno-stack-protector",
    "-U_FORTIFY_SOURCE",
    "-D_FORTIFY_SOURCE=0",
    "-mno-outline-atomics",
)
ANDROID_LDFLAGS = ("-Wl,--no-undefined", "-Wl,--hash-style=both", "-Wl,-z,max-page-size=16384")
_KEYWORDS = frozenset(
    """abstract as assert boolean break byte case catch char class const continue default do
    double else enum extends false final finally float for fun goto if implements import in
    instanceof int interface is long native new null object package private protected public
    return short static strictfp super switch synchronized this throw throws transient true try
    typealias typeof val var void volatile when while""".split()
)
_TAKEN_CLASSES = frozenset(
    {
        "File",
        "Context",
        "ByteBuffer",
        "ByteOrder",
        "TensorInfo",
        "Map",
        "String",
        "Array",
        "FloatArray",
        "LongArray",
        "Long",
        "Int",
        "Boolean",
        "List",
        "Set",
        "Any",
        "Unit",
        "AutoCloseable",
        "System",
    }
)


def write(program: Program, spec: TargetSpec, folder: Path, info: ArtifactInfo) -> PackageResult:
    """Generate and link the Android library module of ``program`` into ``folder``."""
    embedded = bool(getattr(info, "embed_weights", False))
    jni_include = find_jni_include()
    main = folder / "src" / "main"
    cpp, libdir = main / "cpp", main / "jniLibs" / "arm64-v8a"
    libdir.mkdir(parents=True)
    sources = write_sources(program, spec, info, cpp, cpp, embedded)
    p = sources.prefix
    values = {**sources.values, **kotlin_names(p)}
    (cpp / f"{p}_jni.c").write_text(render("jni.c.j2", **values))
    (cpp / "libc_stub.c").write_text(render("libc_stub.c.j2", P=p, functions=STUB_FUNCTIONS))
    if not embedded:
        (main / "assets" / p).mkdir(parents=True)
        (main / "assets" / p / "weights.bin").write_bytes(bytes(program.weights))
    build = Build(cpp)
    link_android(build, spec.cc, sources, jni_include)
    build.write_script()
    build.run()
    tidy(cpp, sources)
    for leftover in (f"{p}_jni.o", "stub/libc.so"):
        (cpp / leftover).unlink(missing_ok=True)
    (cpp / "stub").rmdir()
    kotlin_dir = main / "kotlin" / values["kt_path"]
    kotlin_dir.mkdir(parents=True)
    (kotlin_dir / f"{values['kt_class']}.kt").write_text(render("Model.kt.j2", **values))
    (main / "AndroidManifest.xml").write_text(render("AndroidManifest.xml.j2", **values))
    (folder / "build.gradle.kts").write_text(render("build.gradle.kts.j2", **values))
    (folder / "README.md").write_text(render("README_android.md.j2", **values))
    lib = f"src/main/jniLibs/arm64-v8a/lib{p}.so"
    files = {
        "library": lib,
        "header": f"src/main/cpp/{p}.h",
        "kotlin": f"src/main/kotlin/{values['kt_path']}/{values['kt_class']}.kt",
        "jni": f"src/main/cpp/{p}_jni.c",
        "module": "build.gradle.kts",
    }
    if not embedded:
        files["weights"] = f"src/main/assets/{p}/weights.bin"
    write_manifest(folder, info, spec, program, files, embedded, sources.values["variants"])
    return result(folder, program, program.workspace_bytes)


def link_android(build: Build, cc: str, sources: Sources, jni_include: Path) -> None:
    """Queue the compiles, the stub libc and the -nostdlib link of the module's library."""
    p = sources.prefix
    compile_objects(build, cc, sources, ".", ANDROID_CFLAGS)
    build.add(
        cc,
        *CFLAGS,
        *ANDROID_CFLAGS,
        "-I.",
        f"-I{jni_include}",
        f"-I{jni_include / 'linux'}",
        "-c",
        f"{p}_jni.c",
        "-o",
        f"{p}_jni.o",
    )
    build.add("mkdir", "-p", "stub")
    build.add(
        cc,
        "-shared",
        "-nostdlib",
        "-fPIC",
        "-o",
        "stub/libc.so",
        "libc_stub.c",
        "-Wl,-soname,libc.so",
    )
    exports = export_map(build.src, api_symbols(p) + ["Java_*"])
    build.add(
        cc,
        "-shared",
        "-nostdlib",
        "-o",
        f"../jniLibs/arm64-v8a/lib{p}.so",
        *sources.objects,
        f"{p}_jni.o",
        "-Lstub",
        "-lc",
        f"-Wl,--version-script={exports}",
        f"-Wl,-soname,lib{p}.so",
        *ANDROID_LDFLAGS,
        *LDFLAGS,
    )


def find_jni_include() -> Path:
    """The include folder of a JDK (``$JAVA_HOME``, else the first under /usr/lib/jvm)."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "include")
    candidates += [Path(p).parent for p in sorted(glob.glob("/usr/lib/jvm/*/include/jni.h"))]
    for inc in candidates:
        if (inc / "jni.h").is_file() and (inc / "linux" / "jni_md.h").is_file():
            return inc
    raise NativeBuildError(
        "target android-arm64 compiles its JNI bridge against a JDK's jni.h and found none: "
        "install a JDK (Debian package default-jdk-headless) or set JAVA_HOME"
    )


def jni_mangle(name: str) -> str:
    """A Java package or class name as JNI spells it in function names (ASCII input)."""
    return "".join("_" if ch == "." else "_1" if ch == "_" else ch for ch in name)


def kotlin_names(package: str) -> dict[str, str]:
    """Kotlin package, class, JNI function prefix and source path for ``package``."""
    segment = package + "_" if package in _KEYWORDS else package
    kt_package = f"torsh.models.{segment}"
    cls = "".join(part[:1].upper() + part[1:] for part in package.split("_") if part) or "Model"
    if cls[0].isdigit() or cls in _TAKEN_CLASSES:
        cls = f"{cls}Model" if not cls[0].isdigit() else f"Model{cls}"
    return {
        "kt_package": kt_package,
        "kt_class": cls,
        "kt_path": kt_package.replace(".", "/"),
        "kt_lib": kotlin_string(package),
        "jni_prefix": f"Java_{jni_mangle(kt_package)}_{jni_mangle(cls)}_",
    }
