"""Convolution, GroupConvolution, MatMul, MaxPool and AvgPool: the ops with weights or windows.

Layout is NC + spatial (NCW, NCHW, NCDHW).  Convolutions and pools slide a window over the
spatial dims; ``auto_pad`` (``same_upper``, ``same_lower``, ``valid``) pads are resolved from the
input shape when the node is built, so ``pads_begin``/``pads_end`` always hold the effective pads
and no later stage recomputes them (``auto_pad`` is kept for the writer, which writes zero pads
as OpenVINO does).  Numpy semantics are in ``lpjit.reference.nn``.

Window attributes are limited when the node is built: pool kernels, strides, dilations and
(effective) pads above ``WINDOW_LIMIT`` (2^24) raise ``BadAttributeError``.  No real model
comes near (a 2^24 stride is a 16M-pixel step); above it, sizes derived from them (padded
extents, ``stride * index``, dilated kernels) leave the range the compiler's int64 index
arithmetic and work estimates are written for.  Values between the input extent and the limit
are legal and keep OpenVINO's meaning (a stride past the input gives one window).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.dtypes import DType
from lpjit.errors import BadAttributeError
from lpjit.graph import Node, Shape, TensorType, opclass
from lpjit.ops.common import broadcast_shapes, require_same_dtype
from lpjit.ops.registry import register

AUTO_PAD = ("explicit", "same_upper", "same_lower", "valid", "notset")
SPATIAL_RANKS = (3, 4, 5)
# Largest pool kernel, stride, dilation or pad lpjit accepts (see the module docstring).
WINDOW_LIMIT = 1 << 24


def check_window_limit(node: Node, name: str, values: Sequence[int], note: str = "") -> None:
    """``BadAttributeError`` naming ``node`` when a value of ``name`` exceeds ``WINDOW_LIMIT``."""
    if any(v > WINDOW_LIMIT for v in values):
        raise node.error(f"{name}={tuple(values)}{note} is out of range; lpjit supports "
                         f"values of at most {WINDOW_LIMIT} (2^24)", BadAttributeError)


def format_ints(values: Sequence[int]) -> str:
    """An integer list as OpenVINO writes it: ``"1, 1"``."""
    return ", ".join(str(int(v)) for v in values)


def format_bool(value: bool) -> str:
    return "true" if value else "false"


def parse_auto_pad(a: Attributes) -> str:
    """``auto_pad`` lower-cased; ``notset`` is OpenVINO's alias of ``explicit``."""
    mode = a.enum("auto_pad", AUTO_PAD, "explicit")
    return "explicit" if mode == "notset" else mode


# ------------------------------------------------------------------------------------------
# Window geometry shared by convolutions and pools.


def dilated_kernel(kernel: int, dilation: int) -> int:
    """Extent of a dilated kernel: ``d*(k-1) + 1``."""
    return dilation * (kernel - 1) + 1


def same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """(begin, end) pads that make the output ``ceil(size/stride)`` long.

    The total is ``max((ceil(I/s) - 1)*s + d*(k-1) + 1 - I, 0)``; ``same_upper`` puts the odd
    pixel at the end, ``same_lower`` at the beginning.
    """
    total = max(0, (-(-size // stride) - 1) * stride + dilated_kernel(kernel, dilation) - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def resolve_pads(auto_pad: str, spatial: Shape, kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], pads_begin: Sequence[int], pads_end: Sequence[int]
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The effective pads: explicit ones (empty = zeros), zeros for ``valid``, else ``same_*``."""
    n = len(spatial)
    if auto_pad == "explicit":
        return tuple(pads_begin) or (0,) * n, tuple(pads_end) or (0,) * n
    if auto_pad == "valid":
        return (0,) * n, (0,) * n
    pairs = [same_pads(i, k, s, d, auto_pad == "same_upper")
             for i, k, s, d in zip(spatial, kernel, strides, dilations)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def window_output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
                       pad_end: int, rounding: str = "floor") -> int:
    """Output length of a sliding window: ``round((I + pb + pe - d*(k-1) - 1)/s) + 1``.

    ``floor`` and ``ceil`` are plain roundings (``ceil`` may start the last window in the end
    padding, as OpenVINO's MaxPool-1/8 and AvgPool-1 do); ``ceil_torch`` drops a last window
    that would start at or past ``I + pb`` (PyTorch's ``ceil_mode``).
    """
    span = size + pad_begin + pad_end - dilated_kernel(kernel, dilation)
    if rounding == "floor":
        return span // stride + 1
    steps = -(-span // stride)
    if rounding == "ceil":
        return steps + 1
    return steps + 1 if steps * stride < size + pad_begin else steps


@opclass
class SlidingWindow(Node):
    """Base of the ops whose window slides over the spatial dims of an N, C, spatial... input.

    ``strides``/``dilations`` left empty mean ones; after construction ``pads_begin`` and
    ``pads_end`` hold the effective pads (resolved from ``auto_pad`` and the input shape).
    """

    strides: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    pads_begin: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    pads_end: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    auto_pad: str = "explicit"
    # The lists limited by ``WINDOW_LIMIT`` (a convolution's kernel is its weights' shape).
    limited: ClassVar[tuple[str, ...]] = ("strides", "dilations", "pads_begin", "pads_end")

    def __attrs_post_init__(self) -> None:
        """Resolve ones/zeros/auto pads when the input ranks allow it, then infer types."""
        low, high = self.arity
        rank = self.input_type(0).rank if low <= len(self.inputs) <= (high or low) else 0
        kernel = self.window_kernel() if rank in SPATIAL_RANKS else None
        if kernel is not None and len(kernel) == rank - 2:
            n = len(kernel)
            strides = self.strides or (1,) * n
            dilations = self.window_dilations() or (1,) * n
            if len(strides) == len(dilations) == n and 0 not in strides:
                pads = resolve_pads(self.auto_pad, self.input_type(0).shape[2:], kernel, strides,
                                    dilations, self.pads_begin, self.pads_end)
                object.__setattr__(self, "strides", strides)
                object.__setattr__(self, "pads_begin", pads[0])
                object.__setattr__(self, "pads_end", pads[1])
                self._set_dilations(dilations)
        super().__attrs_post_init__()

    # --- to be provided by subclasses -------------------------------------------------
    def window_kernel(self) -> tuple[int, ...] | None:
        """The (undilated) window size per spatial dim, or ``None`` if not known yet."""
        raise NotImplementedError

    def window_dilations(self) -> tuple[int, ...]:
        """Dilation per spatial dim (``()`` = ones)."""
        return ()

    def _set_dilations(self, dilations: tuple[int, ...]) -> None:
        """Store the resolved dilations (ops without a ``dilations`` field ignore them)."""

    # --- shared checks ------------------------------------------------------------------
    @property
    def spatial_rank(self) -> int:
        return self.input_type(0).rank - 2

    def check_data_rank(self) -> TensorType:
        data = self.input_type(0)
        if data.rank not in SPATIAL_RANKS:
            raise self.error(f"data input has shape {data.shape} (rank {data.rank}); expected "
                             "rank 3, 4 or 5 (N, C, then 1 to 3 spatial dims)")
        return data

    def check_window(self, kernel: Sequence[int], dilations: Sequence[int]) -> None:
        """Every per-axis list has one entry per spatial dim; strides/dilations/kernel > 0;
        pads >= 0; the ``limited`` lists <= ``WINDOW_LIMIT``."""
        n = self.spatial_rank
        lists = {"kernel": kernel, "strides": self.strides, "dilations": dilations,
                 "pads_begin": self.pads_begin, "pads_end": self.pads_end}
        for name, values in lists.items():
            if len(values) != n:
                raise self.error(f"{name}={tuple(values)} has {len(values)} entries; expected "
                                 f"{n} (one per spatial dim of input {self.input_type(0).shape})")
        for name in ("strides", "dilations", "kernel"):
            if any(v <= 0 for v in lists[name]):
                raise self.error(f"{name}={tuple(lists[name])} must be positive")
        if any(p < 0 for p in (*self.pads_begin, *self.pads_end)):
            raise self.error(f"pads_begin={self.pads_begin}, pads_end={self.pads_end} must not "
                             "be negative")
        resolved = "" if self.auto_pad == "explicit" else f" (from auto_pad={self.auto_pad})"
        for name in self.limited:
            check_window_limit(self, name, lists[name], resolved if "pads" in name else "")

    def spatial_output(self, kernel: Sequence[int], dilations: Sequence[int],
                       rounding: str = "floor") -> Shape:
        """Output spatial dims; ``ShapeError`` when a dilated kernel exceeds the padded input."""
        out = []
        spatial = self.input_type(0).shape[2:]
        for axis, (i, k, s, d, pb, pe) in enumerate(zip(spatial, kernel, self.strides, dilations,
                                                         self.pads_begin, self.pads_end)):
            if dilated_kernel(k, d) > i + pb + pe:
                raise self.error(f"spatial axis {axis}: the dilated kernel ({dilated_kernel(k, d)}"
                                 f") is larger than the padded input ({i} + {pb} + {pe})")
            out.append(window_output_size(i, k, s, d, pb, pe, rounding))
        return tuple(out)

    def window_attributes(self) -> dict[str, str]:
        """strides/pads as OpenVINO writes them: zero pads unless ``auto_pad`` is explicit."""
        explicit = self.auto_pad == "explicit"
        zeros = (0,) * len(self.pads_begin)
        return {"strides": format_ints(self.strides),
                "pads_begin": format_ints(self.pads_begin if explicit else zeros),
                "pads_end": format_ints(self.pads_end if explicit else zeros)}


# ------------------------------------------------------------------------------------------
# Convolutions


@opclass
class ConvolutionBase(SlidingWindow):
    """Shared part of Convolution-1 and GroupConvolution-1 (inputs: data, weights)."""

    dilations: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    arity: ClassVar = (2, 2)
    # Leading weight dims before [OC, IC, k...]: 0 for Convolution, 1 (groups) for GroupConvolution.
    group_dims: ClassVar[int] = 0

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"strides": a.ints("strides", ()), "dilations": a.ints("dilations", ()),
                "pads_begin": a.ints("pads_begin", ()), "pads_end": a.ints("pads_end", ()),
                "auto_pad": parse_auto_pad(a)}

    def window_kernel(self) -> tuple[int, ...] | None:
        weights = self.input_type(1)
        return weights.shape[2 + self.group_dims:] if weights.rank > 2 + self.group_dims else None

    def window_dilations(self) -> tuple[int, ...]:
        return self.dilations

    def _set_dilations(self, dilations: tuple[int, ...]) -> None:
        object.__setattr__(self, "dilations", dilations)

    def infer(self) -> Sequence[TensorType]:
        data = self.check_data_rank()
        weights = self.input_type(1)
        require_same_dtype(self)
        expected_rank = data.rank + self.group_dims
        if weights.rank != expected_rank:
            raise self.error(f"weights have shape {weights.shape} (rank {weights.rank}); expected "
                             f"rank {expected_rank} for data of rank {data.rank} "
                             f"({self.weights_layout()})")
        kernel = weights.shape[2 + self.group_dims:]
        self.check_window(kernel, self.dilations)
        out_channels = self.check_channels(data.shape[1], weights.shape)
        spatial = self.spatial_output(kernel, self.dilations)
        return [TensorType(data.dtype, (data.shape[0], out_channels, *spatial))]

    def weights_layout(self) -> str:
        raise NotImplementedError

    def check_channels(self, channels: int, weights: Shape) -> int:
        """Check the input channel count against the weights; return the output channels."""
        raise NotImplementedError


@register("Convolution", 1)
@opclass
class Convolution(ConvolutionBase):
    """2D/1D/3D convolution: weights ``[OC, IC, k...]``, output ``[N, OC, out...]``."""

    def to_ir(self) -> dict[str, str]:
        window = self.window_attributes()
        return {"strides": window["strides"], "dilations": format_ints(self.dilations),
                "pads_begin": window["pads_begin"], "pads_end": window["pads_end"],
                "auto_pad": self.auto_pad}

    def weights_layout(self) -> str:
        return "[OC, IC, k...]"

    def check_channels(self, channels: int, weights: Shape) -> int:
        if weights[1] != channels:
            raise self.error(f"input has {channels} channels but the weights {weights} expect "
                             f"{weights[1]} input channels")
        return weights[0]


@register("GroupConvolution", 1)
@opclass
class GroupConvolution(ConvolutionBase):
    """Grouped convolution: weights ``[G, OC/G, IC/G, k...]``; depthwise is ``[C, 1, 1, k...]``."""

    group_dims: ClassVar[int] = 1

    def to_ir(self) -> dict[str, str]:
        return {**self.window_attributes(), "dilations": format_ints(self.dilations),
                "auto_pad": self.auto_pad}

    @property
    def groups(self) -> int:
        return self.input_type(1).shape[0]

    def weights_layout(self) -> str:
        return "[G, OC/G, IC/G, k...]"

    def check_channels(self, channels: int, weights: Shape) -> int:
        groups, per_group_out, per_group_in = weights[:3]
        if groups * per_group_in != channels:
            raise self.error(f"input has {channels} channels but the weights {weights} expect "
                             f"{groups * per_group_in} ({groups} groups x {per_group_in})")
        return groups * per_group_out


# ------------------------------------------------------------------------------------------
# Pooling


@opclass
class Pool(SlidingWindow):
    """Shared part of MaxPool and AvgPool: a ``kernel`` attribute and a ``rounding_type``."""

    kernel: tuple[int, ...] = attrs.field(converter=tuple)
    rounding_type: str = "floor"
    arity: ClassVar = (1, 1)
    limited: ClassVar[tuple[str, ...]] = ("kernel", *SlidingWindow.limited)
    rounding_types: ClassVar[tuple[str, ...]] = ("floor", "ceil")

    @classmethod
    def window_from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"kernel": a.ints("kernel"), "strides": a.ints("strides", ()),
                "pads_begin": a.ints("pads_begin", ()), "pads_end": a.ints("pads_end", ()),
                "auto_pad": parse_auto_pad(a),
                "rounding_type": a.enum("rounding_type", cls.rounding_types, "floor")}

    def window_kernel(self) -> tuple[int, ...] | None:
        return self.kernel

    def output_shape(self) -> Shape:
        data = self.check_data_rank()
        if self.rounding_type not in self.rounding_types:
            raise self.error(f"rounding_type '{self.rounding_type}' is invalid; expected one of "
                             f"{', '.join(self.rounding_types)}")
        dilations = self.window_dilations()
        self.check_window(self.kernel, dilations)
        return (*data.shape[:2], *self.spatial_output(self.kernel, dilations, self.rounding_type))


@register("MaxPool", 1)
@opclass
class MaxPoolV1(Pool):
    """Max over each window; padding counts as -inf."""

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return cls.window_from_ir(a)

    def window_dilations(self) -> tuple[int, ...]:
        return (1,) * len(self.kernel)

    def to_ir(self) -> dict[str, str]:
        window = self.window_attributes()
        return {**window, "kernel": format_ints(self.kernel),
                "rounding_type": self.rounding_type, "auto_pad": self.auto_pad}

    def infer(self) -> Sequence[TensorType]:
        return [TensorType(self.input_type(0).dtype, self.output_shape())]


@register("MaxPool", 8)
@opclass
class MaxPoolV8(Pool):
    """MaxPool with dilations and a second output: the index of each maximum.

    An index is the element's position in the input flattened from dim ``axis`` on (axis 0:
    across the whole tensor, 2: within each (batch, channel) plane).
    """

    dilations: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    index_element_type: DType = dtypes.i64
    axis: int = 0

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {**cls.window_from_ir(a), "dilations": a.ints("dilations", ()),
                "index_element_type": a.dtype("index_element_type", dtypes.i64),
                "axis": a.int("axis", 0)}

    def window_dilations(self) -> tuple[int, ...]:
        return self.dilations

    def _set_dilations(self, dilations: tuple[int, ...]) -> None:
        object.__setattr__(self, "dilations", dilations)

    def to_ir(self) -> dict[str, str]:
        window = self.window_attributes()
        return {"strides": window["strides"], "dilations": format_ints(self.dilations),
                "pads_begin": window["pads_begin"], "pads_end": window["pads_end"],
                "kernel": format_ints(self.kernel), "rounding_type": self.rounding_type,
                "auto_pad": self.auto_pad, "index_element_type": self.index_element_type.name,
                "axis": str(self.axis)}

    @property
    def flatten_axis(self) -> int:
        """``axis`` normalised to ``[0, rank)``."""
        return self.axis + self.input_type(0).rank if self.axis < 0 else self.axis

    def infer(self) -> Sequence[TensorType]:
        shape = self.output_shape()
        if self.index_element_type not in (dtypes.i32, dtypes.i64):
            raise self.error(f"index_element_type {self.index_element_type} is invalid; "
                             "expected i32 or i64")
        rank = self.input_type(0).rank
        if not -rank <= self.axis < rank:
            raise self.error(f"axis {self.axis} is out of range for rank {rank}; expected "
                             f"{-rank}..{rank - 1}")
        return [TensorType(self.input_type(0).dtype, shape),
                TensorType(self.index_element_type, shape)]


@register("MaxPool", 14)
@opclass
class MaxPoolV14(MaxPoolV8):
    """MaxPool-8 plus ``rounding_type="ceil_torch"``."""

    rounding_types: ClassVar[tuple[str, ...]] = ("floor", "ceil", "ceil_torch")


@register("AvgPool", 1)
@opclass
class AvgPoolV1(Pool):
    """Mean over each window; ``exclude_pad`` (IR ``exclude-pad``) divides by the in-bounds count."""

    exclude_pad: bool = False

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {**cls.window_from_ir(a), "exclude_pad": a.bool("exclude-pad", False)}

    def window_dilations(self) -> tuple[int, ...]:
        return (1,) * len(self.kernel)

    def to_ir(self) -> dict[str, str]:
        window = self.window_attributes()
        return {"kernel": format_ints(self.kernel), **window,
                "exclude-pad": format_bool(self.exclude_pad), "auto_pad": self.auto_pad,
                "rounding_type": self.rounding_type}

    def infer(self) -> Sequence[TensorType]:
        shape = self.output_shape()
        for axis, (k, pb, pe) in enumerate(zip(self.kernel, self.pads_begin, self.pads_end)):
            if self.exclude_pad and not (k > pb and k > pe):
                raise self.error(f"spatial axis {axis}: with exclude-pad the kernel ({k}) must "
                                 f"be larger than both pads ({pb}, {pe}), or some windows lie "
                                 "entirely in the padding")
        return [TensorType(self.input_type(0).dtype, shape)]


@register("AvgPool", 14)
@opclass
class AvgPoolV14(AvgPoolV1):
    """AvgPool-1 plus ``rounding_type="ceil_torch"``."""

    rounding_types: ClassVar[tuple[str, ...]] = ("floor", "ceil", "ceil_torch")


# ------------------------------------------------------------------------------------------
# MatMul


@register("MatMul", 1)
@opclass
class MatMul(Node):
    """Batched matrix product with numpy broadcasting of the batch dims.

    ``transpose_a``/``transpose_b`` swap the last two dims of an input of rank >= 2.  A 1-D
    ``a`` is treated as ``[1, K]`` and a 1-D ``b`` as ``[K, 1]``; the added dim is removed from
    the result (transposes do not apply to 1-D inputs).
    """

    transpose_a: bool = False
    transpose_b: bool = False
    arity: ClassVar = (2, 2)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"transpose_a": a.bool("transpose_a", False),
                "transpose_b": a.bool("transpose_b", False)}

    def to_ir(self) -> dict[str, str]:
        return {"transpose_a": format_bool(self.transpose_a),
                "transpose_b": format_bool(self.transpose_b)}

    def matrix_shapes(self) -> tuple[Shape, Shape]:
        """Both inputs as (batch..., rows, cols) after the 1-D rule and the transposes."""
        a, b = self.input_type(0).shape, self.input_type(1).shape
        for i, shape in enumerate((a, b)):
            if len(shape) == 0:
                raise self.error(f"input {i} is a scalar; MatMul needs inputs of rank >= 1")
        a = (1, *a) if len(a) == 1 else _swap_last(a) if self.transpose_a else a
        b = (*b, 1) if len(b) == 1 else _swap_last(b) if self.transpose_b else b
        return a, b

    def infer(self) -> Sequence[TensorType]:
        require_same_dtype(self)
        a, b = self.matrix_shapes()
        if a[-1] != b[-2]:
            raise self.error(
                f"inner dimensions differ: input shapes {self.input_type(0).shape} and "
                f"{self.input_type(1).shape} give K={a[-1]} and K={b[-2]} "
                f"(transpose_a={self.transpose_a}, transpose_b={self.transpose_b})")
        batch = broadcast_shapes(self, a[:-2], b[:-2])
        rows = () if self.input_type(0).rank == 1 else (a[-2],)
        cols = () if self.input_type(1).rank == 1 else (b[-1],)
        return [TensorType(self.input_type(0).dtype, (*batch, *rows, *cols))]


def _swap_last(shape: Shape) -> Shape:
    return (*shape[:-2], shape[-1], shape[-2])
