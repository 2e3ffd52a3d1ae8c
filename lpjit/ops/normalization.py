"""MVN-2, MVN-6, NormalizeL2-1 and BatchNormInference-1/-5.

Each keeps its data input's type and shape.  Numpy semantics: ``lpjit.reference.normalization``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError
from lpjit.graph import Node, TensorType, opclass
from lpjit.ops.activations import require_numeric
from lpjit.ops.common import format_float, normalize_axes
from lpjit.ops.reductions import constant_axes
from lpjit.ops.registry import register

MVN_EPS_MODES = ("inside_sqrt", "outside_sqrt")
L2_EPS_MODES = ("add", "max")


def _format_ints(values: Sequence[int]) -> str:
    """An integer list as OpenVINO writes it: ``"1, 2, 3"``."""
    return ", ".join(str(v) for v in values)


@register("MVN", 2)
@opclass
class MVNV2(Node):
    """MVN-2 (OpenVINO's opset1 MVN): ``(x - mean) / sqrt(var + eps)`` (or ``x - mean``).

    The statistics run over axes 1..rank-1 when ``across_channels``, else over 2..rank-1.
    ``reduction_axes``, when written, only decides ``across_channels`` (it is across channels
    if it contains axis 1): OpenVINO's CPU plugin was observed to do exactly this, e.g.
    ``reduction_axes="3"`` on a 4-D input normalizes over axes 2 and 3.
    """

    eps: float
    across_channels: bool = False
    normalize_variance: bool = True
    reduction_axes: tuple[int, ...] = ()
    arity: ClassVar = (1, 1)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"eps": a.float("eps"), "across_channels": a.bool("across_channels", False),
                "normalize_variance": a.bool("normalize_variance", True),
                "reduction_axes": a.ints("reduction_axes", ())}

    def to_ir(self) -> dict[str, str]:
        out = {"eps": format_float(self.eps),
               "across_channels": str(self.across_channels).lower(),
               "normalize_variance": str(self.normalize_variance).lower()}
        if self.reduction_axes:
            out["reduction_axes"] = _format_ints(self.reduction_axes)
        return out

    @property
    def axes(self) -> tuple[int, ...]:
        """The axes the mean and variance run over (none for a rank-2 per-channel MVN)."""
        rank = self.input_type(0).rank
        across = 1 in self.reduction_axes if self.reduction_axes else self.across_channels
        return tuple(range(1 if across else 2, rank))

    def infer(self) -> Sequence[TensorType]:
        require_numeric(self, 0, integers=False)
        data = self.input_type(0)
        if self.reduction_axes:
            normalize_axes(self, self.reduction_axes, data.rank, "reduction_axes")
        return [data]


@register("MVN", 6)
@opclass
class MVNV6(Node):
    """MVN-6: statistics over the constant ``axes`` input (may be negative).

    ``y = (x - mean) / sqrt(var + eps)`` (``inside_sqrt``) or ``/ (sqrt(var) + eps)``
    (``outside_sqrt``); ``x - mean`` when not ``normalize_variance``.
    """

    eps: float
    normalize_variance: bool = True
    eps_mode: str = "inside_sqrt"
    arity: ClassVar = (2, 2)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"eps": a.float("eps"), "normalize_variance": a.bool("normalize_variance"),
                "eps_mode": a.enum("eps_mode", MVN_EPS_MODES)}

    def to_ir(self) -> dict[str, str]:
        return {"eps": format_float(self.eps),
                "normalize_variance": str(self.normalize_variance).lower(),
                "eps_mode": self.eps_mode.upper()}

    @property
    def axes(self) -> tuple[int, ...]:
        return constant_axes(self, 1, self.input_type(0).rank)

    def infer(self) -> Sequence[TensorType]:
        if self.eps_mode not in MVN_EPS_MODES:
            raise self.error(f"eps_mode '{self.eps_mode}' is invalid; expected one of "
                             f"{', '.join(MVN_EPS_MODES)}", BadAttributeError)
        require_numeric(self, 0, integers=False)
        self.axes  # noqa: B018  (validates the axes)
        return [self.input_type(0)]


@register("NormalizeL2", 1)
@opclass
class NormalizeL2(Node):
    """``x / sqrt(sum(x^2) + eps)`` (``add``) or ``/ sqrt(max(sum(x^2), eps))`` (``max``).

    The sum runs over the constant ``axes`` input.  Empty axes give ``x == 0 ? 0 : 1``
    (OpenVINO's reference).
    """

    eps: float
    eps_mode: str = "add"
    arity: ClassVar = (2, 2)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"eps": a.float("eps"), "eps_mode": a.enum("eps_mode", L2_EPS_MODES)}

    def to_ir(self) -> dict[str, str]:
        return {"eps": format_float(self.eps), "eps_mode": self.eps_mode}

    @property
    def axes(self) -> tuple[int, ...]:
        return constant_axes(self, 1, self.input_type(0).rank)

    def infer(self) -> Sequence[TensorType]:
        if self.eps_mode not in L2_EPS_MODES:
            raise self.error(f"eps_mode '{self.eps_mode}' is invalid; expected one of "
                             f"{', '.join(L2_EPS_MODES)}", BadAttributeError)
        require_numeric(self, 0, integers=False)
        self.axes  # noqa: B018  (validates the axes)
        return [self.input_type(0)]


@opclass
class BatchNormInference(Node):
    """``(x - mean) / sqrt(variance + epsilon) * gamma + beta`` per channel (axis 1)."""

    epsilon: float
    arity: ClassVar = (5, 5)
    # Port of each input: v1 takes (gamma, beta, data, mean, variance).
    ports: ClassVar[dict[str, int]] = {}

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"epsilon": a.float("epsilon")}

    def to_ir(self) -> dict[str, str]:
        return {"epsilon": format_float(self.epsilon)}

    def port(self, name: str) -> int:
        """The input port of ``name`` (``data``, ``gamma``, ``beta``, ``mean``, ``variance``)."""
        return self.ports[name]

    def infer(self) -> Sequence[TensorType]:
        if self.epsilon < 0:
            raise self.error(f"epsilon={self.epsilon:g} is invalid; expected epsilon >= 0",
                             BadAttributeError)
        data_port = self.port("data")
        require_numeric(self, data_port, integers=False)
        data = self.input_type(data_port)
        if data.rank < 2:
            raise self.error(f"data (input {data_port}) has shape {data.shape}; expected "
                             "rank >= 2 with channels on axis 1")
        for name in ("gamma", "beta", "mean", "variance"):
            port = self.port(name)
            t = self.input_type(port)
            if t.dtype != data.dtype:
                raise self.error(f"{name} (input {port}) has element type {t.dtype}; expected "
                                 f"the data's type {data.dtype}")
            if t.shape != (data.shape[1],):
                raise self.error(f"{name} (input {port}) has shape {t.shape}; expected "
                                 f"({data.shape[1]},), one value per channel")
        return [data]


@register("BatchNormInference", 1)
@opclass
class BatchNormInferenceV1(BatchNormInference):
    """BatchNormInference-1: inputs (gamma, beta, data, mean, variance): data is port 2."""

    ports: ClassVar[dict[str, int]] = {"gamma": 0, "beta": 1, "data": 2, "mean": 3,
                                        "variance": 4}


@register("BatchNormInference", 5)
@opclass
class BatchNormInferenceV5(BatchNormInference):
    """BatchNormInference-5: inputs (data, gamma, beta, mean, variance)."""

    ports: ClassVar[dict[str, int]] = {"data": 0, "gamma": 1, "beta": 2, "mean": 3,
                                        "variance": 4}
