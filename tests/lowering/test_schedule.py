"""apply_schedule: a LoopNest and a Schedule (data) become loop IR."""

from __future__ import annotations

import numpy as np
import pytest
from differential import garbage, run_both

from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.loop_ir import Buffer, Kernel, Var, f32
from lowering.printer import print_stmt
from lowering.schedule import (
    Axis,
    LoopNest,
    Packing,
    Schedule,
    Split,
    apply_schedule,
    pack_constant,
    register_tile_schedule,
)
from lowering.verifier import verify_kernel
from lpjit.errors import LoweringError


def _matmul_nest(m: int, n: int, k: int, weights: np.ndarray | None = None):
    a = Buffer("A", f32, (m, k), role="input")
    c = Buffer("C", f32, (m, n), role="output")
    w = KernelBuilder.constant("B", weights if weights is not None
                               else np.ones((k, n), np.float32))
    mv, nv, kv = Var("m"), Var("n"), Var("k")
    nest = LoopNest(axes=(Axis(mv, m), Axis(nv, n), Axis(kv, k, reduce=True)), output=c,
                    output_indices=(mv, nv), value=a[mv, kv] * w[kv, nv],
                    init=lb.broadcast(0.0, 1, f32))
    return nest, (a, c)


def test_register_tile_golden():
    """Accumulators live across k; init, FMA update and store run over the unrolled tile."""
    nest, _ = _matmul_nest(4, 8, 3)
    schedule = register_tile_schedule("m", "n", "k", rows=2, columns=8, vector_width=4)
    assert print_stmt(apply_schedule(nest, schedule)) == """\
for m_o in range(2) parallel:
  allocate acc: f32[2, 8]
  for m_i in range(2) unrolled:
    for n_i_o in range(2) unrolled:
      for n_i_i in range(4) vectorized(4):
        acc[m_i, (n_i_o * 4) + n_i_i] = 0.0
  for k in range(3):
    for m_i in range(2) unrolled:
      for n_i_o in range(2) unrolled:
        for n_i_i in range(4) vectorized(4):
          acc[m_i, (n_i_o * 4) + n_i_i] = fma(A[(m_o * 2) + m_i, k], B[k, (n_i_o * 4) + n_i_i], acc[m_i, (n_i_o * 4) + n_i_i])
  for m_i in range(2) unrolled:
    for n_i_o in range(2) unrolled:
      for n_i_i in range(4) vectorized(4):
        C[(m_o * 2) + m_i, (n_i_o * 4) + n_i_i] = acc[m_i, (n_i_o * 4) + n_i_i]"""


@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (5, 17, 3), (8, 33, 2), (3, 7, 9)])
def test_tails_are_statically_in_bounds(m, n, k):
    """Every split tail has its own extents: the verifier proves all indices in bounds."""
    nest, params = _matmul_nest(m, n, k, np.ones((k, n), np.float32))
    schedule = register_tile_schedule("m", "n", "k", pack=Packing("B", 1, "n", 16))
    verify_kernel(Kernel("mm", params, apply_schedule(nest, schedule)))


def test_reduction_innermost_uses_a_scalar_accumulator():
    """Order (m, n, k): nothing spatial inside the reduction, so a scalar local is enough."""
    nest, _params = _matmul_nest(3, 5, 4)
    text = print_stmt(apply_schedule(nest, Schedule(order=("m", "n", "k"))))
    assert text == """\
for m in range(3):
  for n in range(5):
    var acc: f32 = 0.0
    for k in range(4):
      acc = fma(A[m, k], B[k, n], acc)
    C[m, n] = acc"""


def test_scheduled_nest_with_epilogue_runs_like_numpy():
    """A max-reduction with an epilogue, split with tails, on both executors."""
    rng = np.random.default_rng(21)
    x = Buffer("x", f32, (6, 11), role="input")
    y = Buffer("y", f32, (6,), role="output")
    r, c, acc = Var("r"), Var("c"), Var("acc", f32)
    nest = LoopNest(axes=(Axis(r, 6), Axis(c, 11, reduce=True)), output=y, output_indices=(r,),
                    value=x[r, c], combine="max", init=lb.broadcast(-1e30, 1, f32),
                    epilogue=acc * 2.0, accumulator=acc)
    schedule = Schedule(splits=(Split("r", 4), Split("c", 4)), order=("r_o", "c_o", "r_i", "c_i"),
                        vectorize="r_i", vector_width=4, unroll=("c_i",))
    kernel = verify_kernel(Kernel("rowmax", (x, y), apply_schedule(nest, schedule)))
    data = rng.standard_normal((6, 11)).astype(np.float32)
    (got,), (reference,) = run_both(kernel, [data, garbage((6,), np.float32, rng)])
    np.testing.assert_array_equal(got, data.max(axis=1) * 2)
    np.testing.assert_array_equal(reference, got)


def test_packing_blocks_a_dimension_and_pads_with_zeros():
    """B[k, n] blocked on n by 4: B_packed[n // 4, k, n % 4], zero beyond n."""
    data = np.arange(2 * 6, dtype=np.float32).reshape(2, 6)
    packed = pack_constant(KernelBuilder.constant("B", data), dim=1, tile=4)
    assert packed.shape == (2, 2, 4) and packed.name == "B_packed"
    np.testing.assert_array_equal(packed.data[1, 0], [4, 5, 0, 0])
    np.testing.assert_array_equal(packed.data[0, 1], data[1, :4])


def test_packed_loads_use_the_split_parts():
    nest, _ = _matmul_nest(2, 8, 3)
    schedule = Schedule(splits=(Split("n", 4),), order=("m", "n_o", "k", "n_i"),
                        packing=(Packing("B", 1, "n", 4),))
    assert "B_packed[n_o, k, n_i]" in print_stmt(apply_schedule(nest, schedule))


@pytest.mark.parametrize("schedule, message", [
    (Schedule(order=("m", "k", "n")), None),
    (Schedule(order=("m", "n")), r"order \['m', 'n'\] is not a permutation of the loops"),
    (Schedule(parallel="k"), "parallel loop 'k' must be a spatial loop outside the reduction"),
    (Schedule(vectorize="k"), "cannot vectorize reduce loop 'k'"),
    (Schedule(splits=(Split("n", 4),), order=("m", "n_i", "k", "n_o")),
     "loop 'n_i' comes before the outer part of its split"),
    (Schedule(splits=(Split("n", 4),), packing=(Packing("B", 1, "n", 8),)),
     "packing 'B' needs axis 'n' split by 8"),
])
def test_bad_schedules_are_reported(schedule, message):
    nest, _ = _matmul_nest(4, 8, 3)
    if message is None:
        apply_schedule(nest, schedule)
        return
    with pytest.raises(LoweringError, match=message):
        apply_schedule(nest, schedule)


def test_convolution_nest_with_three_reduce_axes():
    """A valid 3x3 convolution: accumulators over ``ow_i`` live across (ci, kh, kw)."""
    rng = np.random.default_rng(22)
    x_data = rng.standard_normal((3, 7, 9)).astype(np.float32)
    w_data = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    bias_data = rng.standard_normal(5).astype(np.float32)
    x = Buffer("x", f32, (3, 7, 9), role="input")
    y = Buffer("y", f32, (5, 5, 7), role="output")
    w = KernelBuilder.constant("w", w_data)
    bias = KernelBuilder.constant("bias", bias_data)
    oc, oh, ow, ci, kh, kw = (Var(name) for name in ("oc", "oh", "ow", "ci", "kh", "kw"))
    acc = Var("acc", f32)
    nest = LoopNest(
        axes=(Axis(oc, 5), Axis(oh, 5), Axis(ow, 7), Axis(ci, 3, True), Axis(kh, 3, True),
              Axis(kw, 3, True)),
        output=y, output_indices=(oc, oh, ow), value=x[ci, oh + kh, ow + kw] * w[oc, ci, kh, kw],
        init=lb.broadcast(0.0, 1, f32), epilogue=lb.max_(acc + bias[oc], 0.0), accumulator=acc)
    schedule = Schedule(splits=(Split("ow", 4),),
                        order=("oc", "oh", "ow_o", "ci", "kh", "kw", "ow_i"),
                        vectorize="ow_i", vector_width=4, parallel="oc")
    kernel = verify_kernel(Kernel("conv", (x, y), apply_schedule(nest, schedule)))
    assert "allocate acc: f32[4]" in print_stmt(kernel.body)
    (got,), (reference,) = run_both(kernel, [x_data, garbage((5, 5, 7), np.float32, rng)])
    windows = np.lib.stride_tricks.sliding_window_view(x_data, (3, 3), axis=(1, 2))
    expected = np.maximum(np.einsum("chwij,ocij->ohw", windows, w_data)
                          + bias_data[:, None, None], 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference, got, rtol=1e-6, atol=1e-6)
