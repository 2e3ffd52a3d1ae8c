"""The numba executor: readable generated source, vectors lane by lane, storage types."""

from __future__ import annotations

import numpy as np
import pytest

from lowering import builder as lb
from lowering import examples
from lowering.builder import KernelBuilder
from lowering.loop_ir import PARALLEL, f16, f32, i32, vectorized
from lowering.numba_exec import compile_numba
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
