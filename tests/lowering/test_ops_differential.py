"""Every operator on both executors and numpy: the two executors agree on loop-IR semantics.

Each kernel runs its loop ``vectorized(8)`` over 19 elements, so LLVM executes both the
vector body and the scalar tail.
"""

from __future__ import annotations

import numpy as np
import pytest
from differential import garbage, run_both

from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.loop_ir import (
    BINARY_OPS,
    COMPARE_OPS,
    INT_ONLY_BINARY_OPS,
    f16,
    f32,
    f64,
    i1,
    i8,
    i16,
    i32,
    i64,
    scalar_type,
    u8,
    u16,
    vectorized,
)

N = 19
INT_TYPES = (i8, u8, i16, u16, i32, i64)
FLOAT_OPS = tuple(op for op in BINARY_OPS if op not in INT_ONLY_BINARY_OPS)


def _trunc_div(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """C division (toward zero) in exact integer arithmetic."""
    q = a // c
    return q + ((q < 0) & (q * c != a))


def _int_reference(op: str, a: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    dtype = a.dtype
    wide_a, wide_c = a.astype(np.int64), c.astype(np.int64)
    info = np.iinfo(dtype)
    results = {
        "add": wide_a + wide_c, "sub": wide_a - wide_c, "mul": wide_a * wide_c,
        "div": _trunc_div(wide_a, wide_c), "floordiv": wide_a // wide_c, "mod": wide_a % wide_c,
        "min": np.minimum(wide_a, wide_c), "max": np.maximum(wide_a, wide_c),
        "and": wide_a & wide_c, "or": wide_a | wide_c, "xor": wide_a ^ wide_c,
        "shl": wide_a << s.astype(np.int64), "shr": a >> s.astype(dtype),
        "add_sat": np.clip(wide_a + wide_c, info.min, info.max),
        "sub_sat": np.clip(wide_a - wide_c, info.min, info.max),
    }
    with np.errstate(over="ignore"):
        return results[op].astype(np.int64).astype(dtype)


def _int_inputs(dtype: np.dtype, rng: np.random.Generator):
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, N, dtype=dtype, endpoint=True)
    c = rng.integers(info.min, info.max, N, dtype=dtype, endpoint=True)
    a[:4] = [info.min, info.max, -7 if info.min else 7, 0]
    c[:4] = [3, -2 if info.min else 2, 2, 5]
    c[c == 0] = 1
    if info.min:
        c[(a == info.min) & (c == -1)] = 1           # sdiv overflow is undefined
    s = rng.integers(0, 8 * dtype.itemsize, N).astype(dtype)
    return a, c, s


def test_integer_binary_operators_and_comparisons():
    """Wrap-around arithmetic, C division, floor division/modulo, shifts, saturation."""
    rng = np.random.default_rng(11)
    b = KernelBuilder("int_ops")
    args, expected = [], []
    ops = [op for op in BINARY_OPS if op not in ("add_sat", "sub_sat")]
    for t in INT_TYPES:
        a, c, s = _int_inputs(t.numpy, rng)
        ta, tc, ts = (b.input(f"{name}_{t}", t, (N,)) for name in "acs")
        kinds = ops + (["add_sat", "sub_sat"] if t.bits <= 32 else [])
        out = b.output(f"out_{t}", t, (len(kinds), N))
        cmp = b.output(f"cmp_{t}", i1, (len(COMPARE_OPS), N))
        with b.for_range(N, kind=vectorized(8)) as i:
            for k, op in enumerate(kinds):
                rhs = ts[i] if op in ("shl", "shr") else tc[i]
                b.store(out, (k, i), lb.binary(op, ta[i], rhs))
            for k, op in enumerate(COMPARE_OPS):
                b.store(cmp, (k, i), lb.compare(op, ta[i], tc[i]))
        args += [a, c, s]
        expected.append(np.stack([_int_reference(op, a, c, s) for op in kinds]))
        expected.append(np.stack([getattr(np, name)(a, c) for name in
                                  ("equal", "not_equal", "less", "less_equal", "greater",
                                   "greater_equal")]))
    kernel = b.build()
    outputs = [p for p in kernel.params if p.role == "output"]
    full_args = []
    rest = iter(args)
    for p in kernel.params:
        full_args.append(next(rest) if p.role == "input" else garbage(p.shape, p.dtype.numpy, rng))
    llvm_out, numba_out = run_both(kernel, full_args)
    for buffer, got_llvm, got_numba, want in zip(outputs, llvm_out, numba_out, expected):
        np.testing.assert_array_equal(got_numba, want, err_msg=f"numba, {buffer.name}")
        np.testing.assert_array_equal(got_llvm, want, err_msg=f"llvm, {buffer.name}")


def _float_reference(op, a, c):
    return {"add": a + c, "sub": a - c, "mul": a * c, "div": a / c,
            "floordiv": np.floor(a / c), "mod": np.mod(a, c),
            "min": np.where(a < c, a, c), "max": np.where(a > c, a, c)}[op]


MATH = ("exp", "log", "sqrt", "tanh", "erf", "floor", "ceil", "round_half_even", "abs")


def _math_reference(func, x):
    import math
    table = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh,
             "erf": np.vectorize(math.erf), "floor": np.floor, "ceil": np.ceil,
             "round_half_even": np.rint, "abs": np.abs}
    return table[func](x.astype(np.float64)).astype(x.dtype)


@pytest.mark.parametrize("t", [f32, f64])
def test_float_operators_math_functions_and_nan_comparisons(t):
    """Float ops exactly; math functions within 2 ulp; ``ne`` is true on NaN, others false."""
    rng = np.random.default_rng(12)
    dtype = t.numpy
    a = (rng.standard_normal(N) * 4).astype(dtype)
    c = (rng.standard_normal(N) * 2).astype(dtype)
    a[:4] = [2.5, -2.5, 3.5, np.nan]
    c[:4] = [1.5, 1.5, -2.0, 1.0]
    b = KernelBuilder(f"float_ops_{t}")
    ta, tc = b.input("a", t, (N,)), b.input("c", t, (N,))
    out = b.output("out", t, (len(FLOAT_OPS), N))
    math_out = b.output("math", t, (len(MATH) + 1, N))
    cmp = b.output("cmp", i1, (len(COMPARE_OPS), N))
    with b.for_range(N, kind=vectorized(8)) as i:
        for k, op in enumerate(FLOAT_OPS):
            b.store(out, (k, i), lb.binary(op, ta[i], tc[i]))
        for k, func in enumerate(MATH):
            arg = lb.call("abs", ta[i]) if func in ("log", "sqrt") else ta[i]
            b.store(math_out, (k, i), lb.call(func, arg))
        b.store(math_out, (len(MATH), i), lb.fma(ta[i], tc[i], ta[i]))
        for k, op in enumerate(COMPARE_OPS):
            b.store(cmp, (k, i), lb.compare(op, ta[i], tc[i]))
    kernel = b.build()
    args = [a, c, garbage(out.shape, dtype, rng), garbage(math_out.shape, dtype, rng),
            garbage(cmp.shape, np.bool_, rng)]
    (l_out, l_math, l_cmp), (n_out, n_math, n_cmp) = run_both(kernel, args)
    with np.errstate(all="ignore"):
        want = np.stack([_float_reference(op, a, c) for op in FLOAT_OPS])
        want_math = np.stack([_math_reference(f, np.abs(a) if f in ("log", "sqrt") else a)
                              for f in MATH] + [(a.astype(np.float64) * c + a).astype(dtype)])
    np.testing.assert_array_equal(l_out, want)
    np.testing.assert_array_equal(n_out, want)
    tolerance = 2 * np.finfo(dtype).eps
    np.testing.assert_allclose(l_math, want_math, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(n_math, l_math, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(l_math[MATH.index("round_half_even"), :3], [2, -2, 4])
    np.testing.assert_array_equal(l_cmp, n_cmp)
    np.testing.assert_array_equal(l_cmp[:, 3], [False, True, False, False, False, False])


CASTS = [  # source, target, mode
    ("f32", "i32", "trunc"), ("f32", "u8", "trunc"), ("f32", "i8", "round_even_sat"),
    ("f32", "u8", "round_even_sat"), ("f32", "i32", "round_even_sat"), ("i32", "f32", "nearest"),
    ("i8", "i32", "exact"), ("u8", "i16", "exact"), ("i32", "i8", "wrap"), ("i32", "u8", "wrap"),
    ("u16", "f32", "exact"), ("f32", "f64", "exact"), ("f64", "f32", "nearest"),
    ("i64", "i32", "wrap"), ("i8", "u8", "wrap"),
]


def _cast_reference(x: np.ndarray, target: np.dtype, mode: str) -> np.ndarray:
    if mode == "round_even_sat":
        info = np.iinfo(target)
        r = np.rint(x.astype(np.float64))
        return np.where(np.isnan(r), 0, np.clip(r, info.min, info.max)).astype(target)
    if mode == "trunc":
        return np.trunc(x).astype(target)
    return x.astype(target)


def _cast_input(source: np.dtype, target: np.dtype, mode: str, rng) -> np.ndarray:
    if mode == "trunc":
        info = np.iinfo(target)
        x = rng.uniform(max(info.min, -1e6), min(info.max, 1e6), N).astype(source)
        x[:3] = [2.5, 3.75, 0.5 if info.min == 0 else -2.5]
        return x
    if source.kind == "f":
        x = (rng.standard_normal(N) * 300).astype(source)
        x[:6] = [0.5, 1.5, 2.5, -0.5, np.nan, 1e10]
        return x
    info = np.iinfo(source)
    return rng.integers(info.min, info.max, N, dtype=source, endpoint=True)


def test_casts_follow_their_named_modes():
    """trunc rounds toward zero; round_even_sat rounds ties to even, saturates, NaN -> 0."""
    rng = np.random.default_rng(13)
    b = KernelBuilder("casts")
    inputs, expected = [], []
    for k, (source, target, mode) in enumerate(CASTS):
        s, t = scalar_type(source), scalar_type(target)
        x = b.input(f"x{k}", s, (N,))
        y = b.output(f"y{k}", t, (N,))
        with b.for_range(N, kind=vectorized(8)) as i:
            b.store(y, i, lb.cast(x[i], t, mode))
        data = _cast_input(s.numpy, t.numpy, mode, rng)
        inputs += [data, garbage((N,), t.numpy, rng)]
        expected.append(_cast_reference(data, t.numpy, mode))
    kernel = b.build()
    llvm_out, numba_out = run_both(kernel, inputs)
    for cast, got_llvm, got_numba, want in zip(CASTS, llvm_out, numba_out, expected):
        np.testing.assert_array_equal(got_numba, want, err_msg=f"numba {cast}")
        np.testing.assert_array_equal(got_llvm, want, err_msg=f"llvm {cast}")


def test_storage_types_gathers_shuffles_and_lane_reductions():
    """f16 loads widen and stores round half to even; i1 is a byte; strided and indirect
    vector accesses; shuffles; horizontal add/min/max in lane order."""
    rng = np.random.default_rng(14)
    b = KernelBuilder("misc")
    h = b.input("h", f16, (N,))
    flags = b.input("flags", i1, (N,))
    x = b.input("x", f32, (2 * N,))
    h_out = b.output("h_out", f16, (N,))
    picked = b.output("picked", f32, (N,))
    scattered = b.output("scattered", f32, (2 * N,))
    lanes = b.output("lanes", f32, (8, 4))
    with b.for_range(N, kind=vectorized(8)) as i:
        b.store(h_out, i, h[i] * 1.001 + 0.25)
        b.store(picked, i, lb.select(flags[i], x[i * 2 + 1], x[(i * 7) % N]))
        b.store(scattered, i * 2, x[i])
        b.store(scattered, i * 2 + 1, h[i])
    v = b.let(lb.vload(x, 0, lanes=8), "v")
    w = b.let(lb.shuffle((v, lb.vload(x, 8, lanes=8)), [15, 0, 3, 3, 8, 9, 1, 2]), "w")
    b.vstore(lanes, (0, 0), lb.broadcast(lb.reduce_lanes("add", v), 4, f32))
    b.vstore(lanes, (1, 0), lb.broadcast(lb.reduce_lanes("min", v), 4, f32))
    b.vstore(lanes, (2, 0), lb.broadcast(lb.reduce_lanes("max", v), 4, f32))
    with b.for_range(5, name="r") as r:
        b.vstore(lanes, (r + 3, 0), lb.shuffle(w, [0, 1, 2, 3]) * lb.broadcast(lb.cast(r, f32, "nearest"), 4))
    kernel = b.build()
    hv = (rng.standard_normal(N) * 100).astype(np.float16)
    fv = rng.integers(0, 2, N).astype(np.bool_)
    xv = rng.standard_normal(2 * N).astype(np.float32)
    args = [hv, fv, xv, garbage((N,), np.float16, rng), garbage((N,), np.float32, rng),
            garbage((2 * N,), np.float32, rng), garbage((8, 4), np.float32, rng)]
    llvm_out, numba_out = run_both(kernel, args)
    for got_llvm, got_numba in zip(llvm_out, numba_out):
        np.testing.assert_array_equal(got_llvm, got_numba)
    h_want = (hv.astype(np.float32) * np.float32(1.001) + np.float32(0.25)).astype(np.float16)
    np.testing.assert_array_equal(llvm_out[0], h_want)
    idx = np.arange(N)
    np.testing.assert_array_equal(llvm_out[1], np.where(fv, xv[2 * idx + 1], xv[7 * idx % N]))
    np.testing.assert_array_equal(llvm_out[2][0::2], xv[:N])
    sequential = np.float32(0)
    for value in xv[:8]:
        sequential = np.float32(sequential + value)
    assert llvm_out[3][0, 0] == sequential and llvm_out[3][1, 0] == xv[:8].min()
    np.testing.assert_array_equal(llvm_out[3][4], xv[[15, 0, 3, 3]])
    np.testing.assert_array_equal(llvm_out[3][5], xv[[15, 0, 3, 3]] * 2)
