"""Reference semantics of ReduceMean/Sum/Max/Min/Prod/L2.

Float sums, means, products and L2 norms accumulate in float64 and are rounded once to the
output type (closer to exact than OpenVINO's float32 accumulation, and within its rounding
for the sizes IRs use).  Integer sums and products wrap in the element type; an integer mean
truncates toward zero, as OpenVINO's ``sum / count`` in the element type does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lpjit.ops import reductions as red
from lpjit.reference import evaluator
from lpjit.reference.activations import compute_type

Axes = tuple[int, ...]


def _accumulator(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if x.dtype.kind == "f" else np.dtype(np.int64)


def reduce_sum(x: np.ndarray, axes: Axes) -> np.ndarray:
    return np.sum(x, axis=axes, dtype=_accumulator(x), keepdims=True)


def reduce_mean(x: np.ndarray, axes: Axes) -> np.ndarray:
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    total = reduce_sum(x, axes)
    if x.dtype.kind == "f":
        return total / count
    return np.trunc(total / count).astype(np.int64)


def reduce_prod(x: np.ndarray, axes: Axes) -> np.ndarray:
    return np.prod(x, axis=axes, dtype=_accumulator(x), keepdims=True)


def reduce_l2(x: np.ndarray, axes: Axes) -> np.ndarray:
    x64 = x.astype(np.float64)
    return np.sqrt(np.sum(x64 * x64, axis=axes, keepdims=True))


_REDUCE: dict[type, Callable[[np.ndarray, Axes], np.ndarray]] = {
    red.ReduceSum: reduce_sum,
    red.ReduceMean: reduce_mean,
    red.ReduceProd: reduce_prod,
    red.ReduceL2: reduce_l2,
    red.ReduceMax: lambda x, axes: np.max(x, axis=axes, keepdims=True),
    red.ReduceMin: lambda x, axes: np.min(x, axis=axes, keepdims=True),
}


@evaluator(*_REDUCE)
def _reduce(node: red.Reduce, x: np.ndarray, axes_input: np.ndarray) -> np.ndarray:
    """Reduce with kept dims, then drop the reduced axes unless ``keep_dims``.

    Empty axes reduce each element alone: the identity, except ReduceL2 which gives ``|x|``.
    """
    axes = node.axes
    x = compute_type(x)
    with np.errstate(over="ignore", invalid="ignore"):
        y = _REDUCE[type(node)](x, axes)
    if x.dtype.kind != "f":
        y = y.astype(x.dtype)  # wrap modulo 2^N, as the element type does
    return y if node.keep_dims else np.squeeze(y, axis=axes)
