"""Shape ops: Reshape, Squeeze, Unsqueeze, ShapeOf, Broadcast and Tile.

Inputs that decide the output shape (target shape, axes, repeats) must be Constants when the
node is built; the reader folds shape subgraphs (ShapeOf -> Gather -> Concat) into Constants
first.  Each op's shape rule is a method over plain Python values (``output_shape``), used by
``infer`` on the constants and by the reference evaluator on the runtime arrays, so the two
cannot disagree.  Where the spec leaves a case open, the rule follows OpenVINO's
shape inference (e.g. Squeeze keeps a named axis that is not 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.dtypes import DType
from lpjit.graph import Node, Shape, TensorType, constant_value, opclass
from lpjit.ops.common import broadcast_shapes, normalize_axis
from lpjit.ops.registry import register

# --- constant shape inputs -------------------------------------------------------------------


def integer_input(node: Node, index: int, what: str, ranks: Sequence[int] = (0, 1)
                  ) -> tuple[int, ...]:
    """The values of constant integer input ``index`` (named ``what``), flattened.

    Raises ``ShapeError`` naming the layer when the input is not an integer tensor of one of
    ``ranks``, or is not a Constant (a dynamic shape computation nobody folded).
    """
    t = node.input_type(index)
    if not t.dtype.is_integer:
        raise node.error(f"input {index} ({what}) has element type {t.dtype}; "
                         "expected an integer type")
    if t.rank not in ranks:
        allowed = " or ".join(str(r) for r in ranks)
        raise node.error(f"input {index} ({what}) has shape {t.shape}; expected rank {allowed}")
    data = constant_value(node.inputs[index])
    if data is None:
        raise node.error(f"input {index} ({what}) must be a constant; pass shapes= to resolve "
                         "dynamic inputs")
    return tuple(int(v) for v in data.reshape(-1))


def single_integer_input(node: Node, index: int, what: str) -> int:
    """A constant integer input holding exactly one value (a scalar or a 1-element 1-D)."""
    values = integer_input(node, index, what)
    if len(values) != 1:
        raise node.error(f"input {index} ({what}) has {len(values)} values; expected one")
    return values[0]


def _shape_text(shape: Sequence[int]) -> str:
    return str(tuple(shape))


# --- Reshape ---------------------------------------------------------------------------------


@register("Reshape", 1)
@opclass
class Reshape(Node):
    """The same elements in the same order under a new shape (input 1, the target shape).

    With ``special_zero`` a 0 at index i copies input dimension i; one -1 is inferred so the
    element count is kept.  A scalar target shape must be 1 and gives a scalar.
    """

    special_zero: bool
    arity: ClassVar = (2, 2)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"special_zero": a.bool("special_zero")}

    def to_ir(self) -> dict[str, str]:
        return {"special_zero": str(self.special_zero).lower()}

    def infer(self) -> Sequence[TensorType]:
        pattern = integer_input(self, 1, "target shape")
        scalar = self.input_type(1).rank == 0
        data = self.input_type(0)
        return [TensorType(data.dtype, self.output_shape(data.shape, pattern, scalar))]

    def output_shape(self, shape: Shape, pattern: Sequence[int], scalar: bool = False) -> Shape:
        """Resolve 0 (with special_zero) and -1 in ``pattern`` against input ``shape``."""
        if scalar:
            if tuple(pattern) != (1,):
                raise self.error(f"scalar target shape {pattern[0]} is invalid; expected 1")
            pattern = ()
        if any(p < -1 for p in pattern) or list(pattern).count(-1) > 1:
            raise self.error(f"target shape {_shape_text(pattern)} is invalid; expected "
                             "dimensions >= 0 and at most one -1")
        dims = list(pattern)
        copied = set()
        for i, p in enumerate(pattern):
            if p == 0 and self.special_zero:
                if i >= len(shape):
                    raise self.error(f"target shape {_shape_text(pattern)} copies input "
                                     f"dimension {i} (special_zero), but the input "
                                     f"{_shape_text(shape)} has rank {len(shape)}")
                dims[i] = shape[i]
                copied.add(i)
        if -1 in pattern:
            dims[pattern.index(-1)] = self._minus_one(shape, pattern, dims, copied)
        n_in, n_out = math.prod(shape), math.prod(dims)
        if n_in != n_out:
            raise self.error(f"target shape {_shape_text(pattern)} resolves to "
                             f"{_shape_text(dims)} with {n_out} elements; the input "
                             f"{_shape_text(shape)} has {n_in} elements")
        return tuple(dims)

    def _minus_one(self, shape: Shape, pattern: Sequence[int], dims: list[int],
                   copied: set[int]) -> int:
        """The -1 dimension: input elements over the other explicit output dimensions
        (dimensions copied by special_zero are left out on both sides, as OpenVINO does)."""
        minus_one = pattern.index(-1)
        n_in = math.prod(d for i, d in enumerate(shape) if i not in copied)
        n_out = math.prod(d for i, d in enumerate(dims) if i not in copied and i != minus_one)
        if n_out == 0:
            if n_in != 0:
                raise self.error(f"cannot infer the -1 in target shape {_shape_text(pattern)}: "
                                 f"the other dimensions hold zero elements but the input "
                                 f"{_shape_text(shape)} does not")
            return 1
        if n_in % n_out:
            raise self.error(f"cannot infer the -1 in target shape {_shape_text(pattern)}: "
                             f"{n_in} input elements are not divisible by {n_out}")
        return n_in // n_out


# --- Squeeze / Unsqueeze ---------------------------------------------------------------------


@register("Squeeze", 1)
@opclass
class Squeeze(Node):
    """Remove the size-1 dimensions named by the optional axes input (all of them without it
    or with empty axes).  A named axis whose size is not 1 is kept, as in OpenVINO."""

    arity: ClassVar = (1, 2)

    def infer(self) -> Sequence[TensorType]:
        axes = integer_input(self, 1, "axes") if len(self.inputs) == 2 else ()
        data = self.input_type(0)
        return [TensorType(data.dtype, self.output_shape(data.shape, axes))]

    def output_shape(self, shape: Shape, axes: Sequence[int]) -> Shape:
        if not axes:
            return tuple(d for d in shape if d != 1)
        named = {normalize_axis(self, a, len(shape)) for a in axes}
        return tuple(d for i, d in enumerate(shape) if not (i in named and d == 1))


@register("Squeeze", 15)
@opclass
class SqueezeV15(Squeeze):
    """Squeeze-15: ``allow_axis_skip`` only matters for dynamic dimensions; with static shapes
    OpenVINO keeps a named non-1 axis either way, so the rule equals Squeeze-1's."""

    allow_axis_skip: bool = False

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"allow_axis_skip": a.bool("allow_axis_skip", False)}

    def to_ir(self) -> dict[str, str]:
        return {"allow_axis_skip": str(self.allow_axis_skip).lower()}


@register("Unsqueeze", 1)
@opclass
class Unsqueeze(Node):
    """Insert size-1 dimensions at the axes of input 1, axes taken in the output's rank
    (input rank + number of distinct axes); repeated axes insert once."""

    arity: ClassVar = (2, 2)

    def infer(self) -> Sequence[TensorType]:
        axes = integer_input(self, 1, "axes")
        data = self.input_type(0)
        return [TensorType(data.dtype, self.output_shape(data.shape, axes))]

    def output_shape(self, shape: Shape, axes: Sequence[int]) -> Shape:
        if not axes:
            raise self.error("axes are empty; expected at least one axis")
        unique = set(axes)
        rank = len(shape) + len(unique)
        out = list(shape)
        for axis in sorted({normalize_axis(self, a, rank) for a in unique}):
            out.insert(min(axis, len(out)), 1)
        return tuple(out)


# --- ShapeOf ---------------------------------------------------------------------------------


@register("ShapeOf", 1)
@opclass
class ShapeOf(Node):
    """The input's shape as a 1-D i64 tensor (any input element type)."""

    arity: ClassVar = (1, 1)

    @property
    def result_type(self) -> DType:
        return dtypes.i64

    def infer(self) -> Sequence[TensorType]:
        return [TensorType(self.result_type, (self.input_type(0).rank,))]


@register("ShapeOf", 3)
@opclass
class ShapeOfV3(ShapeOf):
    """ShapeOf-3: the shape as ``output_type`` (i64 or i32)."""

    output_type: DType = dtypes.i64

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        output_type = a.dtype("output_type", dtypes.i64)
        if output_type not in (dtypes.i64, dtypes.i32):
            raise a._fail("output_type", output_type.name, "'i64' or 'i32'")
        return {"output_type": output_type}

    def to_ir(self) -> dict[str, str]:
        return {"output_type": self.output_type.name}

    @property
    def result_type(self) -> DType:
        return self.output_type

    def infer(self) -> Sequence[TensorType]:
        if self.output_type not in (dtypes.i64, dtypes.i32):
            raise self.error(f"output_type {self.output_type} is invalid; expected i64 or i32")
        return super().infer()


# --- Broadcast -------------------------------------------------------------------------------

BROADCAST_MODES_V1 = ("numpy", "explicit")
BROADCAST_MODES_V3 = ("numpy", "explicit", "bidirectional")


@register("Broadcast", 1)
@opclass
class Broadcast(Node):
    """Replicate the data to the target shape (input 1).

    * ``numpy``: the data aligns to the right of the target; each data dimension is 1 or equal;
      the output is the target shape.
    * ``explicit``: input 2 (axes mapping, increasing) says which target axis each data axis
      becomes; those dimensions are 1 or equal.
    * ``bidirectional`` (v3): numpy broadcasting of data and target shapes, both ways.

    Broadcast-1 spells explicit as ``none`` in the IR; pdpd mode is not supported.
    """

    mode: str = "numpy"
    arity: ClassVar = (2, 3)
    modes: ClassVar[tuple[str, ...]] = BROADCAST_MODES_V1

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        mode = a.enum("mode", (*cls.modes, "none", "pdpd"), "numpy")
        if mode == "pdpd":
            raise a._fail("mode", "pdpd", " or ".join(cls.modes) + " (pdpd is not supported)")
        return {"mode": "explicit" if mode == "none" else mode}

    def to_ir(self) -> dict[str, str]:
        return {"mode": "none" if self.mode == "explicit" else self.mode}

    def infer(self) -> Sequence[TensorType]:
        if self.mode not in self.modes:
            raise self.error(f"mode {self.mode} is invalid; expected {', '.join(self.modes)}")
        if self.mode == "explicit" and len(self.inputs) != 3:
            raise self.error("explicit mode needs input 2 (axes mapping)")
        target = integer_input(self, 1, "target shape", ranks=(1,))
        mapping: tuple[int, ...] = ()
        if self.mode == "explicit":
            mapping = integer_input(self, 2, "axes mapping", ranks=(1,))
        data = self.input_type(0)
        return [TensorType(data.dtype, self.output_shape(data.shape, target, mapping))]

    def output_shape(self, shape: Shape, target: Sequence[int], mapping: Sequence[int]
                     ) -> Shape:
        target = tuple(target)
        if any(d < 0 for d in target):
            raise self.error(f"target shape {target} has a negative dimension")
        if self.mode == "bidirectional":
            return broadcast_shapes(self, shape, target)
        if self.mode == "explicit":
            self._check_mapping(shape, target, mapping)
            return target
        if len(target) < len(shape) or any(
                d not in (1, t) for d, t in zip(reversed(shape), reversed(target))):
            raise self.error(f"data shape {shape} does not broadcast to target shape "
                             f"{target} (numpy rules: each data dimension is 1 or equal)")
        return target

    def _check_mapping(self, shape: Shape, target: Shape, mapping: Sequence[int]) -> None:
        expected = max(len(shape), 1) if mapping else len(shape)
        if len(mapping) != expected or list(mapping) != sorted(mapping):
            raise self.error(f"axes mapping {tuple(mapping)} is invalid for data shape {shape}; "
                             "expected one increasing target axis per data axis")
        for i, axis in enumerate(mapping):
            if not 0 <= axis < len(target):
                raise self.error(f"axes mapping {tuple(mapping)}: axis {axis} is out of range "
                                 f"for target shape {target}")
            size = shape[i] if shape else 1
            if size not in (1, target[axis]):
                raise self.error(f"data dimension {i} (size {size}) cannot broadcast to "
                                 f"target dimension {axis} (size {target[axis]})")

    def expanded_shape(self, shape: Shape, target: Sequence[int], mapping: Sequence[int]
                       ) -> Shape:
        """The data shape with 1s inserted so that numpy broadcasting gives the result:
        for explicit mode, data axis i sits at target axis ``mapping[i]``."""
        if self.mode != "explicit":
            return shape
        out = [1] * len(target)
        for i, axis in enumerate(mapping):
            out[axis] = shape[i] if shape else 1
        return tuple(out)


@register("Broadcast", 3)
@opclass
class BroadcastV3(Broadcast):
    """Broadcast-3: adds ``bidirectional`` mode; explicit is spelled ``explicit``."""

    modes: ClassVar[tuple[str, ...]] = BROADCAST_MODES_V3

    def to_ir(self) -> dict[str, str]:
        return {"mode": self.mode}

    def infer(self) -> Sequence[TensorType]:
        if self.mode != "explicit" and len(self.inputs) == 3:
            raise self.error(f"{self.mode} mode takes no axes mapping input")
        return super().infer()


# --- Tile ------------------------------------------------------------------------------------


@register("Tile", 1)
@opclass
class Tile(Node):
    """Repeat the data ``repeats[i]`` times along axis i (input 1); the shorter of data shape
    and repeats is padded with leading 1s (``numpy.tile``)."""

    arity: ClassVar = (2, 2)

    def infer(self) -> Sequence[TensorType]:
        repeats = integer_input(self, 1, "repeats", ranks=(1,))
        data = self.input_type(0)
        return [TensorType(data.dtype, self.output_shape(data.shape, repeats))]

    def output_shape(self, shape: Shape, repeats: Sequence[int]) -> Shape:
        if any(r < 0 for r in repeats):
            raise self.error(f"repeats {tuple(repeats)} has a negative value")
        rank = max(len(shape), len(repeats))
        shape = (1,) * (rank - len(shape)) + tuple(shape)
        repeats = (1,) * (rank - len(repeats)) + tuple(repeats)
        return tuple(d * r for d, r in zip(shape, repeats))
