"""FakeQuantize-1: quantize-dequantize in floating point (the heart of a Low Precision IR).

Inputs, in port order: ``x``, ``input_low``, ``input_high``, ``output_low``, ``output_high``;
each range input broadcasts to ``x`` independently (numpy rules).  The arithmetic, written as
numbered steps with the rounding mode named, is ``lpjit.reference.quantize.fake_quantize``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError
from lpjit.graph import Node, TensorType, opclass
from lpjit.ops.common import broadcasts_to
from lpjit.ops.registry import register

RANGE_INPUTS = ("input_low", "input_high", "output_low", "output_high")
MAX_LEVELS = 2 ** 64 - 1           # OpenVINO's type for levels is size_t


def levels_problem(levels: int) -> str | None:
    """Why ``levels`` is invalid (``None`` if it is valid)."""
    if levels < 2:
        return f"levels={levels} is invalid; expected levels >= 2"
    if levels > MAX_LEVELS:
        return f"levels={levels} is invalid; expected levels <= {MAX_LEVELS} (a size_t)"
    return None


@register("FakeQuantize", 1)
@opclass
class FakeQuantize(Node):
    """``y = fake_quantize(x, il, ih, ol, oh, levels)``: ``levels`` output values from ol to oh.

    ``auto_broadcast`` is ``numpy`` (each range broadcasts to ``x``) or ``none`` (every range
    has ``x``'s shape).  The output has ``x``'s type and shape.
    """

    levels: int
    auto_broadcast: str = "numpy"
    arity: ClassVar = (5, 5)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        levels = a.int("levels")
        problem = levels_problem(levels)
        if problem:
            raise BadAttributeError(problem, a.origin)
        mode = a.enum("auto_broadcast", ("numpy", "none", "pdpd"), "numpy")
        if mode == "pdpd":
            raise a._fail("auto_broadcast", "pdpd", "'numpy' or 'none' (pdpd is not supported)")
        return {"levels": levels, "auto_broadcast": mode}

    def to_ir(self) -> dict[str, str]:
        return {"levels": str(self.levels), "auto_broadcast": self.auto_broadcast}

    def infer(self) -> Sequence[TensorType]:
        problem = levels_problem(self.levels)
        if problem:
            raise self.error(problem, BadAttributeError)
        if self.auto_broadcast not in ("numpy", "none"):
            raise self.error(f"auto_broadcast '{self.auto_broadcast}' is not supported; "
                             "expected numpy or none", BadAttributeError)
        data = self.input_type(0)
        if not data.dtype.is_float:
            raise self.error(f"input 0 (data) has element type {data.dtype}; expected a "
                             "float type")
        for port, name in enumerate(RANGE_INPUTS, start=1):
            self._check_range(port, name, data)
        return [data]

    def _check_range(self, port: int, name: str, data: TensorType) -> None:
        t = self.input_type(port)
        if t.dtype != data.dtype:
            raise self.error(f"input {port} ({name}) has element type {t.dtype}; expected "
                             f"the data's type {data.dtype}")
        if self.auto_broadcast == "none" and t.shape != data.shape:
            raise self.error(f"input {port} ({name}) has shape {t.shape}; auto_broadcast=none "
                             f"needs the data shape {data.shape}")
        if not broadcasts_to(t.shape, data.shape):
            raise self.error(f"input {port} ({name}) has shape {t.shape}, which does not "
                             f"broadcast to the data shape {data.shape} (numpy rules)")
