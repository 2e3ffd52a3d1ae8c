"""MaxPool-1/8/14 and AvgPool-1/14 lowered to loops, on numba and LLVM, against the reference.

Values: rtol 1e-4 / atol 1e-5 (AvgPool sums in float32 where the reference uses float64);
indices and integer data: exact.  The geometries are the awkward ones: ceil rounding whose last
windows lie wholly in the end padding (MaxPool gives the lowest float, AvgPool without pads
0/0 = NaN), asymmetric pads, auto_pad, dilations, ceil_torch, 1D and 3D, batch > 1, and an
input wide enough for a vectorized interior between the scalar borders.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
from lowered import AVX2, check_lowered
from openvino import opset1, opset8, opset14

from lowering.loop_ir import Allocate, For, Shuffle
from lowering.traversal import walk

pytestmark = pytest.mark.oracle


def parameter(shape, dtype=np.float32) -> ov.Node:
    return opset1.parameter(list(shape), dtype, name="x")


def model(outputs, x) -> ov.Model:
    return ov.Model([o if isinstance(o, ov.Output) else o.output(0) for o in outputs], [x])


def test_v1_pools_ceil_windows_in_the_end_padding(tmp_path):
    """Kernel (2, 3), stride 2, pads (0, 1)/(1, 1), ceil: MaxPool-1, AvgPool-1 with the pads
    counted (divisor 6) and excluded (divisor = in-bounds taps)."""
    x = parameter((2, 3, 8, 7))
    geometry = ((2, 2), (0, 1), (1, 1), (2, 3))
    outputs = [opset1.max_pool(x, *geometry, rounding_type="ceil"),
               opset1.avg_pool(x, *geometry, False, rounding_type="ceil"),
               opset1.avg_pool(x, *geometry, True, rounding_type="ceil")]
    check_lowered(model(outputs, x), tmp_path)


def test_avg_pool_without_pads_divides_by_in_bounds_taps(tmp_path):
    """No pads: a ceil-mode window past the end divides by its in-bounds taps, and one with
    none (stride 3 > kernel: the third window starts past the end of the rows and of the
    columns) gives NaN, as the reference (and OpenVINO's CPU plugin)."""
    x = parameter((1, 2, 5, 6))
    pool = opset1.avg_pool(x, (3, 3), (0, 0), (0, 0), (1, 2), False, rounding_type="ceil")
    (values,) = check_lowered(model([pool], x), tmp_path).outputs
    outside = np.zeros((3, 3), bool)
    outside[2, :] = outside[:, 2] = True
    np.testing.assert_array_equal(np.isnan(values), np.broadcast_to(outside, values.shape))


@pytest.mark.parametrize("opset, rounding, dilations, axis, index_type, auto_pad", [
    (opset8, "ceil", (2, 1), 2, "i32", "explicit"),
    (opset8, "floor", (1, 2), 1, "i64", "same_upper"),
    (opset14, "ceil_torch", (1, 1), -1, "i32", "explicit"),
    (opset14, "ceil", (1, 1), 0, "i64", "same_lower"),
])
def test_max_pool_values_and_indices(tmp_path, opset, rounding, dilations, axis, index_type,
                                     auto_pad):
    """The first maximum's position, flattened from dim ``axis`` on."""
    x = parameter((2, 3, 7, 6))
    pool = opset.max_pool(x, (2, 1), dilations, (1, 0), (1, 1), (3, 2), rounding_type=rounding,
                          auto_pad=auto_pad, index_element_type=index_type, axis=axis)
    check_lowered(model([pool.output(0), pool.output(1)], x), tmp_path)


def test_pools_1d_and_3d(tmp_path):
    x1 = parameter((2, 3, 11))
    pool1 = opset8.max_pool(x1, (3,), (2,), (1,), (2,), (4,), rounding_type="ceil", axis=0)
    avg1 = opset1.avg_pool(x1, (3,), (1,), (2,), (4,), False, rounding_type="ceil")
    check_lowered(ov.Model([pool1.output(0), pool1.output(1), avg1.output(0)], [x1]),
                  tmp_path / "1d")
    x3 = parameter((1, 2, 5, 4, 6))
    pool3 = opset8.max_pool(x3, (1, 2, 2), (1, 1, 2), (1, 0, 1), (0, 1, 1), (2, 1, 3),
                            rounding_type="ceil", axis=1)
    avg3 = opset14.avg_pool(x3, (1, 2, 2), (1, 0, 1), (0, 0, 1), (2, 1, 3), True,
                            rounding_type="ceil_torch")
    check_lowered(ov.Model([pool3.output(0), pool3.output(1), avg3.output(0)], [x3]),
                  tmp_path / "3d")


def test_wide_rows_row_scheme_and_fused_fake_quantize(tmp_path):
    """Stride 2 over 41 columns: each kernel combines its rows into a stack scratch, then
    reads them with dense vector loads (no bounds test along the row).  The FakeQuantize
    after AvgPool runs in the pool's kernel; MaxPool-8's unused indices are not computed."""
    x = parameter((1, 3, 9, 41))
    avg = opset1.avg_pool(x, (2, 2), (1, 1), (1, 1), (3, 3), True)
    limits = [opset1.constant(np.float32(v)) for v in (-1.0, 1.0, -1.0, 1.0)]
    fq = opset1.fake_quantize(avg, *limits, 255)
    pool = opset8.max_pool(x, (1, 1), (1, 1), (1, 1), (1, 1), (3, 3))
    program = check_lowered(model([fq, pool.output(0)], x), tmp_path).program
    assert len(program.steps) == 2
    kinds = {n.kind.name for s in program.steps for n in walk(s.kernel.body)
             if isinstance(n, For)}
    assert "parallel" in kinds
    assert all(any(isinstance(n, Allocate) for n in walk(s.kernel.body))
               for s in program.steps)
    assert len(program.outputs) == 2


@pytest.mark.parametrize("target", [None, AVX2], ids=["host", "avx2"])
def test_u8_stem_max_pool_rows(tmp_path, target):
    """ResNet's stem pool (3x3, stride 2, pad 1) on u8 rows of 70 (one 64-lane block and an
    overlapping one on AVX-512) and an odd height; the last-axis taps are shuffles of dense
    loads of the row scratch."""
    x = parameter((1, 3, 21, 70), np.uint8)
    pool = opset1.max_pool(x, (2, 2), (1, 1), (1, 1), (3, 3))
    values = np.random.default_rng(7).integers(0, 256, (1, 3, 21, 70)).astype(np.uint8)
    program = check_lowered(model([pool], x), tmp_path, inputs=[values], threads=1,
                            target=target).program
    (step,) = program.steps
    assert any(isinstance(n, Shuffle) for n in walk(step.kernel.body))


def test_rows_in_overlapping_chunks(tmp_path):
    """40 rows of 300 float columns exceed one chunk of scratch: three chunks of 14 rows, the
    last overlapping the second; exclude-pad AvgPool divides each lane by its own count."""
    x = parameter((1, 2, 40, 300))
    max_pool = opset1.max_pool(x, (1, 1), (1, 1), (1, 1), (3, 3))
    avg_pool = opset1.avg_pool(x, (1, 1), (1, 1), (1, 1), (3, 3), True)
    check_lowered(model([max_pool, avg_pool], x), tmp_path, threads=2)


@pytest.mark.parametrize("target", [None, AVX2], ids=["host", "avx2"])
def test_strided_blocks_with_indices(tmp_path, target):
    """Stride 2 over 61 columns: blocks of outputs read by two dense loads and a shuffle,
    their indices (flattened from axis 0) a ramp of stride 2.  Stride 3 reads its interior
    with gathers instead.  ``threads=1`` keeps every loop serial.  AVX2 blocks are 8 wide."""
    x = parameter((2, 2, 5, 61))
    pool = opset8.max_pool(x, (1, 2), (1, 1), (0, 1), (1, 0), (2, 3), axis=0)
    avg = opset1.avg_pool(x, (1, 3), (0, 1), (1, 0), (2, 3), True)
    program = check_lowered(model([pool.output(0), pool.output(1), avg], x), tmp_path,
                            threads=1, target=target).program
    shuffles = [[n for n in walk(s.kernel.body) if isinstance(n, Shuffle)]
                for s in program.steps]
    assert [len(found) > 0 for found in shuffles] == [True, False]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_pools_on_integer_data(tmp_path, dtype):
    """Integer MaxPool pads with the type's minimum; integer AvgPool rounds half to even."""
    x = parameter((1, 2, 5, 6), dtype)
    max_pool = opset8.max_pool(x, (2, 2), (1, 1), (0, 0), (1, 1), (2, 2), rounding_type="ceil")
    avg_pool = opset1.avg_pool(x, (1, 2), (0, 1), (0, 1), (2, 2), True)
    low = 0 if dtype == np.uint8 else -50
    values = np.random.default_rng(6).integers(low, 100, (1, 2, 5, 6)).astype(dtype)
    outputs = [max_pool.output(0), max_pool.output(1), avg_pool.output(0)]
    check_lowered(ov.Model(outputs, [x]), tmp_path, inputs=[values])
