"""Internal low-precision ops made by the INT8 passes (``lpjit.passes.low_precision``).

They are not IR layers (no ``@register``, no ``from_ir``/``to_ir``): each replaces IR layers and
keeps their origin, so errors and reports name the layer the user knows.  Their numpy
semantics, written as numbered steps with the rounding mode named, are ``lpjit.reference.lowp``.

Activations are **level indices**: ``Quantize`` maps a float tensor to the index ``q`` in
``[0, levels-1]`` that FakeQuantize would pick, and the float value of ``q`` is
``low + q * step`` with ``step = (high - low) / (levels - 1)``.  Weights are ``i8`` integers
``wq`` with an f32 scale per output channel: ``w = wq * scale``.

* ``Quantize(x, input_low, input_high)`` -> u8;  ``Dequantize(q, output_low, output_high)``.
* ``QConvolution(q, wq, weight_scale, input_step, input_low)``: Convolution and
  GroupConvolution (weights ``[G, OC/G, IC/G, k...]``; ``G = 1`` for a plain convolution).
* ``QMatMul(q, wq [N, K], weight_scale [N], input_step, input_low)``: activations x constant
  weights.  ``QActivationMatMul(qa, qb, ...)``: two quantized activations (attention).
* ``CompressedMatMul`` / ``CompressedConvolution``: float activations x low-precision weights
  (weight-only compression), ``w = (wq - zero_point) * scale`` decompressed in f32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import attrs
import numpy as np

from lpjit import dtypes
from lpjit.dtypes import DType
from lpjit.graph import Node, Shape, TensorType, constant_value, opclass
from lpjit.ops.common import broadcast_shapes, broadcasts_to
from lpjit.ops.nn import SlidingWindow

MAX_LEVELS = 256          # level indices are stored as u8
# |sum of wq * q| must fit the i32 accumulator of the integer kernels.
ACCUMULATOR_LIMIT = 2**31 - 1
COMPRESSED_TYPES = (dtypes.i8, dtypes.u8, dtypes.i4, dtypes.u4)


def accumulator_bound(weights: np.ndarray, reduce_axes: tuple[int, ...],
                      max_activation: int = MAX_LEVELS - 1) -> int:
    """The largest ``|sum(wq * q)|`` over the reduced axes for ``0 <= q <= max_activation``.

    Weights of at most 16 bits are widened to i32 only (their magnitudes fit), summed in i64:
    a third of the memory traffic of widening to i64 (this runs for every quantized
    convolution each time its node is built)."""
    narrow = weights.dtype.kind in "iub" and weights.dtype.itemsize <= 2
    magnitudes = np.abs(weights.astype(np.int32 if narrow else np.int64))
    sums = magnitudes.sum(axis=reduce_axes, dtype=np.int64)
    return int(sums.max(initial=0)) * max_activation


def _check_levels(node: Node, levels: int) -> None:
    if not 2 <= levels <= MAX_LEVELS:
        raise node.error(f"levels={levels} is invalid; a u8 level index needs 2 <= levels <= "
                         f"{MAX_LEVELS}")


def _check_ranges(node: Node, data: TensorType, ports: Sequence[int], names: Sequence[str],
                  dtype: DType) -> None:
    """Range inputs are ``dtype`` tensors that broadcast to ``data`` (numpy rules)."""
    for port, name in zip(ports, names):
        t = node.input_type(port)
        if t.dtype != dtype:
            raise node.error(f"input {port} ({name}) has element type {t.dtype}; expected {dtype}")
        if not broadcasts_to(t.shape, data.shape):
            raise node.error(f"input {port} ({name}) has shape {t.shape}, which does not "
                             f"broadcast to the data shape {data.shape}")


def _require_constant(node: Node, port: int, name: str, dtype: DType | tuple[DType, ...],
                      rank: int | None = None) -> np.ndarray:
    """Input ``port`` is a Constant of ``dtype`` (one of, if a tuple) and rank ``rank``."""
    data = constant_value(node.inputs[port])
    if data is None:
        raise node.error(f"input {port} ({name}) must be a constant")
    t = node.input_type(port)
    allowed = dtype if isinstance(dtype, tuple) else (dtype,)
    if t.dtype not in allowed:
        shown = " or ".join(str(d) for d in allowed)
        raise node.error(f"input {port} ({name}) has element type {t.dtype}; expected {shown}")
    if rank is not None and t.rank != rank:
        raise node.error(f"input {port} ({name}) has shape {t.shape}; expected rank {rank}")
    return data


def _check_vector(node: Node, port: int, name: str, allowed: Sequence[int]) -> None:
    """Input ``port`` is an f32 constant of shape ``[n]`` with ``n`` in ``allowed``."""
    _require_constant(node, port, name, dtypes.f32, rank=1)
    length = node.input_type(port).shape[0]
    if length not in allowed:
        shown = " or ".join(str(n) for n in sorted(set(allowed)))
        raise node.error(f"input {port} ({name}) has {length} values; expected {shown}")


# ------------------------------------------------------------------------------------------
# Quantize / Dequantize


@opclass
class Quantize(Node):
    """``q = level index of FakeQuantize(x, input_low, input_high, levels)``, as u8.

    Inputs ``x`` (float), ``input_low``, ``input_high`` (x's type, each broadcasting to ``x``).
    ``q`` is exactly the index the FakeQuantize reference rounds to; ``x <= min(il, ih)``
    gives 0, ``x > max(il, ih)`` gives ``levels - 1`` and NaN gives 0.
    """

    levels: int
    arity: ClassVar = (3, 3)

    def infer(self) -> Sequence[TensorType]:
        _check_levels(self, self.levels)
        data = self.input_type(0)
        if not data.dtype.is_float:
            raise self.error(f"input 0 (data) has element type {data.dtype}; expected a float "
                             "type")
        _check_ranges(self, data, (1, 2), ("input_low", "input_high"), data.dtype)
        return [TensorType(dtypes.u8, data.shape)]


@opclass
class Dequantize(Node):
    """``y = q / (levels-1) * (output_high - output_low) + output_low``; ``q == 0`` gives
    ``output_low`` and ``q == levels-1`` gives ``output_high`` exactly.

    Inputs ``q`` (u8 level indices), ``output_low``, ``output_high`` (a float type, which is the
    output type; each broadcasting to ``q``).
    """

    levels: int
    arity: ClassVar = (3, 3)

    def infer(self) -> Sequence[TensorType]:
        _check_levels(self, self.levels)
        data = self.input_type(0)
        if data.dtype != dtypes.u8:
            raise self.error(f"input 0 (level indices) has element type {data.dtype}; "
                             "expected u8")
        out = self.input_type(1).dtype
        if not out.is_float:
            raise self.error(f"input 1 (output_low) has element type {out}; expected a float "
                             "type")
        _check_ranges(self, data, (1, 2), ("output_low", "output_high"), out)
        return [TensorType(out, data.shape)]


# ------------------------------------------------------------------------------------------
# Integer convolution and matrix products


@opclass
class QConvolution(SlidingWindow):
    """Convolution of u8 level indices with i8 weights, exact in i32, f32 output.

    Inputs: ``data`` u8 ``[N, C, spatial...]``; ``weights`` i8 constant
    ``[G, OC/G, IC/G, k...]`` (``G = 1``: a plain Convolution); ``weight_scale`` f32 constant
    ``[OC]``; ``input_step`` and ``input_low`` f32 constants ``[1]`` (per tensor) or ``[C]``
    (per channel, only when ``IC/G == 1``, e.g. depthwise): the float input is
    ``input_low + q * input_step``.  Padding is 0.0 in float (not a level index).
    ``strides``/``dilations``/pads are the resolved attributes of the replaced layer.
    """

    dilations: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    arity: ClassVar = (5, 5)

    def window_kernel(self) -> tuple[int, ...] | None:
        weights = self.input_type(1)
        return weights.shape[3:] if weights.rank > 3 else None

    def window_dilations(self) -> tuple[int, ...]:
        return self.dilations

    def _set_dilations(self, dilations: tuple[int, ...]) -> None:
        object.__setattr__(self, "dilations", dilations)

    @property
    def groups(self) -> int:
        return self.input_type(1).shape[0]

    @property
    def out_channels(self) -> int:
        shape = self.input_type(1).shape
        return shape[0] * shape[1]

    def infer(self) -> Sequence[TensorType]:
        data = self.check_data_rank()
        if data.dtype != dtypes.u8:
            raise self.error(f"input 0 (data) has element type {data.dtype}; expected u8")
        weights = _require_constant(self, 1, "weights", dtypes.i8, rank=data.rank + 1)
        groups, per_group_out, per_group_in = weights.shape[:3]
        if groups * per_group_in != data.shape[1]:
            raise self.error(f"input has {data.shape[1]} channels but the weights "
                             f"{weights.shape} expect {groups * per_group_in} ({groups} groups "
                             f"x {per_group_in})")
        kernel = weights.shape[3:]
        self.check_window(kernel, self.dilations)
        _check_vector(self, 2, "weight_scale", (groups * per_group_out,))
        channels = (1, data.shape[1]) if per_group_in == 1 else (1,)
        _check_vector(self, 3, "input_step", channels)
        _check_vector(self, 4, "input_low", channels)
        reduce = tuple(range(2, weights.ndim))
        if accumulator_bound(weights, reduce) > ACCUMULATOR_LIMIT:
            raise self.error("the i32 accumulator could overflow: sum |wq| * 255 exceeds 2^31-1")
        spatial = self.spatial_output(kernel, self.dilations)
        return [TensorType(dtypes.f32, (data.shape[0], groups * per_group_out, *spatial))]


def _matrix_shape(node: Node, port: int, transpose: bool) -> Shape:
    """Input ``port`` as (batch..., rows, cols) after an optional transpose of the last two."""
    shape = node.input_type(port).shape
    if len(shape) < 2:
        raise node.error(f"input {port} has shape {shape}; expected rank >= 2")
    return (*shape[:-2], shape[-1], shape[-2]) if transpose else shape


@opclass
class QMatMul(Node):
    """``y[..., m, n] = sum_k x[..., m, k] * w[n, k]`` for u8 level indices times i8 weights.

    Inputs: ``data`` u8 ``[..., M, K]`` (``[..., K, M]`` with ``transpose_a``); ``weights`` i8
    constant ``[N, K]``; ``weight_scale`` f32 constant ``[N]``; ``input_step`` and
    ``input_low`` f32 constants ``[1]`` (per tensor).  Output f32 ``[..., M, N]``.
    """

    transpose_a: bool = False
    arity: ClassVar = (5, 5)

    def infer(self) -> Sequence[TensorType]:
        data = self.input_type(0)
        if data.dtype != dtypes.u8:
            raise self.error(f"input 0 (data) has element type {data.dtype}; expected u8")
        a = _matrix_shape(self, 0, self.transpose_a)
        weights = _require_constant(self, 1, "weights", dtypes.i8, rank=2)
        if weights.shape[1] != a[-1]:
            raise self.error(f"inner dimensions differ: data {data.shape} "
                             f"(transpose_a={self.transpose_a}) has K={a[-1]}, weights "
                             f"{weights.shape} have K={weights.shape[1]}")
        _check_vector(self, 2, "weight_scale", (weights.shape[0],))
        _check_vector(self, 3, "input_step", (1,))
        _check_vector(self, 4, "input_low", (1,))
        if accumulator_bound(weights, (1,)) > ACCUMULATOR_LIMIT:
            raise self.error("the i32 accumulator could overflow: sum |wq| * 255 exceeds 2^31-1")
        return [TensorType(dtypes.f32, (*a[:-1], weights.shape[0]))]


@opclass
class QActivationMatMul(Node):
    """``y = a @ b`` for two tensors of u8 level indices (attention's Q K^T), exact sums.

    Inputs: ``a`` u8, ``b`` u8 (rank >= 2, numpy batch broadcasting, optional transposes of the
    last two dims, as MatMul); ``a_step``, ``a_low``, ``b_step``, ``b_low`` f32 constants ``[1]``:
    the float inputs are ``a_low + qa * a_step`` and ``b_low + qb * b_step``.  Output f32.
    """

    transpose_a: bool = False
    transpose_b: bool = False
    arity: ClassVar = (6, 6)

    def infer(self) -> Sequence[TensorType]:
        for port in (0, 1):
            if self.input_type(port).dtype != dtypes.u8:
                raise self.error(f"input {port} has element type {self.input_type(port).dtype}"
                                 "; expected u8")
        a = _matrix_shape(self, 0, self.transpose_a)
        b = _matrix_shape(self, 1, self.transpose_b)
        if a[-1] != b[-2]:
            raise self.error(f"inner dimensions differ: K={a[-1]} and K={b[-2]}")
        if (MAX_LEVELS - 1) ** 2 * a[-1] > ACCUMULATOR_LIMIT:
            raise self.error(f"the i32 accumulator could overflow: K={a[-1]} is too large")
        for port, name in zip(range(2, 6), ("a_step", "a_low", "b_step", "b_low")):
            _check_vector(self, port, name, (1,))
        batch = broadcast_shapes(self, a[:-2], b[:-2])
        return [TensorType(dtypes.f32, (*batch, a[-2], b[-1]))]


# ------------------------------------------------------------------------------------------
# Weight-only compression: float activations, low-precision weights


def _check_zero_point(node: Node, port: int, expected: Shape) -> None:
    zero_point = _require_constant(node, port, "zero_point", COMPRESSED_TYPES + (dtypes.i32,))
    if zero_point.shape != expected:
        raise node.error(f"input {port} (zero_point) has shape {zero_point.shape}; expected "
                         f"{expected} (the scale's shape)")


@opclass
class CompressedMatMul(Node):
    """``y = a @ w^T`` with ``w[n, k] = (wq[n, k] - zero_point[n, g]) * scale[n, g]``,
    ``g = k // group_size``, decompressed in f32 (facts 3.1: as OpenVINO's CPU does).

    Inputs: ``data`` float ``[..., M, K]`` (``[..., K, M]`` with ``transpose_a``); ``weights``
    constant ``[N, K]`` of type i8/u8/i4/u4 (kept in that type); ``scale`` f32 constant
    ``[N, K / group_size]``; optional ``zero_point`` constant of the scale's shape.
    ``group_size == K`` means one scale per output row.
    """

    group_size: int
    transpose_a: bool = False
    arity: ClassVar = (3, 4)

    def infer(self) -> Sequence[TensorType]:
        data = self.input_type(0)
        if not data.dtype.is_float:
            raise self.error(f"input 0 (data) has element type {data.dtype}; expected a float "
                             "type")
        a = _matrix_shape(self, 0, self.transpose_a)
        weights = _require_constant(self, 1, "weights", COMPRESSED_TYPES, rank=2)
        rows, depth = weights.shape
        if depth != a[-1]:
            raise self.error(f"inner dimensions differ: data {data.shape} has K={a[-1]}, "
                             f"weights {weights.shape} have K={depth}")
        if self.group_size <= 0 or depth % self.group_size:
            raise self.error(f"group_size={self.group_size} does not divide K={depth}")
        scale_shape = (rows, depth // self.group_size)
        scale = _require_constant(self, 2, "scale", dtypes.f32, rank=2)
        if scale.shape != scale_shape:
            raise self.error(f"input 2 (scale) has shape {scale.shape}; expected {scale_shape}")
        if len(self.inputs) == 4:
            _check_zero_point(self, 3, scale_shape)
        return [TensorType(data.dtype, (*a[:-1], rows))]


@opclass
class CompressedConvolution(SlidingWindow):
    """Convolution of float data with low-precision weights decompressed in f32:
    ``w[g, o, ...] = (wq[g, o, ...] - zero_point[g*OCg + o]) * scale[g*OCg + o]``.

    Inputs: ``data`` float ``[N, C, spatial...]``; ``weights`` constant ``[G, OC/G, IC/G, k...]``
    of type i8/u8/i4/u4; ``scale`` f32 constant ``[OC]``; optional ``zero_point`` constant
    ``[OC]``.  The attributes are the replaced layer's resolved ones.
    """

    dilations: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    arity: ClassVar = (3, 4)

    def window_kernel(self) -> tuple[int, ...] | None:
        weights = self.input_type(1)
        return weights.shape[3:] if weights.rank > 3 else None

    def window_dilations(self) -> tuple[int, ...]:
        return self.dilations

    def _set_dilations(self, dilations: tuple[int, ...]) -> None:
        object.__setattr__(self, "dilations", dilations)

    @property
    def groups(self) -> int:
        return self.input_type(1).shape[0]

    def infer(self) -> Sequence[TensorType]:
        data = self.check_data_rank()
        if not data.dtype.is_float:
            raise self.error(f"input 0 (data) has element type {data.dtype}; expected a float "
                             "type")
        weights = _require_constant(self, 1, "weights", COMPRESSED_TYPES, rank=data.rank + 1)
        groups, per_group_out, per_group_in = weights.shape[:3]
        if groups * per_group_in != data.shape[1]:
            raise self.error(f"input has {data.shape[1]} channels but the weights "
                             f"{weights.shape} expect {groups * per_group_in}")
        kernel = weights.shape[3:]
        self.check_window(kernel, self.dilations)
        out_channels = groups * per_group_out
        _check_vector(self, 2, "scale", (out_channels,))
        if len(self.inputs) == 4:
            _check_zero_point(self, 3, (out_channels,))
        spatial = self.spatial_output(kernel, self.dilations)
        return [TensorType(data.dtype, (data.shape[0], out_channels, *spatial))]


INTEGER_OPS = (QConvolution, QMatMul, QActivationMatMul)
COMPRESSED_OPS = (CompressedMatMul, CompressedConvolution)
