"""Interpolate-4 and Interpolate-11: resize chosen axes by sizes or scales.

Interpolate-4 takes (data, sizes, scales, [axes]); Interpolate-11 takes (data, scales_or_sizes,
[axes]), the second input holding sizes or scales as ``shape_calculation_mode`` says.  The data
is zero-padded by ``pads_begin``/``pads_end`` (resized to the input rank when the node is built;
each at most ``nn.WINDOW_LIMIT``, else ``BadAttributeError``) before resizing.  Output shapes need the sizes/scales and axes inputs to be constants.
Numpy semantics are in ``lpjit.reference.interpolate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from lpjit.attributes import Attributes
from lpjit.errors import UnsupportedOpError
from lpjit.graph import Node, Shape, TensorType, constant_value, opclass
from lpjit.ops.common import format_float
from lpjit.ops.nn import check_window_limit, format_bool, format_ints
from lpjit.ops.registry import register

MODES = ("nearest", "linear", "linear_onnx", "cubic", "bilinear_pillow", "bicubic_pillow")
IMPLEMENTED_MODES = ("nearest", "linear", "linear_onnx", "cubic")
SHAPE_CALCULATION_MODES = ("sizes", "scales")
COORDINATE_TRANSFORMATION_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric",
                                   "tf_half_pixel_for_nn", "align_corners")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")

# OpenVINO adds this to a scale before ``floor(dim * scale)`` (dimension_util.hpp, ``scale``).
SCALE_EPSILON = np.float32(1e-6)


def scaled_dim(dim: int, scale: float) -> int:
    """``int(dim * (scale + 1e-6))`` in float32, OpenVINO's output length for a scale."""
    if np.float32(scale) == np.float32(1.0):
        return dim
    return int(np.float32(dim) * (np.float32(scale) + SCALE_EPSILON))


@opclass
class Interpolate(Node):
    """Fields and shape inference shared by Interpolate-4 and -11."""

    mode: str
    shape_calculation_mode: str
    coordinate_transformation_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    antialias: bool = False
    pads_begin: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    pads_end: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    cube_coeff: float = -0.75

    # Input ports of the sizes, the scales and the axes (set by each version).
    axes_port: ClassVar[int] = 3

    def __attrs_post_init__(self) -> None:
        """Resize the pads to the input rank (zeros appended), as OpenVINO does, then infer."""
        if self.inputs:
            rank = self.input_type(0).rank
            for name in ("pads_begin", "pads_end"):
                pads = getattr(self, name)
                object.__setattr__(self, name, (tuple(pads) + (0,) * rank)[:rank])
        super().__attrs_post_init__()

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {
            "mode": a.enum("mode", MODES),
            "shape_calculation_mode": a.enum("shape_calculation_mode", SHAPE_CALCULATION_MODES),
            "coordinate_transformation_mode": a.enum(
                "coordinate_transformation_mode", COORDINATE_TRANSFORMATION_MODES, "half_pixel"),
            "nearest_mode": a.enum("nearest_mode", NEAREST_MODES, "round_prefer_floor"),
            "antialias": a.bool("antialias", False),
            "pads_begin": a.ints("pads_begin", ()),
            "pads_end": a.ints("pads_end", ()),
            "cube_coeff": a.float("cube_coeff", -0.75),
        }

    def to_ir(self) -> dict[str, str]:
        return {"mode": self.mode, "shape_calculation_mode": self.shape_calculation_mode,
                "coordinate_transformation_mode": self.coordinate_transformation_mode,
                "nearest_mode": self.nearest_mode, "antialias": format_bool(self.antialias),
                "pads_begin": format_ints(self.pads_begin),
                "pads_end": format_ints(self.pads_end),
                "cube_coeff": format_float(self.cube_coeff)}

    # --- ports (per version) --------------------------------------------------------------
    def sizes_port(self) -> int:
        raise NotImplementedError

    def scales_port(self) -> int:
        raise NotImplementedError

    @property
    def uses_scales(self) -> bool:
        return self.shape_calculation_mode == "scales"

    # --- resolved values ------------------------------------------------------------------
    @property
    def padded_shape(self) -> Shape:
        """The data shape after ``pads_begin``/``pads_end``."""
        shape = self.input_type(0).shape
        return tuple(d + b + e for d, b, e in zip(shape, self.pads_begin, self.pads_end))

    @property
    def axes(self) -> tuple[int, ...]:
        """The resized axes (all axes when there is no axes input).

        As in OpenVINO, axes must be in ``0..rank-1``: negative axes are rejected.
        """
        rank = self.input_type(0).rank
        if len(self.inputs) <= self.axes_port:
            return tuple(range(rank))
        axes = tuple(self.constant_input(self.axes_port, "axes", integer=True).tolist())
        if any(not 0 <= a < rank for a in axes) or len(set(axes)) != len(axes):
            raise self.error(f"axes {axes} are invalid for data of rank {rank}; expected "
                             f"distinct axes in 0..{rank - 1}")
        return axes

    @property
    def scales(self) -> tuple[np.float32, ...]:
        """Per resized axis, the float32 scale the coordinate transforms divide by.

        With ``scales`` it is the given scale; with ``sizes`` it is ``out / in`` (padded input).
        """
        axes = self.axes
        if self.uses_scales:
            values = self.constant_input(self.scales_port(), "scales", integer=False)
            return tuple(np.float32(v) for v in values[:len(axes)])
        out = self.output_types[0].shape
        padded = self.padded_shape
        return tuple(np.float32(out[a]) / np.float32(padded[a]) for a in axes)

    def constant_input(self, port: int, what: str, integer: bool) -> np.ndarray:
        """The 1-D constant on ``port``; ``ShapeError`` if it is not constant or badly typed."""
        value = constant_value(self.inputs[port])
        if value is None:
            raise self.error(f"input {port} ({what}) must be a constant to infer the output "
                             "shape; fold it first or give static input shapes")
        dtype = self.input_type(port).dtype
        if dtype.is_integer != integer or not (dtype.is_integer or dtype.is_float):
            expected = "an integer type" if integer else "a float type"
            raise self.error(f"input {port} ({what}) has element type {dtype}; "
                             f"expected {expected}")
        if value.ndim != 1:
            raise self.error(f"input {port} ({what}) has shape {value.shape}; expected 1-D")
        return value

    # --- inference ----------------------------------------------------------------------
    def check_supported(self) -> None:
        if self.mode not in IMPLEMENTED_MODES:
            raise self.error(f"mode '{self.mode}' is not supported by lpjit; supported modes: "
                             f"{', '.join(IMPLEMENTED_MODES)}", UnsupportedOpError)
        if self.antialias:
            raise self.error("antialias=true is not supported by lpjit", UnsupportedOpError)

    def infer(self) -> Sequence[TensorType]:
        self.check_supported()
        data = self.input_type(0)
        if data.rank == 0:
            raise self.error("data input is a scalar; expected rank >= 1")
        if any(p < 0 for p in (*self.pads_begin, *self.pads_end)):
            raise self.error(f"pads_begin={self.pads_begin}, pads_end={self.pads_end} must not "
                             "be negative")
        check_window_limit(self, "pads_begin", self.pads_begin)
        check_window_limit(self, "pads_end", self.pads_end)
        axes = self.axes
        port, what = ((self.scales_port(), "scales") if self.uses_scales
                      else (self.sizes_port(), "sizes"))
        values = self.constant_input(port, what, integer=not self.uses_scales)
        if len(values) < len(axes):
            raise self.error(f"input {port} ({what}) has {len(values)} values for "
                             f"{len(axes)} axes {axes}")
        out = list(self.padded_shape)
        for axis, value in zip(axes, values.tolist()):
            if not np.isfinite(value):
                raise self.error(f"{what} {values.tolist()} has the non-finite value {value} "
                                 f"on axis {axis}")
            out[axis] = scaled_dim(out[axis], value) if self.uses_scales else int(value)
            if out[axis] <= 0:
                raise self.error(f"{what} {values.tolist()} give output length {out[axis]} "
                                 f"on axis {axis}; expected >= 1")
        return [TensorType(data.dtype, tuple(out))]


@register("Interpolate", 4)
@opclass
class InterpolateV4(Interpolate):
    """Interpolate-4: inputs (data, sizes, scales, [axes])."""

    arity: ClassVar = (3, 4)
    axes_port: ClassVar[int] = 3

    def sizes_port(self) -> int:
        return 1

    def scales_port(self) -> int:
        return 2

    def check_supported(self) -> None:
        if self.mode in ("bilinear_pillow", "bicubic_pillow"):
            raise self.error(f"mode '{self.mode}' does not exist in Interpolate-4; use "
                             "Interpolate-11")
        super().check_supported()


@register("Interpolate", 11)
@opclass
class InterpolateV11(Interpolate):
    """Interpolate-11: inputs (data, scales_or_sizes, [axes])."""

    arity: ClassVar = (2, 3)
    axes_port: ClassVar[int] = 2

    def sizes_port(self) -> int:
        return 1

    def scales_port(self) -> int:
        return 1
