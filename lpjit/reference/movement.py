"""Reference semantics of the data-movement ops (Transpose, Concat, Split, VariadicSplit,
Gather, Pad, DepthToSpace, ShuffleChannels)."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from lpjit.ops import movement as ops
from lpjit.reference import evaluator
from lpjit.reference.shape import ints


@evaluator(ops.Transpose)
def _transpose(node: ops.Transpose, x: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    return np.transpose(x, node.order(x.ndim, ints(permutation)))


@evaluator(ops.Concat)
def _concat(node: ops.Concat, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=node.axis)


def _split_at(x: np.ndarray, axis: int, lengths: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    offsets = list(itertools.accumulate(lengths))[:-1]
    return tuple(np.split(x, offsets, axis=axis))


@evaluator(ops.Split)
def _split(node: ops.Split, x: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, ...]:
    return _split_at(x, *node.lengths(x.shape, ints(axis)[0]))


@evaluator(ops.VariadicSplit)
def _variadic_split(node: ops.VariadicSplit, x: np.ndarray, axis: np.ndarray,
                    lengths: np.ndarray) -> tuple[np.ndarray, ...]:
    return _split_at(x, *node.lengths(x.shape, ints(axis)[0], ints(lengths)))


@evaluator(ops.Gather, ops.GatherV7, ops.GatherV8)
def _gather(node: ops.Gather, data: np.ndarray, indices: np.ndarray, axis: np.ndarray
            ) -> np.ndarray:
    """Gather as ``[B, outer, dim, inner]`` indexed by ``[B, M]``; invalid indices give 0."""
    axis, batch_dims = node.axes(data.shape, indices.shape, ints(axis)[0])
    shape = data.shape[:axis] + indices.shape[batch_dims:] + data.shape[axis + 1:]
    dim = data.shape[axis]
    index = indices.astype(np.int64)
    if node.negative_indices:
        index = np.where(index < 0, index + dim, index)
    valid = (index >= 0) & (index < dim)
    if dim == 0 or not valid.any():
        return np.zeros(shape, data.dtype)
    batch = math.prod(data.shape[:batch_dims])
    outer = math.prod(data.shape[batch_dims:axis])
    inner = math.prod(data.shape[axis + 1:])
    table = data.reshape(batch, outer, dim, inner)
    index = np.where(valid, index, 0).reshape(batch, 1, -1)
    taken = table[np.arange(batch)[:, None, None], np.arange(outer)[None, :, None], index]
    taken = np.where(valid.reshape(batch, 1, -1, 1), taken, np.zeros((), data.dtype))
    return taken.reshape(shape)


def _pad_source(mode: str, dim: int, begin: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output position along an axis: the input index it reads and whether it is
    inside the input (constant mode fills the others)."""
    i = np.arange(size, dtype=np.int64) - begin
    valid = (i >= 0) & (i < dim)
    if mode == "reflect":
        i = np.where(i < 0, -i, np.where(i >= dim, 2 * (dim - 1) - i, i))
    elif mode == "symmetric":
        i = np.where(i < 0, -i - 1, np.where(i >= dim, 2 * dim - 1 - i, i))
    return np.clip(i, 0, dim - 1), valid


@evaluator(ops.Pad, ops.PadV12)
def _pad(node: ops.Pad, x: np.ndarray, begin: np.ndarray, end: np.ndarray,
         value: np.ndarray | None = None) -> np.ndarray:
    pads_begin = ints(begin)
    shape = node.output_shape(x.shape, pads_begin, ints(end))
    fill = value if node.pad_mode == "constant" and value is not None else 0
    if x.size == 0 or math.prod(shape) == 0:
        return np.full(shape, fill, x.dtype)
    sources = [_pad_source(node.pad_mode, d, b, n)
               for d, b, n in zip(x.shape, pads_begin, shape)]
    out = x[np.ix_(*(index for index, _ in sources))]
    if node.pad_mode == "constant" and out.ndim:
        rank = len(shape)
        inside = functools.reduce(np.logical_and, (
            valid.reshape([-1 if a == axis else 1 for a in range(rank)])
            for axis, (_, valid) in enumerate(sources)))
        out = np.where(inside, out, np.asarray(fill, x.dtype))
    return out


@evaluator(ops.DepthToSpace)
def _depth_to_space(node: ops.DepthToSpace, x: np.ndarray) -> np.ndarray:
    """Split channels into ``k`` block axes and C', interleave each block axis after its
    spatial axis."""
    n, c, *spatial = x.shape
    k, bs = len(spatial), node.block_size
    depth = c // bs**k
    if node.mode == "blocks_first":
        split = x.reshape(n, *[bs] * k, depth, *spatial)
        order = [0, k + 1] + [a for i in range(k) for a in (k + 2 + i, 1 + i)]
    else:
        split = x.reshape(n, depth, *[bs] * k, *spatial)
        order = [0, 1] + [a for i in range(k) for a in (k + 2 + i, 2 + i)]
    return split.transpose(order).reshape(n, depth, *(d * bs for d in spatial))


@evaluator(ops.ShuffleChannels)
def _shuffle_channels(node: ops.ShuffleChannels, x: np.ndarray) -> np.ndarray:
    return x.reshape(node.grouped_shape(x.shape)).transpose(0, 2, 1, 3).reshape(x.shape)
