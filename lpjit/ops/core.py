"""Parameter, Result, Const and Convert: the layers every IR has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit.attributes import Attributes
from lpjit.dtypes import DType
from lpjit.errors import BadAttributeError
from lpjit.graph import opclass, Constant, Node, Parameter, Result, TensorType
from lpjit.ops.registry import register

DYNAMIC = -1


def parse_partial_shape(text: str, attributes: Attributes) -> tuple[int, ...] | None:
    """Parameter ``shape``: ``"1,3,224,224"``; ``?``, ``-1`` and ``a..b`` are dynamic (-1);
    ``"..."`` is a dynamic rank (``None``); ``""`` is a scalar."""
    text = text.strip()
    if text in ("...", "?..."):
        return None
    dims: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part in ("?", "-1") or ".." in part:
            dims.append(DYNAMIC)
            continue
        try:
            value = int(part)
        except ValueError:
            raise BadAttributeError(f"shape=\"{text}\" has a bad dimension '{part}'; expected "
                                    "an integer, '?', '-1' or 'a..b'", attributes.origin) from None
        if value < 0:
            raise BadAttributeError(f"shape=\"{text}\" has a negative dimension {value}",
                                    attributes.origin)
        dims.append(value)
    return tuple(dims)


register("Parameter", 1)(Parameter)
register("Result", 1)(Result)
register("Const", 1, aliases=("Constant",))(Constant)


@register("Convert", 1)
@opclass
class Convert(Node):
    """Element type conversion.  float -> int truncates toward zero and wraps (as OpenVINO)."""

    destination_type: DType
    arity: ClassVar = (1, 1)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"destination_type": a.dtype("destination_type")}

    def to_ir(self) -> dict[str, str]:
        return {"destination_type": self.destination_type.name}

    def infer(self) -> Sequence[TensorType]:
        return [TensorType(self.destination_type, self.input_type(0).shape)]
