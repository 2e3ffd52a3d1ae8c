"""MaxPool-1/8/14 and AvgPool-1/14 lowered to loops.

Loop nest: ``n``, ``c`` (the first of them longer than one iteration is ``parallel``), the
outer spatial output axes, then the innermost output axis split into three ranges: a left
border, an *interior* where every window tap lies inside the input along that axis, and a
right border.  The interior loop is ``vectorized`` (a tap reads a ramp of stride ``stride``)
and needs no bounds test along the axis; the borders are scalar and guard each tap.  Taps
along outer spatial axes are guarded by an ``If`` on their input index (uniform across the
vector lanes).  Semantics follow ``lpjit.reference.nn``:

* MaxPool starts from the lowest finite value (what a window entirely in the padding gives);
  taps in the padding are skipped.  MaxPool-8/14 also return the first maximum's position,
  flattened from dim ``axis`` on (a window in the padding gives spatial position 0).
* AvgPool divides the sum of the in-bounds taps by the kernel size when the op has pads and
  does not ``exclude-pad``, else by the number of in-bounds taps (0/0 = NaN for a ceil-mode
  window with none).  Integer means are rounded half to even.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import (
    SERIAL,
    Buffer,
    Cast,
    Expr,
    IntImm,
    Load,
    ScalarType,
    Select,
    as_expr,
    f32,
    from_dtype,
    i64,
    value_type,
    vectorized,
)
from lowering.lower_graph import (
    Epilogue,
    LoweringContext,
    kernel_builder,
    lowering,
    make_kernel,
)
from lowering.ops.reductions import parallel_kind
from lpjit.ops import nn


@attrs.frozen
class Window:
    """The geometry of one pool: per spatial axis input size, output size, kernel, stride,
    dilation and begin pad."""

    size: tuple[int, ...]
    out: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad: tuple[int, ...]

    @classmethod
    def of(cls, node: nn.Pool) -> Window:
        return cls(node.input_type(0).shape[2:], node.output_types[0].shape[2:], node.kernel,
                   node.strides, node.window_dilations(), node.pads_begin)

    def interior(self, axis: int) -> tuple[int, int]:
        """Output range ``[lo, hi)`` of ``axis`` whose taps all lie inside the input."""
        i, o, k, s, d, p = (self.size[axis], self.out[axis], self.kernel[axis],
                            self.stride[axis], self.dilation[axis], self.pad[axis])
        lo = min(-(-p // s), o)
        last = i - 1 - (k - 1) * d + p          # largest window start (padded) inside
        hi = min(o, last // s + 1) if last >= 0 else 0
        return lo, max(lo, hi)

    def always_inside(self, axis: int) -> bool:
        lo, hi = self.interior(axis)
        return lo == 0 and hi == self.out[axis]


@attrs.frozen
class Tap:
    """One window position: the input index per spatial axis (``coords``) and whether it is
    known to be inside the input."""

    coords: tuple[Expr, ...]


class PoolBody:
    """What a pool computes per output element: ``start`` its state, ``visit`` each tap,
    ``finish`` the result(s)."""

    def start(self, b: lb.KernelBuilder) -> None:
        raise NotImplementedError

    def visit(self, b: lb.KernelBuilder, tap: Tap) -> None:
        raise NotImplementedError

    def finish(self, b: lb.KernelBuilder, nc: Sequence[Expr], outs: Sequence[Expr],
               inside_last: bool) -> None:
        raise NotImplementedError


def lower_pool(ctx: LoweringContext, node: nn.Pool, body_of) -> list:
    """The loop nest of the module docstring around ``body_of(frame) -> PoolBody``."""
    window = Window.of(node)
    b = kernel_builder(ctx, node)
    batch, channels = node.input_type(0).shape[:2]
    taken = [False]
    with contextlib.ExitStack() as stack:
        n = stack.enter_context(b.for_range(batch, parallel_kind(ctx, batch, taken), "n"))
        c = stack.enter_context(b.for_range(channels, parallel_kind(ctx, channels, taken), "c"))
        outs: list[Expr] = []
        for axis in range(len(window.out) - 1):
            extent = window.out[axis]
            outs.append(stack.enter_context(
                b.for_range(extent, parallel_kind(ctx, extent, taken), "o")))
        last = len(window.out) - 1
        lo, hi = window.interior(last)
        for start, stop, inside in ((0, lo, False), (lo, hi, True), (hi, window.out[last], False)):
            if stop <= start:
                continue
            kind = vectorized(ctx.lanes) if inside and stop - start >= ctx.lanes else SERIAL
            with b.for_range(stop - start, kind, "w") as w:
                o_last = w + start if start else w
                body = body_of((n, c))
                body.start(b)
                _taps(b, window, [*outs, o_last], inside, body)
                body.finish(b, (n, c), [*outs, o_last], inside)
    return [make_kernel(b)]


def _taps(b: lb.KernelBuilder, window: Window, outs: Sequence[Expr], inside_last: bool,
          body: PoolBody) -> None:
    """Loops over the kernel positions, guarding taps that may fall in the padding."""
    coords: list[Expr] = []
    with contextlib.ExitStack() as stack:
        last = len(outs) - 1
        for axis, o in enumerate(outs):
            k = stack.enter_context(b.for_range(window.kernel[axis], SERIAL, "k"))
            index = _input_index(o, k, window, axis)
            guard = not (inside_last if axis == last else window.always_inside(axis))
            if guard or axis != last:
                # A bound variable lets the verifier narrow it by the guard; the innermost
                # index stays an expression so that vectorization turns it into a ramp.
                index = b.let(index, "iw" if axis == last else "ih")
            if guard:
                stack.enter_context(b.if_(lb.binary("and", lb.ge(index, 0),
                                                    lb.lt(index, window.size[axis]))))
            coords.append(index)
        body.visit(b, Tap(tuple(coords)))


def _input_index(o: Expr, k: Expr, window: Window, axis: int) -> Expr:
    """``o * stride - pad + k * dilation`` (trivial factors and terms left out)."""
    stride, pad, dilation = window.stride[axis], window.pad[axis], window.dilation[axis]
    index = o if stride == 1 else o * stride
    if pad:
        index = index - pad
    return index + (k if dilation == 1 else k * dilation)


def _spatial_flat(coords: Sequence[Expr], size: Sequence[int]) -> Expr:
    """Row-major position of ``coords`` in a plane of ``size``."""
    flat: Expr = coords[0]
    for coordinate, extent in zip(coords[1:], size[1:]):
        flat = flat * extent + coordinate
    return flat


# -- MaxPool -----------------------------------------------------------------------------------

def lowest(storage: ScalarType) -> float | int:
    """The lowest finite value of element type ``storage`` (MaxPool's padding value)."""
    if storage.is_float:
        return float(np.finfo(storage.numpy).min)
    return storage.min


class MaxBody(PoolBody):
    """Running maximum, and the position of its first occurrence when ``indices`` is set."""

    def __init__(self, source: Buffer, nc: Sequence[Expr], window: Window,
                 store, indices: Buffer | None = None, flat_axis: int = 0) -> None:
        self.source, self.nc, self.window = source, tuple(nc), window
        self.store, self.indices, self.flat_axis = store, indices, flat_axis

    def start(self, b: lb.KernelBuilder) -> None:
        t = value_type(self.source.dtype)
        self.best = b.local(as_expr(lowest(self.source.dtype), t), "best")
        self.where = b.local(IntImm(0), "where") if self.indices is not None else None

    def visit(self, b: lb.KernelBuilder, tap: Tap) -> None:
        x = b.let(Load(self.source, (*self.nc, *tap.coords)), "x")
        if self.where is None:
            b.assign(self.best, lb.max_(self.best, x))
            return
        better = b.let(lb.gt(x, self.best), "better")
        b.assign(self.where, Select(better, _spatial_flat(tap.coords, self.window.size),
                                    self.where))
        b.assign(self.best, Select(better, x, self.best))

    def finish(self, b: lb.KernelBuilder, nc: Sequence[Expr], outs: Sequence[Expr],
               inside_last: bool) -> None:
        self.store(b, [*nc, *outs], self.best)
        if self.indices is None:
            return
        position = self._flat_position(nc)
        dtype = self.indices.dtype
        value = position if dtype == i64 else Cast(position, dtype, "wrap")
        b.store(self.indices, (*nc, *outs), value)


    def _flat_position(self, nc: Sequence[Expr]) -> Expr:
        """The maximum's position in the input flattened from dim ``flat_axis`` on."""
        n, c = nc
        size = self.window.size
        plane = math.prod(size)
        if self.flat_axis == 0:
            return self.where + (n * self.source.shape[1] + c) * plane
        if self.flat_axis == 1:
            return self.where + c * plane
        modulus = math.prod(size[self.flat_axis - 2:])
        return self.where if modulus == plane else lb.binary("mod", self.where, modulus)


@lowering(nn.MaxPoolV1)
def lower_max_pool_v1(ctx: LoweringContext, node: nn.MaxPoolV1, epilogue: Epilogue) -> list:
    source = ctx.buffer(node.inputs[0])
    window = Window.of(node)
    return lower_pool(ctx, node, lambda nc: MaxBody(source, nc, window, epilogue.store))


@lowering(nn.MaxPoolV8, nn.MaxPoolV14, epilogue=False)
def lower_max_pool_v8(ctx: LoweringContext, node: nn.MaxPoolV8, epilogue: Epilogue) -> list:
    """Two outputs: values, and indices (computed only when something reads them)."""
    source = ctx.buffer(node.inputs[0])
    window = Window.of(node)
    values = ctx.new_buffer(node.outputs[0])
    index_value = node.outputs[1]
    used = bool(ctx.graph.consumers.get(index_value)) or index_value in ctx.model_outputs
    indices = ctx.new_buffer(index_value) if used else None

    def store(b: lb.KernelBuilder, index: Sequence[Expr], value: Expr) -> None:
        b.store(values, tuple(index), value)

    return lower_pool(ctx, node, lambda nc: MaxBody(source, nc, window, store, indices,
                                                    node.flatten_axis))


# -- AvgPool -----------------------------------------------------------------------------------

class AvgBody(PoolBody):
    """Sum of the in-bounds taps over the divisor of the module docstring."""

    def __init__(self, source: Buffer, window: Window, nc: Sequence[Expr], fixed_divisor: bool,
                 out_dtype: ScalarType, store) -> None:
        self.source, self.window, self.nc = source, window, tuple(nc)
        self.fixed_divisor, self.out_dtype, self.store = fixed_divisor, out_dtype, store

    def start(self, b: lb.KernelBuilder) -> None:
        self.total = b.local(as_expr(0.0, f32), "total")

    def visit(self, b: lb.KernelBuilder, tap: Tap) -> None:
        x = Load(self.source, (*self.nc, *tap.coords))
        b.assign(self.total, self.total + _to_f32(x))

    def finish(self, b: lb.KernelBuilder, nc: Sequence[Expr], outs: Sequence[Expr],
               inside_last: bool) -> None:
        mean = self.total / self.divisor(outs, inside_last)
        if self.out_dtype.is_int:
            mean = Cast(mean, self.out_dtype, "round_even_sat")
        self.store(b, [*nc, *outs], mean)

    def divisor(self, outs: Sequence[Expr], inside_last: bool) -> Expr:
        w = self.window
        if self.fixed_divisor:
            return as_expr(float(math.prod(w.kernel)), f32)
        count: Expr | None = None
        known = 1
        last = len(outs) - 1
        for axis, o in enumerate(outs):
            if w.always_inside(axis) or (axis == last and inside_last):
                known *= w.kernel[axis]
                continue
            start = o * w.stride[axis] - w.pad[axis]
            inside = lb.min_(start + w.kernel[axis], w.size[axis]) - lb.max_(start, 0)
            inside = lb.max_(inside, 0)
            count = inside if count is None else count * inside
        if count is None:
            return as_expr(float(known), f32)
        return Cast(count * known, f32, "nearest")


def _to_f32(x: Expr) -> Expr:
    t = x.type.elem
    if t == f32:
        return x
    return Cast(x, f32, "exact" if t.bits < 24 else "nearest")


@lowering(nn.AvgPoolV1, nn.AvgPoolV14)
def lower_avg_pool(ctx: LoweringContext, node: nn.AvgPoolV1, epilogue: Epilogue) -> list:
    source = ctx.buffer(node.inputs[0])
    window = Window.of(node)
    has_pads = any(node.pads_begin) or any(node.pads_end)
    fixed = has_pads and not node.exclude_pad
    out_dtype = value_type(from_dtype(node.output_types[0].dtype))
    return lower_pool(ctx, node, lambda nc: AvgBody(source, window, nc, fixed, out_dtype,
                                                    epilogue.store))


__all__ = ["AvgBody", "MaxBody", "Window", "lower_pool", "lowest"]
