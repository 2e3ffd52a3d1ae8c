"""ReduceMean/Sum/Max/Min/Prod (opset1) and ReduceL2 (opset4).

Inputs: ``data`` and ``axes``, a constant i32/i64 scalar or 1-D tensor whose entries may be
negative (``-1`` is the last axis), may repeat (counted once, as OpenVINO does) and may be
empty (each element is then reduced alone: the identity, ``|x|`` for ReduceL2).  ``keep_dims``
keeps reduced axes as size 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit.attributes import Attributes
from lpjit.graph import Node, TensorType, constant_value, opclass
from lpjit.ops.common import normalize_axis
from lpjit.ops.registry import register


def constant_axes(node: Node, port: int, rank: int, what: str = "axes") -> tuple[int, ...]:
    """The sorted, de-duplicated axes held by constant input ``port``, mapped to ``[0, rank)``.

    Raises ``ShapeError`` naming ``node`` if the input is not a constant, not an integer
    scalar or vector, or holds an axis outside ``[-rank, rank)``.
    """
    value = node.inputs[port]
    data = constant_value(value)
    if data is None:
        raise node.error(f"{what} (input {port}) must be a constant; it is produced by "
                         f"{value.node.origin.describe()}")
    if not value.dtype.is_integer:
        raise node.error(f"{what} (input {port}) has element type {value.dtype}; expected "
                         "i32 or i64")
    if data.ndim > 1:
        raise node.error(f"{what} (input {port}) has shape {data.shape}; expected a scalar "
                         "or a 1-D tensor")
    axes = {normalize_axis(node, int(a), rank, "axis") for a in data.reshape(-1)}
    return tuple(sorted(axes))


@opclass
class Reduce(Node):
    """Reduce ``data`` over the constant ``axes`` (input 1)."""

    keep_dims: bool = False
    arity: ClassVar = (2, 2)
    accepts_integers: ClassVar[bool] = True

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"keep_dims": a.bool("keep_dims", False)}

    def to_ir(self) -> dict[str, str]:
        return {"keep_dims": str(self.keep_dims).lower()}

    @property
    def axes(self) -> tuple[int, ...]:
        """The reduced axes in ``[0, rank)``, sorted, each once."""
        return constant_axes(self, 1, self.input_type(0).rank)

    def infer(self) -> Sequence[TensorType]:
        data = self.input_type(0)
        ok = data.dtype.is_float or (self.accepts_integers and data.dtype.is_integer)
        if not ok:
            expected = "a float or integer type" if self.accepts_integers else "a float type"
            raise self.error(f"input 0 has element type {data.dtype}; expected {expected}")
        axes = self.axes
        if self.keep_dims:
            shape = tuple(1 if i in axes else d for i, d in enumerate(data.shape))
        else:
            shape = tuple(d for i, d in enumerate(data.shape) if i not in axes)
        return [TensorType(data.dtype, shape)]


@register("ReduceMean", 1)
@opclass
class ReduceMean(Reduce):
    """The arithmetic mean over ``axes``."""


@register("ReduceSum", 1)
@opclass
class ReduceSum(Reduce):
    """The sum over ``axes``."""


@register("ReduceMax", 1)
@opclass
class ReduceMax(Reduce):
    """The maximum over ``axes``."""


@register("ReduceMin", 1)
@opclass
class ReduceMin(Reduce):
    """The minimum over ``axes``."""


@register("ReduceProd", 1)
@opclass
class ReduceProd(Reduce):
    """The product over ``axes``."""


@register("ReduceL2", 4)
@opclass
class ReduceL2(Reduce):
    """``sqrt(sum(x^2))`` over ``axes``; float tensors only."""

    accepts_integers: ClassVar[bool] = False
