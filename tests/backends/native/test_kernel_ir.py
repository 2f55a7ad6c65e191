"""The kernel IR's own semantics: the interpreter and the LLVM emitter (through the JIT)
agree on vector loops with remainders, gathers and scatters, parallel loops, integer
arithmetic, casts, booleans and the polynomial transcendentals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.interp import run_kernel
from torsh_gen.backends.kernel.ir import Bin, Cast, Const, Select, call, maximum, minimum
from torsh_gen.backends.kernel.printer import format_kernel
from torsh_gen.backends.llvm.emit import EmitError
from torsh_gen.backends.llvm.jit import JitKernels


def _both(kernel, make_buffers, dims=None):
    """Run ``kernel`` through the interpreter and the JIT on identical buffers; return both."""
    a, b = make_buffers(), make_buffers()
    run_kernel(kernel, a, dims)
    JitKernels([kernel]).run(kernel.name, b, dims)
    return a, b


@pytest.mark.parametrize("n", [0, 1, 7, 16, 17, 33])
def test_vector_loop_remainder_and_gather(n: int) -> None:
    kb = KernelBuilder("k_gather")
    size = kb.dim("n")
    x = kb.buffer("x", "f32", 2 * size + 1)
    y = kb.buffer("y", "f32", size, writable=True)
    z = kb.buffer("z", "f32", 2 * size + 1, writable=True)
    with kb.loop(size, kind="vector", width=8) as i:
        v = kb.let(x[i * 2] + x[i * 2 + 1])  # stride-2 gathers
        y[i] = maximum(v, 0.0) - x[size]  # a uniform load broadcast
        z[i * 2] = v  # a scatter
    kernel = kb.build()
    rng = np.random.default_rng(0)
    data = rng.standard_normal(2 * n + 1).astype(np.float32)

    def bufs():
        return {"x": data.copy(), "y": np.zeros(n, np.float32), "z": np.zeros(2 * n + 1, np.float32)}

    a, b = _both(kernel, bufs, {"n": n})
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    pairs = data[: 2 * n : 2] + data[1 : 2 * n : 2]
    np.testing.assert_allclose(a["y"], np.maximum(pairs, 0) - data[n], rtol=1e-6)


def test_parallel_loop_with_vector_body_and_locals() -> None:
    m, k, n = 5, 7, 19
    kb = KernelBuilder("k_mm")
    a = kb.buffer("a", "f32", m * k)
    b = kb.buffer("b", "f32", k * n)
    c = kb.buffer("c", "f32", m * n, writable=True)
    with kb.loop(m, kind="parallel") as i:
        row = kb.let(i * n)
        with kb.loop(n, kind="vector", width=4) as j:
            acc = kb.local("f32", 0.0)
            with kb.loop(k) as p:
                kb.assign(acc, call("fma", a[i * k + p], b[p * n + j], acc))
            c[row + j] = acc
    kernel = kb.build()
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)

    def bufs():
        return {"a": A.ravel().copy(), "b": B.ravel().copy(), "c": np.zeros(m * n, np.float32)}

    x, y = _both(kernel, bufs)
    np.testing.assert_allclose(x["c"], y["c"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y["c"].reshape(m, n), A @ B, rtol=1e-5, atol=1e-5)


def test_integer_semantics_truncate_like_c() -> None:
    kb = KernelBuilder("k_int")
    a = kb.buffer("a", "i32", 8)
    b = kb.buffer("b", "i32", 8)
    q = kb.buffer("q", "i32", 8, writable=True)
    r = kb.buffer("r", "i32", 8, writable=True)
    f = kb.buffer("f", "i64", 8, writable=True)
    m = kb.buffer("m", "bool", 8, writable=True)
    with kb.loop(8, kind="vector", width=4) as i:
        q[i] = Bin("div", a[i], b[i])
        r[i] = Bin("rem", a[i], b[i])
        f[i] = Cast(Cast(a[i], "f32") * Const(0.75, "f32"), "i64")
        m[i] = Bin("lt", a[i], b[i])
    kernel = kb.build()
    av = np.array([7, -7, 7, -7, 0, 100, -1, 5], np.int32)
    bv = np.array([2, 2, -2, -2, 3, 7, 9, -5], np.int32)

    def bufs():
        return {"a": av.copy(), "b": bv.copy(), "q": np.zeros(8, np.int32), "r": np.zeros(8, np.int32),
                "f": np.zeros(8, np.int64), "m": np.zeros(8, np.bool_)}

    x, y = _both(kernel, bufs)
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    np.testing.assert_array_equal(y["q"], np.trunc(av / bv).astype(np.int32))
    np.testing.assert_array_equal(y["r"], np.fmod(av, bv))
    np.testing.assert_array_equal(y["f"], np.trunc(av * 0.75).astype(np.int64))
    np.testing.assert_array_equal(y["m"], av < bv)


@pytest.mark.parametrize(
    "name,fn,ref,lo,hi,tol",
    [
        ("exp", km.exp, np.exp, -90.0, 90.0, 2e-7),
        ("log", km.log, np.log, 1e-30, 1e30, 2e-7),
        ("tanh", km.tanh, np.tanh, -12.0, 12.0, 3e-7),
        ("erf", km.erf, np.vectorize(math.erf), -6.0, 6.0, 3e-7),
        ("sigmoid", km.sigmoid, lambda x: 1 / (1 + np.exp(-x)), -30.0, 30.0, 3e-7),
        ("sin", lambda kb, x: km.sin_cos(kb, x, "sin"), np.sin, -50.0, 50.0, 1e-6),
        ("cos", lambda kb, x: km.sin_cos(kb, x, "cos"), np.cos, -50.0, 50.0, 1e-6),
    ],
)
def test_transcendentals_match_numpy(name, fn, ref, lo, hi, tol) -> None:
    """Polynomials within a few ulp-scale errors (relative to max(1, |f(x)|))."""
    kb = KernelBuilder(f"k_{name}")
    n = 4099
    x = kb.buffer("x", "f32", n)
    y = kb.buffer("y", "f32", n, writable=True)
    with kb.loop(n, kind="vector", width=16) as i:
        y[i] = fn(kb, x[i])
    kernel = kb.build()
    if name == "log":
        xs = np.geomspace(lo, hi, n).astype(np.float32)
    else:
        xs = np.linspace(lo, hi, n).astype(np.float32)
    out = np.zeros(n, np.float32)
    JitKernels([kernel]).run(kernel.name, {"x": xs, "y": out})
    with np.errstate(over="ignore"):
        want = ref(xs.astype(np.float64)).astype(np.float32).astype(np.float64)
    err = np.abs(out - want) / np.maximum(1.0, np.abs(want))
    finite = np.isfinite(want)
    assert np.all(err[finite] < tol * 10), (name, float(err[finite].max()))
    assert np.array_equal(np.isinf(out), np.isinf(want))


def test_special_values() -> None:
    kb = KernelBuilder("k_special")
    x = kb.buffer("x", "f32", 6)
    e = kb.buffer("e", "f32", 6, writable=True)
    lg = kb.buffer("l", "f32", 6, writable=True)
    with kb.loop(6) as i:
        e[i] = km.exp(kb, x[i])
        lg[i] = km.log(kb, x[i])
    kernel = kb.build()
    xs = np.array([0.0, -1.0, np.inf, -np.inf, np.nan, 1.0], np.float32)
    out_e, out_l = np.zeros(6, np.float32), np.zeros(6, np.float32)
    JitKernels([kernel]).run(kernel.name, {"x": xs, "e": out_e, "l": out_l})
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(out_e, np.exp(xs), rtol=1e-6)
        np.testing.assert_allclose(out_l, np.log(xs), rtol=1e-6)


def test_vector_reduction_into_outer_local_is_refused() -> None:
    kb = KernelBuilder("k_bad")
    x = kb.buffer("x", "f32", 16)
    y = kb.buffer("y", "f32", 1, writable=True)
    acc = kb.local("f32", 0.0)
    with kb.loop(16, kind="vector", width=8) as i:
        kb.assign(acc, acc + x[i])
    y[0] = acc
    with pytest.raises(EmitError, match="reduction"):
        JitKernels([kb.build()])


def test_lane_varying_if_is_refused_and_select_works() -> None:
    kb = KernelBuilder("k_if")
    x = kb.buffer("x", "f32", 16)
    y = kb.buffer("y", "f32", 16, writable=True)
    with kb.loop(16, kind="vector", width=8) as i:
        with kb.if_(x[i] > 0.0):
            y[i] = x[i]
    with pytest.raises(EmitError, match="Select"):
        JitKernels([kb.build()])
    kb = KernelBuilder("k_select")
    x = kb.buffer("x", "f32", 16)
    y = kb.buffer("y", "f32", 16, writable=True)
    with kb.loop(16, kind="vector", width=8) as i:
        v = kb.let(x[i])
        y[i] = Select(v > 0.0, v, minimum(v, -1.0))
    xs = np.linspace(-2, 2, 16).astype(np.float32)
    out = np.zeros(16, np.float32)
    JitKernels([kb.build()]).run("k_select", {"x": xs, "y": out})
    np.testing.assert_array_equal(out, np.where(xs > 0, xs, np.minimum(xs, -1)))


def test_printer_is_stable() -> None:
    kb = KernelBuilder("k_print")
    x = kb.buffer("x", "f32", 4)
    with kb.loop(4, kind="vector", width=4) as i:
        x[i] = x[i] * 2.0
    text = format_kernel(kb.build())
    assert text == (
        "kernel k_print(x: f32[4:i64]) {\n"
        "  for i1 in 0:i64..4:i64 vector4 {\n"
        "    x[i1] = mul(x[i1], 2.0:f32)\n"
        "  }\n"
        "}\n"
    )


def test_rolled_loop_stays_a_loop_and_computes_the_same() -> None:
    """A ``rolled`` loop carries ``llvm.loop.unroll.disable``: after O3 its three-trip body
    is still one copy with a back-edge, where the same ``serial`` loop is unrolled (with
    the vector loop around it); the JIT agrees with the interpreter."""
    from llvmlite import ir

    from torsh_gen.backends.llvm.emit import emit_kernel
    from torsh_gen.backends.llvm.machine import optimize
    from torsh_gen.backends.llvm.targets import load_target

    def kernel(kind: str):
        kb = KernelBuilder(f"k_{kind}")
        x = kb.buffer("x", "f32", 64 + 2)
        y = kb.buffer("y", "f32", 64, writable=True)
        with kb.loop(64, kind="vector", width=4) as i:
            acc = kb.local("f32", 0.0)
            with kb.loop(3, kind=kind) as t:
                kb.assign(acc, call("fma", Cast(t, "f32") + 1.0, x[i + t], acc))
            y[i] = acc
        return kb.build()

    def fmuls(kern) -> tuple[int, bool]:
        module = ir.Module(name="m")
        emit_kernel(module, kern).linkage = ""  # external: O3 keeps it
        text = str(optimize(module, load_target("wasm32"))[0])
        return text.count("call <4 x float> @llvm.fmuladd.v4f32("), "llvm.loop.unroll.disable" in text

    assert fmuls(kernel("rolled")) == (1, True)
    unrolled, hinted = fmuls(kernel("serial"))
    assert unrolled >= 3 and not hinted
    data = np.random.default_rng(2).standard_normal(66).astype(np.float32)
    a, b = _both(kernel("rolled"), lambda: {"x": data.copy(), "y": np.zeros(64, np.float32)})
    np.testing.assert_allclose(a["y"], b["y"], rtol=1e-6)
    np.testing.assert_allclose(a["y"], data[:64] + 2 * data[1:65] + 3 * data[2:66], rtol=1e-5)


def _unary_kernel(name: str, fn, n: int):
    kb = KernelBuilder(f"k_{name}")
    x = kb.buffer("x", "f32", n)
    y = kb.buffer("y", "f32", n, writable=True)
    with kb.loop(n, kind="vector", width=8) as i:
        y[i] = fn(kb, x[i])
    return kb.build()


def _both_unary(name: str, fn, xs: np.ndarray, interpret: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    kernel = _unary_kernel(name, fn, xs.size)
    out = np.zeros(xs.size, np.float32)
    JitKernels([kernel]).run(kernel.name, {"x": xs.copy(), "y": out})
    if not interpret:
        return out, None
    ref = np.zeros(xs.size, np.float32)
    run_kernel(kernel, {"x": xs.copy(), "y": ref})
    return out, ref


def _spread(lo: float, hi: float, n: int = 4099, geom: bool = False) -> np.ndarray:
    if geom:
        v = np.geomspace(lo, hi, n // 2)
        return np.concatenate([v, -v]).astype(np.float32)
    return np.linspace(lo, hi, n).astype(np.float32)


NEW_MATH = [
    ("asin", km.asin, np.arcsin, [_spread(-1, 1), _spread(1e-30, 1, geom=True)]),
    ("acos", km.acos, np.arccos, [_spread(-1, 1), _spread(1e-30, 1, geom=True)]),
    ("atan", km.atan, np.arctan, [_spread(-10, 10), _spread(1e-38, 3e38, geom=True)]),
    ("sinh", km.sinh, np.sinh, [_spread(-89.4, 89.4), _spread(1e-38, 89.4, geom=True)]),
    ("cosh", km.cosh, np.cosh, [_spread(-89.4, 89.4), _spread(1e-38, 89.4, geom=True)]),
    ("asinh", km.asinh, np.arcsinh, [_spread(-10, 10), _spread(1e-38, 3e38, geom=True)]),
    ("acosh", km.acosh, np.arccosh, [_spread(1, 10), np.abs(_spread(1, 3e38, geom=True)),
                                     (1 + np.arange(2000) * 1.2e-7).astype(np.float32)]),
    ("atanh", km.atanh, np.arctanh, [_spread(-0.9999999, 0.9999999), _spread(1e-38, 0.99999994, geom=True)]),
    ("tan", km.tan, np.tan, [_spread(-10, 10), _spread(1e-38, 3e38, geom=True), _spread(-1e5, 1e5)]),
]


@pytest.mark.parametrize("name,fn,ref,samples", NEW_MATH, ids=[m[0] for m in NEW_MATH])
def test_inverse_and_hyperbolic_within_4e7_relative(name, fn, ref, samples) -> None:
    """Pure relative error against numpy's float64 value of the same float32 input, over
    the whole float32 range where the function is finite (math.py's docstring lists the
    measured maxima, all below 2.6e-7)."""
    xs = np.concatenate(samples).astype(np.float32)
    out, _ = _both_unary(name, fn, xs)
    with np.errstate(all="ignore"):
        want = ref(xs.astype(np.float64))
    finite = np.isfinite(want) & (np.abs(want) < 3.4e38)
    rel = np.abs(out[finite] - want[finite]) / np.maximum(np.abs(want[finite]), 1e-300)
    assert rel.max() < 4e-7, (name, float(rel.max()), float(xs[finite][np.argmax(rel)]))


def test_tan_reduction_is_exact_for_every_float32() -> None:
    """tan of random bit patterns (every exponent up to 3.4e38) and of the float32 values
    nearest to multiples of pi/2 (the poles): within 4e-7 relative, and the interpreter
    computes the same bits as the JIT (float64 Cody-Waite below 2**22, Payne-Hanek's
    integer window of 2/pi above)."""
    rng = np.random.default_rng(4)
    xs = rng.integers(0, 2**32, 60000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    poles = (np.arange(1, 20000) * (np.pi / 2)).astype(np.float32)
    xs = np.concatenate([xs[np.isfinite(xs)], poles, -poles, [np.float32(3.4028235e38), np.float32(2**22)]])
    out, _ = _both_unary("tan", km.tan, xs.astype(np.float32))
    with np.errstate(all="ignore"):
        want = np.tan(xs.astype(np.float64))
    rel = np.abs(out - want) / np.abs(want)
    assert np.nanmax(rel[want != 0]) < 4e-7
    picks = np.concatenate([xs[:300], poles[-50:]]).astype(np.float32)
    jit, interp = _both_unary("tan", km.tan, picks, interpret=True)
    np.testing.assert_array_equal(jit, interp)


@pytest.mark.parametrize("name,fn,ref,samples", NEW_MATH, ids=[m[0] for m in NEW_MATH])
def test_new_math_special_values_and_interpreter(name, fn, ref, samples) -> None:
    """Signed zeros, infinities, NaN, subnormals and the domain ends as numpy gives them
    (NaN outside the domain, +-inf at atanh(+-1)); the interpreter agrees bit for bit."""
    xs = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 1.0000001, -1.0000001, 3.4028235e38,
                   -3.4028235e38, 1e-45, -1e-45, 1e-40, 0.5, -0.5, 89.4, -89.4], np.float32)
    xs = np.concatenate([xs, np.random.default_rng(1).choice(np.concatenate(samples), 100)]).astype(np.float32)
    out, interp = _both_unary(name, fn, xs, interpret=True)
    np.testing.assert_array_equal(out, interp)
    with np.errstate(all="ignore"):
        want = ref(xs.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_allclose(out, want, rtol=4e-7, atol=0)
    exact = (want == 0) | np.isinf(want)
    np.testing.assert_array_equal(out[exact], want[exact])
    np.testing.assert_array_equal(np.signbit(out[exact]), np.signbit(want[exact]))


def test_float_rem_is_refused_by_emitter_and_interpreter() -> None:
    """LLVM's frem would call libm's fmod, which artifacts never link: float remainders go
    through math.fmod, and a float rem that slips into a kernel fails loudly."""
    kb = KernelBuilder("k_frem")
    a = kb.buffer("a", "f32", 4)
    r = kb.buffer("r", "f32", 4, writable=True)
    with kb.loop(4) as i:
        r[i] = Bin("rem", a[i], Const(2.0, "f32"))
    kernel = kb.build()
    with pytest.raises(EmitError, match="math.fmod"):
        JitKernels([kernel])
    with pytest.raises(ValueError, match="math.fmod"):
        run_kernel(kernel, {"a": np.ones(4, np.float32), "r": np.zeros(4, np.float32)})
