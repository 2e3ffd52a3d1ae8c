"""Reduce* lowered to loops, on numba and LLVM, against the reference executor.

Float tolerances: rtol 1e-4 / atol 1e-5 (float32 accumulation against the reference's float64;
the longest reduction here has 185 terms).  Each case covers one kernel shape: the innermost
axis reduced (vector accumulators, flattened trailing axes, scalar tail), the innermost axis
kept (vectorized across groups), reductions over non-adjacent axes, negative axes, keep_dims,
empty axes, a rank-1 input reduced to a scalar, and integer data.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
from lowered import check_lowered
from openvino import opset1, opset4

from lowering.loop_ir import For
from lowering.traversal import walk

pytestmark = pytest.mark.oracle

SHAPE = (2, 3, 5, 37)


def reduce_model(make, axes, keep_dims: bool, shape=SHAPE, dtype=np.float32) -> ov.Model:
    x = opset1.parameter(list(shape), dtype, name="x")
    if len(axes):
        axes_node = opset1.constant(np.array(axes, np.int64))
    else:
        axes_node = ov.op.Constant(ov.Type.i64, ov.Shape([0]), [])
    return ov.Model([make(x, axes_node, keep_dims)], [x], "reduce")


def loop_kinds(program) -> set[str]:
    return {n.kind.name for step in program.steps for n in walk(step.kernel.body)
            if isinstance(n, For)}


@pytest.mark.parametrize("make, axes, keep_dims", [
    (opset1.reduce_sum, [3], False),            # innermost: vector accumulators + tail
    (opset1.reduce_mean, [1], True),            # innermost kept: vectorized over groups
    (opset1.reduce_max, [-1, -2], False),       # negative axes, trailing run flattened
    (opset1.reduce_min, [0, 2], True),          # non-adjacent axes
    (opset4.reduce_l2, [0, 1, 2, 3], False),    # everything: one group
    (opset1.reduce_mean, [], True),             # empty axes: each element alone
], ids=["sum-last", "mean-axis1", "max-negative", "min-0-2", "l2-all", "mean-none"])
def test_float_reductions(tmp_path, make, axes, keep_dims):
    program = check_lowered(reduce_model(make, axes, keep_dims), tmp_path).program
    kept_groups = len(axes) < len(SHAPE)
    assert ("parallel" in loop_kinds(program)) == kept_groups


def test_reduce_prod_and_l2_over_no_axes(tmp_path):
    """ReduceProd runs a scalar loop (no lane product); ReduceL2 over no axes is ``|x|``."""
    x = opset1.parameter([3, 4, 6], np.float32, name="x")
    prod = opset1.reduce_prod(x, opset1.constant(np.array([2], np.int64)), False)
    empty = ov.op.Constant(ov.Type.i64, ov.Shape([0]), [])
    model = ov.Model([prod, opset4.reduce_l2(x, empty, False)], [x], "two")
    check_lowered(model, tmp_path, inputs=[np.random.default_rng(1).uniform(
        0.5, 1.5, (3, 4, 6)).astype(np.float32)])


def test_rank1_to_scalar_single_thread(tmp_path):
    """A rank-0 output; ``threads=1`` leaves every loop serial."""
    model = reduce_model(opset1.reduce_sum, [0], False, shape=(41,))
    program = check_lowered(model, tmp_path, threads=1).program
    assert program.outputs[0].shape == ()
    assert "parallel" not in loop_kinds(program)


def test_integer_sum_and_mean(tmp_path):
    """Integer sums wrap in the element type; means accumulate in i64 and truncate toward 0."""
    x = opset1.parameter([4, 9, 20], np.int32, name="x")
    axes = opset1.constant(np.array([2], np.int64))
    model = ov.Model([opset1.reduce_sum(x, axes, False), opset1.reduce_mean(x, axes, True)],
                     [x], "ints")
    data = np.random.default_rng(2).integers(-(2**30), 2**30, (4, 9, 20)).astype(np.int32)
    check_lowered(model, tmp_path, inputs=[data])
