"""Elementwise activations (ReLU, Sigmoid, Gelu, Swish, PReLU, Clamp, ...) and SoftMax/LogSoftmax.

Every op here keeps its input's element type and shape.  Their numpy semantics are in
``lpjit.reference.activations``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError
from lpjit.graph import Node, Shape, TensorType, opclass
from lpjit.ops.common import broadcasts_to, format_float, normalize_axis
from lpjit.ops.registry import register


def require_numeric(node: Node, index: int, integers: bool) -> None:
    """Input ``index`` must be a float type (or an integer type when ``integers``)."""
    dtype = node.input_type(index).dtype
    if dtype.is_float or (integers and dtype.is_integer):
        return
    expected = "a float or integer type" if integers else "a float type"
    raise node.error(f"input {index} has element type {dtype}; expected {expected}")


@opclass
class UnaryActivation(Node):
    """``y = f(x)`` elementwise; the output has the input's type and shape."""

    arity: ClassVar = (1, 1)
    # True for ops OpenVINO also defines on integer tensors (Abs, ReLU, Clamp, ...).
    accepts_integers: ClassVar[bool] = False

    def infer(self) -> Sequence[TensorType]:
        require_numeric(self, 0, self.accepts_integers)
        return [self.input_type(0)]


@register("ReLU", 1)
@opclass
class Relu(UnaryActivation):
    """``max(x, 0)``.  The IR spells it ``ReLU``; type names match case-insensitively."""

    accepts_integers: ClassVar[bool] = True


@register("Sigmoid", 1)
@opclass
class Sigmoid(UnaryActivation):
    """``1 / (1 + exp(-x))``."""


@register("Tanh", 1)
@opclass
class Tanh(UnaryActivation):
    """``tanh(x)``."""


@register("Exp", 1)
@opclass
class Exp(UnaryActivation):
    """``exp(x)``."""


@register("Log", 1)
@opclass
class Log(UnaryActivation):
    """Natural logarithm (NaN below 0, -inf at 0)."""


@register("Erf", 1)
@opclass
class Erf(UnaryActivation):
    """The Gauss error function."""


@register("Sqrt", 1)
@opclass
class Sqrt(UnaryActivation):
    """Square root (NaN below 0)."""


@register("Abs", 1)
@opclass
class Abs(UnaryActivation):
    """``|x|``."""

    accepts_integers: ClassVar[bool] = True


@register("Negative", 1)
@opclass
class Negative(UnaryActivation):
    """``-x``."""

    accepts_integers: ClassVar[bool] = True


@register("Floor", 1)
@opclass
class Floor(UnaryActivation):
    """Round toward -inf (the identity on integers)."""

    accepts_integers: ClassVar[bool] = True


@register("Ceiling", 1)
@opclass
class Ceiling(UnaryActivation):
    """Round toward +inf (the identity on integers)."""

    accepts_integers: ClassVar[bool] = True


@register("HSwish", 4)
@opclass
class HSwish(UnaryActivation):
    """``x * min(max(x + 3, 0), 6) / 6``."""


@register("HSigmoid", 5)
@opclass
class HSigmoid(UnaryActivation):
    """``min(max(x + 3, 0), 6) / 6``."""


@register("Mish", 4)
@opclass
class Mish(UnaryActivation):
    """``x * tanh(softplus(x))``."""


@register("SoftPlus", 4)
@opclass
class SoftPlus(UnaryActivation):
    """``log(1 + exp(x))``."""


@register("Gelu", 2)
@opclass
class GeluV2(UnaryActivation):
    """Gelu-2: the erf form ``0.5 * x * (1 + erf(x / sqrt(2)))``; no attributes."""


GELU_MODES = ("erf", "tanh")


@register("Gelu", 7)
@opclass
class GeluV7(UnaryActivation):
    """Gelu-7: the erf form, or with ``approximation_mode=tanh``
    ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))``."""

    approximation_mode: str = "erf"

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"approximation_mode": a.enum("approximation_mode", GELU_MODES, "erf")}

    def to_ir(self) -> dict[str, str]:
        return {"approximation_mode": self.approximation_mode.upper()}

    def infer(self) -> Sequence[TensorType]:
        if self.approximation_mode not in GELU_MODES:
            raise self.error(f"approximation_mode '{self.approximation_mode}' is invalid; "
                             f"expected one of {', '.join(GELU_MODES)}", BadAttributeError)
        return super().infer()


@register("Clamp", 1)
@opclass
class Clamp(UnaryActivation):
    """``min(max(x, min), max)``; on integer tensors the bounds are ``ceil(min)``, ``floor(max)``."""

    min: float
    max: float
    accepts_integers: ClassVar[bool] = True

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"min": a.float("min"), "max": a.float("max")}

    def to_ir(self) -> dict[str, str]:
        return {"min": format_float(self.min), "max": format_float(self.max)}

    def infer(self) -> Sequence[TensorType]:
        if self.min > self.max:
            raise self.error(f"min={self.min:g} is greater than max={self.max:g}; expected "
                             "min <= max", BadAttributeError)
        return super().infer()


@register("PReLU", 1)
@opclass
class PRelu(Node):
    """``x < 0 ? x * slope : x`` with ``slope`` as input 1.

    OpenVINO's rule for the slope's shape: a 1-D slope whose length equals the channel dim
    (axis 1, or axis 0 for a 1-D input) applies along that axis; any other slope broadcasts
    to the data by numpy rules.
    """

    arity: ClassVar = (2, 2)

    def slope_shape(self) -> Shape:
        """The slope's shape after applying the per-channel rule (numpy-broadcast to the data)."""
        data, slope = self.input_type(0).shape, self.input_type(1).shape
        channel_axis = 1 if len(data) > 1 else 0
        if len(slope) == 1 and len(data) > 0 and data[channel_axis] == slope[0]:
            return tuple(slope[0] if i == channel_axis else 1 for i in range(len(data)))
        return slope

    def infer(self) -> Sequence[TensorType]:
        require_numeric(self, 0, integers=False)
        data, slope = self.input_type(0), self.input_type(1)
        if slope.dtype != data.dtype:
            raise self.error(f"slope has element type {slope.dtype}; expected the data's "
                             f"type {data.dtype}")
        if not broadcasts_to(self.slope_shape(), data.shape):
            raise self.error(f"slope shape {slope.shape} does not fit the data shape "
                             f"{data.shape}; expected a 1-D slope as long as the channel dim "
                             "or a shape that broadcasts to the data (numpy rules)")
        return [data]


@register("Swish", 4)
@opclass
class Swish(Node):
    """``x * sigmoid(beta * x)``; ``beta`` is an optional scalar input 1 (default 1)."""

    arity: ClassVar = (1, 2)

    def infer(self) -> Sequence[TensorType]:
        require_numeric(self, 0, integers=False)
        data = self.input_type(0)
        if len(self.inputs) == 2:
            beta = self.input_type(1)
            if beta.dtype != data.dtype:
                raise self.error(f"beta has element type {beta.dtype}; expected the data's "
                                 f"type {data.dtype}")
            if beta.rank != 0:
                raise self.error(f"beta has shape {beta.shape}; expected a scalar (rank 0)")
        return [data]


# ------------------------------------------------------------------------------------------
# SoftMax / LogSoftmax: one axis attribute.


@opclass
class AxisActivation(Node):
    """An activation along one ``axis`` of a float tensor (SoftMax, LogSoftmax)."""

    axis: int = 1
    arity: ClassVar = (1, 1)
    # SoftMax-1 only allows 0..rank-1; later versions also -rank..-1.
    allows_negative_axis: ClassVar[bool] = True

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"axis": a.int("axis", 1)}

    def to_ir(self) -> dict[str, str]:
        return {"axis": str(self.axis)}

    @property
    def normalized_axis(self) -> int:
        """``axis`` in ``[0, rank)``."""
        rank = self.input_type(0).rank
        if not self.allows_negative_axis and not 0 <= self.axis < rank:
            hint = " (negative axes need SoftMax-8)" if self.axis < 0 else ""
            raise self.error(f"axis {self.axis} is out of range for rank {rank}; SoftMax-1 "
                             f"expects 0..{rank - 1}{hint}")
        return normalize_axis(self, self.axis, rank)

    def infer(self) -> Sequence[TensorType]:
        require_numeric(self, 0, integers=False)
        self.normalized_axis  # noqa: B018  (validates the axis)
        return [self.input_type(0)]


@register("SoftMax", 1)
@opclass
class SoftmaxV1(AxisActivation):
    """SoftMax-1: ``exp(x - max) / sum(exp(x - max))`` along ``axis`` in ``0..rank-1``."""

    allows_negative_axis: ClassVar[bool] = False


@register("SoftMax", 8)
@opclass
class SoftmaxV8(AxisActivation):
    """SoftMax-8: as SoftMax-1, with ``axis`` in ``-rank..rank-1``."""


@register("LogSoftmax", 5)
@opclass
class LogSoftmax(AxisActivation):
    """``x - max - log(sum(exp(x - max)))`` along ``axis`` in ``-rank..rank-1``."""
