"""Reference semantics of StridedSlice and Slice: take each axis's index range, reshape."""

from __future__ import annotations

import numpy as np

from lpjit.ops import slicing as ops
from lpjit.ops.slicing import SlicePlan
from lpjit.reference import evaluator
from lpjit.reference.shape import ints


def take_plan(x: np.ndarray, plan: SlicePlan) -> np.ndarray:
    """``x`` restricted to ``plan.ranges`` axis by axis, reshaped to ``plan.shape``."""
    for axis, selected in enumerate(plan.ranges):
        if selected != range(x.shape[axis]):
            x = np.take(x, np.array(selected, dtype=np.int64), axis=axis)
    return x.reshape(plan.shape)


@evaluator(ops.StridedSlice)
def _strided_slice(node: ops.StridedSlice, x: np.ndarray, begin: np.ndarray, end: np.ndarray,
                   strides: np.ndarray | None = None) -> np.ndarray:
    steps = ints(strides) if strides is not None else (1,) * np.size(begin)
    return take_plan(x, node.plan(x.shape, ints(begin), ints(end), steps))


@evaluator(ops.Slice)
def _slice(node: ops.Slice, x: np.ndarray, start: np.ndarray, stop: np.ndarray,
           step: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    plan = node.plan(x.shape, ints(start), ints(stop), ints(step),
                     None if axes is None else ints(axes))
    return take_plan(x, plan)
