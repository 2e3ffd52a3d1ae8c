"""Slicing ops: StridedSlice-1 and Slice-8.

Both reduce to one ``range`` of selected indices per input axis (``slice_range``, clamped the
way OpenVINO clamps), plus, for StridedSlice, a final reshape that inserts new axes and drops
shrunk ones.  ``plan`` methods compute that from plain Python values; ``infer`` calls them on
the constant begin/end/stride inputs and the reference evaluator on the runtime arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from lpjit.attributes import Attributes
from lpjit.graph import Node, Shape, TensorType, opclass
from lpjit.ops.common import normalize_axes
from lpjit.ops.registry import register
from lpjit.ops.shape import integer_input


def slice_range(dim: int, start: int, stop: int, step: int) -> range:
    """Indices ``start, start+step, ..`` before ``stop`` along an axis of size ``dim``.

    Negative start/stop count from the end.  For step > 0 both clamp to ``[0, dim]``; for
    step < 0 start clamps to ``[0, dim-1]`` and stop to ``[-1, dim]`` (OpenVINO: a reverse
    start below ``-dim`` still selects element 0, unlike Python).
    """
    assert step != 0
    start = start + dim if start < 0 else start
    stop = stop + dim if stop < 0 else stop
    if step > 0:
        return range(min(max(start, 0), dim), min(max(stop, 0), dim), step)
    return range(min(max(start, 0), dim - 1), min(max(stop, -1), dim), step)


@attrs.frozen
class SlicePlan:
    """What a slice selects: one index range per input axis, then a reshape to ``shape``."""

    ranges: tuple[range, ...]
    shape: Shape


def _bit(mask: Sequence[int], i: int) -> bool:
    """Entry i of a StridedSlice mask is set when it equals 1 (missing entries are 0)."""
    return i < len(mask) and mask[i] == 1


def _mask_text(mask: Sequence[int]) -> str:
    return ", ".join(str(m) for m in mask)


@register("StridedSlice", 1)
@opclass
class StridedSlice(Node):
    """Numpy-style basic slicing ``data[b0:e0:s0, b1:e1:s1, ...]`` from begin/end/stride
    inputs (1, 2, 3; stride defaults to 1s).

    Entry i of the begin/end/stride vectors applies to the next input axis unless a mask says:
    ``begin_mask``/``end_mask`` 1 = ignore begin/end (take the whole side);
    ``new_axis_mask`` 1 = insert a size-1 axis (consumes no input axis);
    ``shrink_axis_mask`` 1 = take the single element at begin and drop the axis;
    ``ellipsis_mask`` 1 (at most one) = as many whole axes as the other entries leave.
    Input axes left over at the end are taken whole.
    """

    begin_mask: tuple[int, ...] = attrs.field(converter=tuple)
    end_mask: tuple[int, ...] = attrs.field(converter=tuple)
    new_axis_mask: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    shrink_axis_mask: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    ellipsis_mask: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    arity: ClassVar = (3, 4)

    MASKS: ClassVar = ("begin_mask", "end_mask", "new_axis_mask", "shrink_axis_mask",
                       "ellipsis_mask")

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        required = ("begin_mask", "end_mask")
        return {name: a.ints(name) if name in required else a.ints(name, ())
                for name in cls.MASKS}

    def to_ir(self) -> dict[str, str]:
        return {name: _mask_text(getattr(self, name)) for name in self.MASKS}

    def infer(self) -> Sequence[TensorType]:
        begin = integer_input(self, 1, "begin", ranks=(1,))
        end = integer_input(self, 2, "end", ranks=(1,))
        strides = (1,) * len(begin)
        if len(self.inputs) == 4:
            strides = integer_input(self, 3, "strides", ranks=(1,))
        data = self.input_type(0)
        return [TensorType(data.dtype, self.plan(data.shape, begin, end, strides).shape)]

    def plan(self, shape: Shape, begin: Sequence[int], end: Sequence[int],
             strides: Sequence[int]) -> SlicePlan:
        """The ranges and output shape for ``data`` of ``shape`` (OpenVINO's rules)."""
        n = len(begin)
        if len(end) != n or len(strides) != n:
            raise self.error(f"begin, end and strides have {n}, {len(end)} and {len(strides)} "
                             "values; expected the same number")
        ellipses = [i for i in range(n) if _bit(self.ellipsis_mask, i)]
        if len(ellipses) > 1:
            raise self.error(f"ellipsis_mask ({_mask_text(self.ellipsis_mask)}) sets "
                             f"{len(ellipses)} entries; at most one is allowed")
        new_axes = [i for i in range(n) if _bit(self.new_axis_mask, i)]
        if not ellipses and n - len(new_axes) > len(shape):
            raise self.error(f"{n} begin/end entries ({len(new_axes)} new axes) address more "
                             f"axes than the input shape {shape} has")
        ranges: list[range] = []
        out: list[int] = []
        for i in range(n):
            if _bit(self.ellipsis_mask, i):
                real_after = sum(1 for j in range(i + 1, n) if not _bit(self.new_axis_mask, j))
                hidden = len(shape) - len(ranges) - real_after
                if hidden < 0:
                    raise self.error(f"begin/end entries address more axes than the input "
                                     f"shape {shape} has")
                for d in shape[len(ranges):len(ranges) + hidden]:
                    ranges.append(range(d))
                    out.append(d)
            elif _bit(self.new_axis_mask, i):
                out.append(1)
            else:
                ranges.append(self._axis_range(i, shape, len(ranges), begin, end, strides))
                if not _bit(self.shrink_axis_mask, i):
                    out.append(len(ranges[-1]))
        rest = shape[len(ranges):]
        ranges.extend(range(d) for d in rest)
        return SlicePlan(tuple(ranges), (*out, *rest))

    def _axis_range(self, i: int, shape: Shape, axis: int, begin: Sequence[int],
                    end: Sequence[int], strides: Sequence[int]) -> range:
        """The range entry i selects on input ``axis``."""
        if axis >= len(shape):
            raise self.error(f"begin/end entry {i} addresses axis {axis}, but the input "
                             f"shape {shape} has rank {len(shape)}")
        d, step = shape[axis], strides[i]
        if _bit(self.shrink_axis_mask, i):
            index = 0 if _bit(self.begin_mask, i) else begin[i]
            if not -d <= index < d:
                raise self.error(f"shrink_axis_mask entry {i}: begin {index} is out of range "
                                 f"for axis {axis} of size {d}")
            index = index + d if index < 0 else index
            return range(index, index + 1)
        if step == 0:
            raise self.error(f"stride {i} is 0; expected a non-zero stride")
        start = (0 if step > 0 else d) if _bit(self.begin_mask, i) else begin[i]
        stop = (d if step > 0 else -d - 1) if _bit(self.end_mask, i) else end[i]
        return slice_range(d, start, stop, step)


@register("Slice", 8)
@opclass
class Slice(Node):
    """``data[start:stop:step]`` on the axes of input 4 (default 0, 1, ..), from start, stop
    and step inputs (1, 2, 3) of equal length; other axes are taken whole."""

    arity: ClassVar = (4, 5)

    def infer(self) -> Sequence[TensorType]:
        start = integer_input(self, 1, "start", ranks=(1,))
        stop = integer_input(self, 2, "stop", ranks=(1,))
        step = integer_input(self, 3, "step", ranks=(1,))
        axes = integer_input(self, 4, "axes", ranks=(1,)) if len(self.inputs) == 5 else None
        data = self.input_type(0)
        return [TensorType(data.dtype, self.plan(data.shape, start, stop, step, axes).shape)]

    def plan(self, shape: Shape, start: Sequence[int], stop: Sequence[int],
             step: Sequence[int], axes: Sequence[int] | None = None) -> SlicePlan:
        """The ranges and output shape for ``data`` of ``shape``."""
        n = len(start)
        axes = tuple(range(n)) if axes is None else tuple(axes)
        if not len(stop) == len(step) == len(axes) == n:
            raise self.error(f"start, stop, step and axes have {n}, {len(stop)}, {len(step)} "
                             f"and {len(axes)} values; expected the same number")
        ranges = [range(d) for d in shape]
        for axis, begin, end, stride in zip(normalize_axes(self, axes, len(shape)),
                                            start, stop, step, strict=True):
            if stride == 0:
                raise self.error(f"step for axis {axis} is 0; expected a non-zero step")
            ranges[axis] = slice_range(shape[axis], begin, end, stride)
        return SlicePlan(tuple(ranges), tuple(len(r) for r in ranges))
