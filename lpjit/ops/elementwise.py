"""Binary elementwise ops with numpy broadcasting, comparisons and Select."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.graph import opclass, Node, TensorType
from lpjit.ops.common import broadcast_shapes, require_same_dtype
from lpjit.ops.registry import register

AUTO_BROADCAST = ("numpy", "none", "pdpd")


@opclass
class BinaryElementwise(Node):
    """``y = f(a, b)`` elementwise; both inputs share one element type."""

    auto_broadcast: str = "numpy"
    arity: ClassVar = (2, 2)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        mode = a.enum("auto_broadcast", AUTO_BROADCAST, "numpy")
        if mode == "pdpd":
            raise a._fail("auto_broadcast", "pdpd", "'numpy' or 'none' (pdpd is not supported)")
        return {"auto_broadcast": mode}

    def to_ir(self) -> dict[str, str]:
        return {"auto_broadcast": self.auto_broadcast}

    def result_dtype(self) -> dtypes.DType:
        return self.input_type(0).dtype

    def infer(self) -> Sequence[TensorType]:
        require_same_dtype(self)
        a, b = self.input_type(0).shape, self.input_type(1).shape
        if self.auto_broadcast == "none" and a != b:
            raise self.error(f"auto_broadcast=none needs equal shapes, got {a} and {b}")
        return [TensorType(self.result_dtype(), broadcast_shapes(self, a, b))]


@register("Add", 1)
@opclass
class Add(BinaryElementwise):
    pass


@register("Subtract", 1)
@opclass
class Subtract(BinaryElementwise):
    pass


@register("Multiply", 1)
@opclass
class Multiply(BinaryElementwise):
    pass


@register("Divide", 1)
@opclass
class Divide(BinaryElementwise):
    """Division; for integer types ``python_division`` floors (``m_pythondiv``, default true)."""

    python_division: bool = True

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {**super().from_ir(a), "python_division": a.bool("m_pythondiv", True)}

    def to_ir(self) -> dict[str, str]:
        return {**super().to_ir(), "m_pythondiv": str(self.python_division).lower()}


@register("Maximum", 1)
@opclass
class Maximum(BinaryElementwise):
    pass


@register("Minimum", 1)
@opclass
class Minimum(BinaryElementwise):
    pass


@register("Power", 1)
@opclass
class Power(BinaryElementwise):
    pass


@register("SquaredDifference", 1)
@opclass
class SquaredDifference(BinaryElementwise):
    pass


@opclass
class Comparison(BinaryElementwise):
    """A comparison: boolean output."""

    def result_dtype(self) -> dtypes.DType:
        return dtypes.boolean


@register("Equal", 1)
@opclass
class Equal(Comparison):
    pass


@register("NotEqual", 1)
@opclass
class NotEqual(Comparison):
    pass


@register("Greater", 1)
@opclass
class Greater(Comparison):
    pass


@register("GreaterEqual", 1)
@opclass
class GreaterEqual(Comparison):
    pass


@register("Less", 1)
@opclass
class Less(Comparison):
    pass


@register("LessEqual", 1)
@opclass
class LessEqual(Comparison):
    pass


@register("LogicalAnd", 1)
@opclass
class LogicalAnd(Comparison):
    pass


@register("LogicalOr", 1)
@opclass
class LogicalOr(Comparison):
    pass


@register("Select", 1)
@opclass
class Select(Node):
    """``cond ? then : else`` with numpy broadcasting of all three inputs."""

    auto_broadcast: str = "numpy"
    arity: ClassVar = (3, 3)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"auto_broadcast": a.enum("auto_broadcast", AUTO_BROADCAST, "numpy")}

    def to_ir(self) -> dict[str, str]:
        return {"auto_broadcast": self.auto_broadcast}

    def infer(self) -> Sequence[TensorType]:
        cond, then, other = (v.type for v in self.inputs)
        if cond.dtype != dtypes.boolean:
            raise self.error(f"condition has element type {cond.dtype}; expected boolean")
        if then.dtype != other.dtype:
            raise self.error(f"branches have element types {then.dtype} and {other.dtype}; "
                             "expected one type")
        shape = broadcast_shapes(self, cond.shape, then.shape, other.shape)
        return [TensorType(then.dtype, shape)]
