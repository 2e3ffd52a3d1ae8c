"""Data-movement ops: Transpose, Concat, Split, VariadicSplit, Gather, Pad, DepthToSpace,
ShuffleChannels.  (StridedSlice and Slice live in ``lpjit.ops.slicing``.)

As in ``lpjit.ops.shape``, inputs that decide the output shape (permutation, axis, split
lengths, pads) must be Constants when the node is built, and each shape rule is a method over
plain Python values shared by ``infer`` and the reference evaluator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit.attributes import Attributes
from lpjit.graph import Node, Shape, TensorType, opclass
from lpjit.ops.common import normalize_axis, require_same_dtype
from lpjit.ops.registry import register
from lpjit.ops.shape import integer_input, single_integer_input

# --- Transpose -------------------------------------------------------------------------------


@register("Transpose", 1)
@opclass
class Transpose(Node):
    """Output axis i is input axis ``permutation[i]`` (input 1); an empty permutation reverses
    the axes."""

    arity: ClassVar = (2, 2)

    def infer(self) -> Sequence[TensorType]:
        permutation = integer_input(self, 1, "permutation", ranks=(1,))
        data = self.input_type(0)
        order = self.order(data.rank, permutation)
        return [TensorType(data.dtype, tuple(data.shape[p] for p in order))]

    def order(self, rank: int, permutation: Sequence[int]) -> tuple[int, ...]:
        """The permutation with the empty default resolved, checked to permute 0..rank-1."""
        if not permutation:
            return tuple(reversed(range(rank)))
        if sorted(permutation) != list(range(rank)):
            raise self.error(f"permutation {tuple(permutation)} is not a permutation of the "
                             f"{rank} input axes 0..{rank - 1}")
        return tuple(permutation)


# --- Concat / Split / VariadicSplit ----------------------------------------------------------


@register("Concat", 1)
@opclass
class Concat(Node):
    """Join the inputs (one element type, same rank >= 1) along ``axis`` (may be negative);
    every other dimension must match."""

    axis: int
    arity: ClassVar = (1, None)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"axis": a.int("axis")}

    def to_ir(self) -> dict[str, str]:
        return {"axis": str(self.axis)}

    def infer(self) -> Sequence[TensorType]:
        require_same_dtype(self)
        shapes = [v.shape for v in self.inputs]
        first = shapes[0]
        if not first:
            raise self.error("input 0 is a scalar; Concat needs inputs of rank >= 1")
        axis = normalize_axis(self, self.axis, len(first))
        for i, shape in enumerate(shapes[1:], start=1):
            if len(shape) != len(first) or any(
                    a != b for k, (a, b) in enumerate(zip(shape, first)) if k != axis):
                raise self.error(f"input {i} has shape {shape} and input 0 has shape {first}; "
                                 f"all dimensions but axis {axis} must match")
        out = list(first)
        out[axis] = sum(s[axis] for s in shapes)
        return [TensorType(self.input_type(0).dtype, tuple(out))]


@register("Split", 1)
@opclass
class Split(Node):
    """``num_splits`` equal parts along the axis of input 1 (a scalar): one output each."""

    num_splits: int
    arity: ClassVar = (2, 2)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"num_splits": a.int("num_splits")}

    def to_ir(self) -> dict[str, str]:
        return {"num_splits": str(self.num_splits)}

    def infer(self) -> Sequence[TensorType]:
        data = self.input_type(0)
        axis = integer_input(self, 1, "axis", ranks=(0,))[0]
        axis, lengths = self.lengths(data.shape, axis)
        return [TensorType(data.dtype, _with_dim(data.shape, axis, n)) for n in lengths]

    def lengths(self, shape: Shape, axis: int) -> tuple[int, tuple[int, ...]]:
        """The normalized axis and the length of every part."""
        if self.num_splits < 1:
            raise self.error(f"num_splits={self.num_splits} is invalid; expected >= 1")
        axis = normalize_axis(self, axis, len(shape))
        if shape[axis] % self.num_splits:
            raise self.error(f"dimension {shape[axis]} of axis {axis} (shape {shape}) is not "
                             f"divisible by num_splits={self.num_splits}")
        return axis, (shape[axis] // self.num_splits,) * self.num_splits


@register("VariadicSplit", 1)
@opclass
class VariadicSplit(Node):
    """Parts of the given lengths (input 2) along the axis of input 1; one length may be -1
    (the rest of the axis); lengths must add up to the dimension."""

    arity: ClassVar = (3, 3)

    def infer(self) -> Sequence[TensorType]:
        data = self.input_type(0)
        axis = single_integer_input(self, 1, "axis")
        split_lengths = integer_input(self, 2, "split lengths", ranks=(1,))
        axis, lengths = self.lengths(data.shape, axis, split_lengths)
        return [TensorType(data.dtype, _with_dim(data.shape, axis, n)) for n in lengths]

    def lengths(self, shape: Shape, axis: int, split_lengths: Sequence[int]
                ) -> tuple[int, tuple[int, ...]]:
        """The normalized axis and the length of every part, -1 resolved."""
        axis = normalize_axis(self, axis, len(shape))
        lengths = list(split_lengths)
        shown = tuple(split_lengths)
        if not lengths or lengths.count(-1) > 1 or any(n < -1 for n in lengths):
            raise self.error(f"split lengths {shown} are invalid; expected values >= 0 and at "
                             "most one -1")
        known = sum(n for n in lengths if n != -1)
        if -1 in lengths and known <= shape[axis]:
            lengths[lengths.index(-1)] = shape[axis] - known
        if sum(lengths) != shape[axis]:
            raise self.error(f"split lengths {shown} do not add up to dimension "
                             f"{shape[axis]} of axis {axis} (shape {shape})")
        return axis, tuple(lengths)


def _with_dim(shape: Shape, axis: int, size: int) -> Shape:
    return shape[:axis] + (size,) + shape[axis + 1:]


# --- Gather ----------------------------------------------------------------------------------


@register("Gather", 1)
@opclass
class Gather(Node):
    """Take slices of ``data`` along ``axis`` (input 2) at ``indices`` (input 1).

    Output shape: ``data[:axis] + indices[batch_dims:] + data[axis+1:]``; the first
    ``batch_dims`` dimensions of data and indices are batch dimensions taken together.
    An index outside ``[0, dim)`` gives zeros (OpenVINO CPU); Gather-8 first maps an index in
    ``[-dim, 0)`` to ``index + dim``.
    """

    arity: ClassVar = (3, 3)
    negative_indices: ClassVar[bool] = False

    @property
    def batch_dims_attribute(self) -> int:
        return 0

    def infer(self) -> Sequence[TensorType]:
        data, indices = self.input_type(0), self.input_type(1)
        if not indices.dtype.is_integer:
            raise self.error(f"indices have element type {indices.dtype}; expected an integer "
                             "type")
        axis = single_integer_input(self, 2, "axis")
        axis, batch_dims = self.axes(data.shape, indices.shape, axis)
        shape = data.shape[:axis] + indices.shape[batch_dims:] + data.shape[axis + 1:]
        return [TensorType(data.dtype, shape)]

    def axes(self, data: Shape, indices: Shape, axis: int) -> tuple[int, int]:
        """``(axis, batch_dims)`` normalized and checked."""
        axis = normalize_axis(self, axis, len(data))
        batch_dims = self.batch_dims_attribute
        if batch_dims < 0:
            batch_dims += len(indices)
        if not 0 <= batch_dims <= min(axis, len(indices)):
            raise self.error(f"batch_dims={self.batch_dims_attribute} is invalid for axis "
                             f"{axis} and indices of rank {len(indices)}; expected "
                             "0 <= batch_dims <= axis")
        if data[:batch_dims] != indices[:batch_dims]:
            raise self.error(f"the first {batch_dims} dimensions (batch_dims) of data {data} "
                             f"and indices {indices} differ")
        return axis, batch_dims


@register("Gather", 7)
@opclass
class GatherV7(Gather):
    """Gather-7: adds ``batch_dims`` (negative counts from the end of the indices' rank)."""

    batch_dims: int = 0

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"batch_dims": a.int("batch_dims", 0)}

    def to_ir(self) -> dict[str, str]:
        return {"batch_dims": str(self.batch_dims)}

    @property
    def batch_dims_attribute(self) -> int:
        return self.batch_dims


@register("Gather", 8)
@opclass
class GatherV8(GatherV7):
    """Gather-8: negative indices count from the end of the axis."""

    negative_indices: ClassVar[bool] = True


# --- Pad -------------------------------------------------------------------------------------

PAD_MODES = ("constant", "edge", "reflect", "symmetric")


@register("Pad", 1)
@opclass
class Pad(Node):
    """Pad every axis with ``pads_begin[i]`` / ``pads_end[i]`` elements (inputs 1, 2).

    Modes: ``constant`` (input 3, a scalar, default 0), ``edge`` (repeat the border),
    ``reflect`` (mirror without the border; pads < dim), ``symmetric`` (mirror with the
    border; pads <= dim).  A negative pad crops; the padding still mirrors the uncropped
    input.  OpenVINO accepts negative pads in Pad-1 too, so both versions share this rule.
    """

    pad_mode: str = "constant"
    arity: ClassVar = (3, 4)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"pad_mode": a.enum("pad_mode", PAD_MODES)}

    def to_ir(self) -> dict[str, str]:
        return {"pad_mode": self.pad_mode}

    def infer(self) -> Sequence[TensorType]:
        data = self.input_type(0)
        if self.pad_mode not in PAD_MODES:
            raise self.error(f"pad_mode {self.pad_mode} is invalid; expected "
                             f"{', '.join(PAD_MODES)}")
        if self.pad_mode == "constant" and len(self.inputs) == 4:
            value = self.input_type(3)
            if value.rank != 0 or value.dtype != data.dtype:
                raise self.error(f"pad value is {value}; expected a {data.dtype} scalar")
        begin = integer_input(self, 1, "pads begin", ranks=(1,))
        end = integer_input(self, 2, "pads end", ranks=(1,))
        return [TensorType(data.dtype, self.output_shape(data.shape, begin, end))]

    def output_shape(self, shape: Shape, begin: Sequence[int], end: Sequence[int]) -> Shape:
        for name, pads in (("pads begin", begin), ("pads end", end)):
            if len(pads) != len(shape):
                raise self.error(f"{name} has {len(pads)} values; expected one per input "
                                 f"dimension ({len(shape)})")
        out = []
        for axis, (d, b, e) in enumerate(zip(shape, begin, end)):
            self._check_mirror(axis, d, b, e)
            if b + d + e < 0:
                raise self.error(f"pads {b} and {e} crop axis {axis} of size {d} below zero")
            out.append(b + d + e)
        return tuple(out)

    def _check_mirror(self, axis: int, d: int, b: int, e: int) -> None:
        """edge needs a non-empty axis; reflect needs pads < dim; symmetric pads <= dim."""
        pad = max(b, e)
        if self.pad_mode == "constant" or pad <= 0:
            return
        if self.pad_mode == "edge":
            valid, expected = d >= 1, "a non-empty axis"
        elif self.pad_mode == "reflect":
            valid, expected = pad < d, f"pads <= {d - 1}"
        else:
            valid, expected = pad <= d, f"pads <= {d}"
        if not valid:
            raise self.error(f"{self.pad_mode} padding of axis {axis} (size {d}) by "
                             f"({b}, {e}) is invalid; expected {expected}")


@register("Pad", 12)
@opclass
class PadV12(Pad):
    """Pad-12: negative pads crop (the same rule as Pad-1 in OpenVINO)."""


# --- DepthToSpace / ShuffleChannels ----------------------------------------------------------


@register("DepthToSpace", 1)
@opclass
class DepthToSpace(Node):
    """Move channel blocks into spatial blocks: ``[N, C, D1..Dk]`` to
    ``[N, C / bs^k, D1*bs, .., Dk*bs]``.

    ``blocks_first``: channels are read as ``[bs, .., bs, C']``; ``depth_first``: as
    ``[C', bs, .., bs]``.
    """

    block_size: int = 1
    mode: str = "blocks_first"
    arity: ClassVar = (1, 1)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"block_size": a.int("block_size", 1),
                "mode": a.enum("mode", ("blocks_first", "depth_first"))}

    def to_ir(self) -> dict[str, str]:
        return {"block_size": str(self.block_size), "mode": self.mode}

    def infer(self) -> Sequence[TensorType]:
        data = self.input_type(0)
        if self.block_size < 1:
            raise self.error(f"block_size={self.block_size} is invalid; expected >= 1")
        if self.mode not in ("blocks_first", "depth_first"):
            raise self.error(f"mode {self.mode} is invalid; expected blocks_first or "
                             "depth_first")
        if data.rank < 3:
            raise self.error(f"input shape {data.shape} has rank {data.rank}; expected >= 3")
        n, c, *spatial = data.shape
        blocks = self.block_size ** len(spatial)
        if c % blocks:
            raise self.error(f"{c} channels are not divisible by block_size^{len(spatial)} "
                             f"= {blocks}")
        shape = (n, c // blocks, *(d * self.block_size for d in spatial))
        return [TensorType(data.dtype, shape)]


@register("ShuffleChannels", 1)
@opclass
class ShuffleChannels(Node):
    """Split ``axis`` into ``[group, dim / group]`` and transpose that pair."""

    axis: int = 1
    group: int = 1
    arity: ClassVar = (1, 1)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"axis": a.int("axis", 1), "group": a.int("group", 1)}

    def to_ir(self) -> dict[str, str]:
        return {"axis": str(self.axis), "group": str(self.group)}

    def infer(self) -> Sequence[TensorType]:
        data = self.input_type(0)
        axis = normalize_axis(self, self.axis, data.rank)
        if self.group < 1 or data.shape[axis] % self.group:
            raise self.error(f"group={self.group} is invalid for dimension "
                             f"{data.shape[axis]} of axis {axis}; expected a divisor >= 1")
        return [TensorType(data.dtype, data.shape)]

    def grouped_shape(self, shape: Shape) -> Shape:
        """``shape`` as ``[outer, group, dim / group, inner]`` around the axis."""
        axis = normalize_axis(self, self.axis, len(shape))
        return (math.prod(shape[:axis]), self.group, shape[axis] // self.group,
                math.prod(shape[axis + 1:]))
