"""The numba executor: readable generated source, vectors lane by lane, storage types."""

from __future__ import annotations

import numpy as np
import pytest

from lowering import builder as lb
from lowering import examples
from lowering.builder import KernelBuilder
from lowering.loop_ir import PARALLEL, f16, f32, f64, i32, vectorized
from lowering.numba_exec import compile_numba
from lowering.program_exec import llvm_compiler
from lpjit.errors import InputError


def test_generated_source_is_kept_and_readable():
    """The source is stored on the compiled kernel; vectorized loops run as plain loops."""
    compiled = compile_numba(examples.scale_bias_relu(12))
    assert compiled.source == """\
def scale_bias_relu(x, bias, y, scale):
    for i in range(12):
        y[i] = (_select(np.float32(np.float32(x[i] * scale) + bias[i]) > np.float32(0.0), \
np.float32(np.float32(x[i] * scale) + bias[i]), np.float32(0.0)))
    return
"""


def test_vector_statements_read_all_lanes_before_writing():
    """``y[ramp(1)] = y[ramp(0)]`` shifts by one lane: every lane sees the old values."""
    b = KernelBuilder("shift")
    y = b.output("y", i32, (9,))
    b.vstore(y, (1,), lb.vload(y, 0, lanes=8))
    compiled = compile_numba(b.build())
    data = np.arange(9, dtype=np.int32)
    compiled(data)
    np.testing.assert_array_equal(data, [0, 0, 1, 2, 3, 4, 5, 6, 7])


def test_f16_buffers_round_on_store_and_widen_on_load():
    """An f16 output receives f32 values rounded half to even, like numpy's astype."""
    b = KernelBuilder("half")
    x = b.input("x", f16, (16,))
    y = b.output("y", f16, (16,))
    with b.for_range(16, kind=vectorized(8)) as i:
        b.store(y, i, x[i] * 3.0 + 1.0e-3)
    rng = np.random.default_rng(61)
    data = (rng.standard_normal(16) * 1000).astype(np.float16)
    out = np.zeros(16, np.float16)
    compile_numba(b.build())(data, out)
    expected = (data.astype(np.float32) * np.float32(3) + np.float32(1e-3)).astype(np.float16)
    np.testing.assert_array_equal(out, expected)


def test_parallel_loops_run_serially_with_the_same_meaning():
    b = KernelBuilder("rows")
    x = b.input("x", f32, (5, 3))
    y = b.output("y", f32, (5,))
    with b.for_range(5, kind=PARALLEL) as r:
        acc = b.local(lb.broadcast(0.0, 1, f32), "acc")
        with b.for_range(3) as c:
            b.assign(acc, acc + x[r, c])
        b.store(y, r, acc)
    data = np.random.default_rng(62).standard_normal((5, 3)).astype(np.float32)
    out = np.zeros(5, np.float32)
    compile_numba(b.build())(data, out)
    np.testing.assert_allclose(out, data.sum(axis=1), rtol=1e-6)


def test_arguments_are_checked_like_the_native_kernel():
    compiled = compile_numba(examples.scale_bias_relu(4))
    x = np.ones(4, np.float32)
    with pytest.raises(InputError, match=r"kernel 'scale_bias_relu': scalar 'scale' expects a "
                       "number, got str"):
        compiled(x, x, x.copy(), "2")


def _fma_cases(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operands whose ``a * b + c`` lies just off a midpoint of ``dtype`` (where rounding the
    sum first and then to ``dtype`` goes the wrong way), plus seeded random ones."""
    bits = np.finfo(dtype).nmant + 1              # 24 or 53 significant bits
    # (1 + 2^-j)(1 + 2^-k) = 1 + 2^-j + 2^-k + 2^-bits: the last term is half an ulp of 1
    left, right = dtype(1.0 + 2.0 ** -(bits // 2)), dtype(1.0 + 2.0 ** -(bits - bits // 2))
    tiny = dtype(2.0 ** -(3 * bits))
    a = [left, left, -left, left]
    b = [right, right, right, -right]
    c = [tiny, -tiny, -tiny, tiny]
    rng = np.random.default_rng(67)
    a += list(rng.standard_normal(60).astype(dtype))
    b += list(rng.standard_normal(60).astype(dtype))
    c += list((rng.standard_normal(60) * 4).astype(dtype))
    return tuple(np.array(v, dtype) for v in (a, b, c))


def _exact_fma(a, b, c, dtype) -> np.ndarray:
    """``a * b + c`` from exact rationals, rounded once to ``dtype`` (half to even), through
    round-to-odd f64 for f32 and by comparing the two f64 neighbours for f64."""
    from fractions import Fraction
    out = []
    for x, y, z in zip(a, b, c):
        exact = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
        near = np.float64(float(exact))           # correctly rounded to f64
        if dtype == np.float64:
            out.append(near)
            continue
        if Fraction(float(near)) != exact and int(near.view(np.int64)) % 2 == 0:
            direction = np.inf if Fraction(float(near)) < exact else -np.inf
            near = np.nextafter(near, direction)
        out.append(near.astype(np.float32))
    return np.array(out, dtype)


@pytest.mark.parametrize("scalar", [f32, f64], ids=["f32", "f64"])
def test_fma_rounds_once_like_the_instruction(scalar):
    """``fma`` on the numba executor rounds a * b + c once, as the native FMA does, also where
    the exact value lies a hair off a midpoint (rounding twice would tie to even)."""
    dtype = scalar.numpy.type
    a, b, c = _fma_cases(dtype)
    k = KernelBuilder("fma")
    xs = [k.input(name, scalar, (a.size,)) for name in "abc"]
    y = k.output("y", scalar, (a.size,))
    with k.for_range(a.size) as i:
        k.store(y, i, lb.fma(xs[0][i], xs[1][i], xs[2][i]))
    kernel = k.build()
    expected = _exact_fma(a, b, c, dtype)
    rounded_twice = (a[0].astype(np.float64) * b[0] + c[0]).astype(dtype)
    assert expected[0] != rounded_twice                       # the first case is a real trap
    numba_out, native_out = np.zeros_like(a), np.zeros_like(a)
    compile_numba(kernel)(a, b, c, numba_out)
    llvm_compiler(kernel)(a, b, c, native_out)
    np.testing.assert_array_equal(numba_out, expected)
    np.testing.assert_array_equal(native_out, expected)
