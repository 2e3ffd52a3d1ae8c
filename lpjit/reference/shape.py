"""Reference semantics of the shape ops (Reshape, Squeeze, Unsqueeze, ShapeOf, Broadcast,
Tile).  Shape inputs are read from the runtime arrays, through the op's own shape rule."""

from __future__ import annotations

import numpy as np

from lpjit.ops import shape as ops
from lpjit.reference import evaluator


def ints(array: np.ndarray) -> tuple[int, ...]:
    """An integer tensor's values as Python ints, flattened."""
    return tuple(int(v) for v in np.asarray(array).reshape(-1))


@evaluator(ops.Reshape)
def _reshape(node: ops.Reshape, x: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    return x.reshape(node.output_shape(x.shape, ints(pattern), np.ndim(pattern) == 0))


@evaluator(ops.Squeeze, ops.SqueezeV15)
def _squeeze(node: ops.Squeeze, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    return x.reshape(node.output_shape(x.shape, () if axes is None else ints(axes)))


@evaluator(ops.Unsqueeze)
def _unsqueeze(node: ops.Unsqueeze, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return x.reshape(node.output_shape(x.shape, ints(axes)))


@evaluator(ops.ShapeOf, ops.ShapeOfV3)
def _shape_of(node: ops.ShapeOf, x: np.ndarray) -> np.ndarray:
    return np.array(x.shape, dtype=node.result_type.numpy)


@evaluator(ops.Broadcast, ops.BroadcastV3)
def _broadcast(node: ops.Broadcast, x: np.ndarray, target: np.ndarray,
               mapping: np.ndarray | None = None) -> np.ndarray:
    """Explicit mode: place data axis i at target axis mapping[i], then numpy-broadcast."""
    axes = ints(mapping) if node.mode == "explicit" and mapping is not None else ()
    shape = node.output_shape(x.shape, ints(target), axes)
    expanded = x.reshape(node.expanded_shape(x.shape, ints(target), axes))
    return np.array(np.broadcast_to(expanded, shape))


@evaluator(ops.Tile)
def _tile(node: ops.Tile, x: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    reps = ints(repeats)
    node.output_shape(x.shape, reps)
    return np.tile(x, reps)
