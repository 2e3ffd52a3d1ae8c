"""MaxPool-1/8/14 and AvgPool-1/14 lowered to loops.

Row scheme (``_lower_rows``; MaxPool without indices and AvgPool, last-axis stride 1 or 2):
per ``n``, ``c`` and chunk of output rows, pass 1 combines each output row's taps along the
outer axes into a row on the stack, padded with the identity (the lowest value, or 0), and
pass 2 combines each output's last-axis taps from that row as vector blocks of dense loads
(and a shuffle keeping every other lane for stride 2) with no bounds test at all.

Per-tap scheme (the others): loop nest ``n``, ``c``, the outer spatial output axes (the first
loop of them longer than one iteration is ``parallel``), then the innermost output axis split
into ranges: a left
border, an *interior* where every window tap lies inside the input along that axis, and a
right border.  The interior needs no bounds test along the axis; with stride 2 it runs as
blocks of one vector of outputs, each tap two dense loads and a shuffle keeping every other
lane, and otherwise (or for what is left) as a ``vectorized`` loop whose taps read ramps of
stride ``stride``.  The borders are scalar and guard each tap.  Taps along outer spatial axes
are guarded by an ``If`` on their input index (uniform across the vector lanes).  Semantics
follow ``lpjit.reference.nn``:

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
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import (
    SERIAL,
    Buffer,
    Cast,
    Expr,
    Load,
    LoopKind,
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
from lowering.ops.reductions import parallel_kind, splat
from lpjit.ops import nn

# Stores one output value at its indices (the epilogue's, or a plain store).
Store = Callable[[lb.KernelBuilder, Sequence[Expr], Expr], object]


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

    def taps(self, axis: int, first: int, last: int) -> tuple[int, int]:
        """Kernel taps ``[lo, hi)`` of ``axis`` inside the input for some output in
        ``first..last``: ``0 <= o*s - p + k*d < size``.  The others read only padding, so
        the tap loops skip them (a 2^24-wide window costs what its in-bounds taps cost)."""
        i, k, s, d, p = (self.size[axis], self.kernel[axis], self.stride[axis],
                         self.dilation[axis], self.pad[axis])
        lo = max(0, -((last * s - p) // d))
        hi = min(k, (i - 1 + p - first * s) // d + 1)
        return lo, max(lo, hi)

    def always_inside(self, axis: int) -> bool:
        lo, hi = self.interior(axis)
        return lo == 0 and hi == self.out[axis]


@attrs.frozen(eq=False)
class Tap:
    """One window position of ``lanes`` outputs: the input ``value`` there and its row-major
    ``position`` in the spatial plane (i64, computed only when asked for)."""

    value: Expr
    outer: tuple[Expr, ...]    # input coordinates along the outer spatial axes
    last: Expr                 # input coordinate along the innermost axis (of the first lane)
    size: tuple[int, ...]      # the input's spatial shape
    stride: int = 1            # input step between lanes (block taps)
    lanes: int = 1

    @property
    def position(self) -> Expr:
        flat: Expr | None = None
        for coordinate, extent in zip(self.outer, self.size):
            flat = coordinate if flat is None else flat * extent + coordinate
        base = self.last if flat is None else flat * self.size[-1] + self.last
        return base if self.lanes == 1 else lb.ramp(base, self.lanes, self.stride)


class PoolBody:
    """What a pool computes per output element (or block of ``lanes`` elements): ``start`` its
    state, ``visit`` each tap, ``finish`` the result(s)."""

    def start(self, b: lb.KernelBuilder, lanes: int) -> None:
        raise NotImplementedError

    def visit(self, b: lb.KernelBuilder, tap: Tap) -> None:
        raise NotImplementedError

    def finish(self, b: lb.KernelBuilder, nc: Sequence[Expr], outs: Sequence[Expr],
               inside_last: bool) -> None:
        raise NotImplementedError

    # The row scheme (``_lower_rows``): the taps' values combined along the outer axes into a
    # padded row of ``row_type`` (``identity`` in the padding), then along the last axis.
    row_type: ScalarType | None = None    # None: this body needs the per-tap scheme

    def identity(self) -> float | int:
        raise NotImplementedError

    def combine(self, acc: Expr, x: Expr) -> Expr:
        raise NotImplementedError


def lower_pool(ctx: LoweringContext, node: nn.Pool, source: Buffer,
               body_of: Callable[[], PoolBody]) -> list:
    """The loop nest of the module docstring; ``body_of()`` makes each output's state."""
    window = Window.of(node)
    b = kernel_builder(ctx, node)
    batch, channels = node.input_type(0).shape[:2]
    taken = [False]
    length = _row_length(window, body_of())
    if length:
        return _lower_rows(ctx, node, window, source, body_of(), length)
    with contextlib.ExitStack() as stack:
        n = stack.enter_context(b.for_range(batch, parallel_kind(ctx, batch, taken), "n"))
        c = stack.enter_context(b.for_range(channels, parallel_kind(ctx, channels, taken), "c"))
        nc = (n, c)
        outs: list[Expr] = []
        for axis in range(len(window.out) - 1):
            extent = window.out[axis]
            outs.append(stack.enter_context(
                b.for_range(extent, parallel_kind(ctx, extent, taken), "o")))
        for region in _regions(window, ctx.lanes):
            with b.for_range(region.count, region.kind, "w") as w:
                o_last: Expr = w if region.step == 1 else w * region.step
                if region.start:
                    o_last = o_last + region.start
                if region.block:
                    o_last = lb.ramp(o_last, region.block)
                body = body_of()
                body.start(b, region.block or 1)
                _taps(b, window, source, nc, [*outs, o_last], region, body)
                body.finish(b, nc, [*outs, o_last], region.inside)
    return [make_kernel(b)]

# Rows longer than this (elements) and last-axis kernels wider than this take the per-tap
# scheme (the row lives on the stack; the last-axis taps are unrolled).
MAX_ROW = 16384
MAX_ROW_TAPS = 16
# Stack bytes of one chunk of rows (the rows of a channel are split into as few chunks).
SCRATCH_BYTES = 16384


def _row_length(window: Window, body: PoolBody) -> int:
    """The padded row length of the row scheme, 0 when the pool takes the per-tap scheme
    (a body without one, last-axis stride above 2, a kernel or a row too long)."""
    k, s, d = window.kernel[-1], window.stride[-1], window.dilation[-1]
    if body.row_type is None or s > 2 or k > MAX_ROW_TAPS or 0 in window.out + window.size:
        return 0
    # Reads of the last block (``_combine_row``) end at out*s + ((k-1)*d // s)*s.
    length = max(window.pad[-1] + window.size[-1], window.out[-1] * s + (k - 1) * d // s * s)
    return length if length <= MAX_ROW else 0


def _lower_rows(ctx: LoweringContext, node: nn.Pool, window: Window, source: Buffer,
                body: PoolBody, length: int) -> list:
    """The row scheme: per ``n``, ``c`` and chunk of output rows (the outer output axes
    flattened), pass 1 fills a stack row per output row with the outer taps of each input
    column combined (``_fill_row``), then pass 2 combines each output's last-axis taps from
    it (``_combine_row``).  The passes are separate loops over the chunk, so that the second
    reads the rows from memory (forwarding the first's stores into registers would need
    cross-lane byte shuffles)."""
    b = kernel_builder(ctx, node)
    batch, channels = node.input_type(0).shape[:2]
    t = body.row_type
    lanes = ctx.target.vector_bits // t.bits
    rows = math.prod(window.out[:-1])
    chunks = max(1, -(-rows * length * t.nbytes // SCRATCH_BYTES))
    per_chunk = -(-rows // chunks)
    chunks = -(-rows // per_chunk)
    taken = [False]
    with (b.for_range(batch, parallel_kind(ctx, batch, taken), "n") as n,
          b.for_range(channels, parallel_kind(ctx, channels, taken), "c") as c,
          b.for_range(chunks, parallel_kind(ctx, chunks, taken), "g") as g):
        scratch = b.allocate("rows", t, (per_chunk, length))
        first: Expr = g * per_chunk
        if rows % per_chunk:
            # The last chunk ends at the last row, overlapping the one before.
            first = lb.min_(first, rows - per_chunk)
        first = b.let(first, "first")
        for fill in (True, False):
            with b.for_range(per_chunk, SERIAL, "r") as r:
                outs = _unflatten(first + r, window.out[:-1])
                if fill:
                    _fill_row(b, window, source, (n, c), outs, scratch, r, body, lanes)
                else:
                    _combine_row(b, window, (n, c), outs, scratch, r, body, lanes)
    return [make_kernel(b)]


def _unflatten(q: Expr, extents: Sequence[int]) -> list[Expr]:
    """The indices of row-major position ``q`` (``< prod(extents)``) in ``extents``."""
    outs: list[Expr] = []
    inner = math.prod(extents)
    for axis, extent in enumerate(extents):
        inner //= extent
        index = q if inner == 1 else q // inner
        outs.append(index % extent if axis else index)
    return outs


def _fill_row(b: lb.KernelBuilder, window: Window, source: Buffer, nc: tuple[Expr, ...],
              outs: Sequence[Expr], scratch: Buffer, r: Expr, body: PoolBody,
              lanes: int) -> None:
    """``scratch[r, pad + x]`` = the outer taps of input column ``x`` combined (the taps in
    the padding skipped by a guard uniform across lanes), ``identity`` at the other
    positions."""
    t = body.row_type
    pad, size = window.pad[-1], window.size[-1]
    length = scratch.shape[1]

    def fill(lo: int) -> Callable[[Expr, int], None]:
        def emit(start: Expr, width: int) -> None:
            b.store(scratch, (r, _span(start + lo if lo else start, width)),
                    as_expr(body.identity(), t.with_lanes(width)))
        return emit

    if pad:
        _blocks(b, pad, lanes, fill(0))
    if length > pad + size:
        _blocks(b, length - pad - size, lanes, fill(pad + size))

    def column(start: Expr, width: int) -> None:
        acc = b.local(as_expr(body.identity(), t.with_lanes(width)), "acc")
        with contextlib.ExitStack() as stack:
            coords = []
            for axis, o in enumerate(outs):
                lo, hi = window.taps(axis, 0, window.out[axis] - 1)
                k: Expr = stack.enter_context(b.for_range(hi - lo, SERIAL, "k"))
                index = b.let(_input_index(o, k + lo if lo else k, window, axis), "ih")
                if not window.always_inside(axis):
                    stack.enter_context(b.if_(lb.binary("and", lb.ge(index, 0),
                                                        lb.lt(index, window.size[axis]))))
                coords.append(index)
            x = b.let(Load(source, (*nc, *coords, _span(start, width))), "x")
            b.assign(acc, body.combine(acc, x))
        b.store(scratch, (r, _span(start + pad if pad else start, width)), acc)

    _blocks(b, size, lanes, column)


def _combine_row(b: lb.KernelBuilder, window: Window, nc: tuple[Expr, ...],
                 outs: Sequence[Expr], scratch: Buffer, r: Expr, body: PoolBody,
                 lanes: int) -> None:
    """Each output of the row combines its last-axis taps ``scratch[r, o*stride +
    k*dilation]``, with no bounds test; a block of outputs reads ``stride`` dense vectors
    per group of taps and picks every ``stride``-th lane."""
    stride, dilation = window.stride[-1], window.dilation[-1]

    def emit(start: Expr, width: int) -> None:
        body.start(b, width)
        base = start * stride if stride > 1 else start
        for k in range(window.kernel[-1]):
            offset = k * dilation
            if width == 1:
                value: Expr = Load(scratch, (r, base + offset if offset else base))
            else:
                head = offset // stride * stride
                value = _strided(scratch, (r,), base + head if head else base, stride, width,
                                 offset % stride)
            body.visit(b, Tap(value, (), as_expr(0), window.size))
        body.finish(b, nc, [*outs, _span(start, width)], False)

    _blocks(b, window.out[-1], lanes, emit)


def _span(start: Expr, width: int) -> Expr:
    return start if width == 1 else lb.ramp(start, width)


def _blocks(b: lb.KernelBuilder, extent: int, lanes: int,
            emit: Callable[[Expr, int], None]) -> None:
    """``emit(start, width)`` for blocks covering ``[0, extent)``: a loop of whole blocks of
    ``width`` (``lanes``, or the largest power of two up to ``extent``), then one block
    ending at ``extent`` overlapping the last (its values are recomputed, not changed)."""
    width = min(lanes, 1 << (extent.bit_length() - 1))
    whole = extent // width
    if whole == 1:
        emit(as_expr(0), width)
    else:
        with b.for_range(whole, SERIAL, "x") as x:
            emit(x * width, width)
    if extent % width:
        emit(as_expr(extent - width), width)


@attrs.frozen
class Region:
    """A range of the innermost output axis: ``count`` iterations from ``start`` by ``step``
    outputs; ``inside``: every tap within the input along the axis; ``block`` > 0: each
    iteration computes ``block`` outputs from dense loads and a shuffle (strided windows)."""

    start: int
    count: int
    kind: LoopKind = SERIAL
    inside: bool = False
    block: int = 0

    @property
    def step(self) -> int:
        return self.block or 1


def _regions(window: Window, lanes: int) -> list[Region]:
    """Left border, interior (blocks of ``lanes`` outputs when the stride is 2, then a
    vectorized loop whose strided loads are gathers), right border."""
    axis = len(window.out) - 1
    lo, hi = window.interior(axis)
    size, stride = window.size[axis], window.stride[axis]
    regions = [Region(0, lo)]
    start = lo
    if stride == 2:
        # The last dense load of a block starting at output o ends at input index
        # o*stride - pad + (kernel-1)*dilation + stride*lanes - 1.
        reach = size - (window.kernel[axis] - 1) * window.dilation[axis] + window.pad[axis]
        last_start = min((reach - stride * lanes) // stride, hi - lanes)
        if last_start >= lo:
            blocks = (last_start - lo) // lanes + 1
            regions.append(Region(lo, blocks, SERIAL, True, lanes))
            start = lo + blocks * lanes
    kind = vectorized(lanes) if hi - start >= lanes else SERIAL
    regions += [Region(start, hi - start, kind, True), Region(hi, window.out[axis] - hi)]
    return [r for r in regions if r.count > 0]


def _taps(b: lb.KernelBuilder, window: Window, source: Buffer, nc: tuple[Expr, ...],
          outs: Sequence[Expr], region: Region, body: PoolBody) -> None:
    """Loops over the kernel positions that may lie inside the input for the region's
    outputs (``Window.taps``), guarding those that may fall in the padding."""
    coords: list[Expr] = []
    with contextlib.ExitStack() as stack:
        last = len(outs) - 1
        for axis, o in enumerate(outs):
            first, final = ((region.start, region.start + region.count * region.step - 1)
                            if axis == last else (0, window.out[axis] - 1))
            lo, hi = window.taps(axis, first, final)
            k: Expr = stack.enter_context(b.for_range(hi - lo, SERIAL, "k"))
            if lo:
                k = k + lo
            if axis == last and region.block:
                o = o.base                      # the block's first output
            index = _input_index(o, k, window, axis)
            guard = not (region.inside if axis == last else window.always_inside(axis))
            if guard or axis != last:
                # A bound variable lets the verifier narrow it by the guard; the innermost
                # index stays an expression so that vectorization turns it into a ramp.
                index = b.let(index, "iw" if axis == last else "ih")
            if guard:
                stack.enter_context(b.if_(lb.binary("and", lb.ge(index, 0),
                                                    lb.lt(index, window.size[axis]))))
            coords.append(index)
        *outer, innermost = coords
        if region.block:
            stride = window.stride[last]
            value = _strided(source, (*nc, *outer), innermost, stride, region.block)
            body.visit(b, Tap(value, tuple(outer), innermost, window.size, stride,
                              region.block))
        else:
            value = Load(source, (*nc, *coords))
            body.visit(b, Tap(value, tuple(outer), innermost, window.size))


def _strided(source: Buffer, head: tuple[Expr, ...], start: Expr, stride: int, lanes: int,
             phase: int = 0) -> Expr:
    """``source[*head, start + phase + stride*j]`` for lanes ``j``: ``stride`` dense loads
    from ``start`` and one shuffle picking every ``stride``-th element."""
    if stride == 1:
        return Load(source, (*head, lb.ramp(start + phase if phase else start, lanes)))
    chunks = [Load(source, (*head, lb.ramp(start + m * lanes if m else start, lanes)))
              for m in range(stride)]
    return lb.shuffle(chunks, [j * stride + phase for j in range(lanes)])


def _input_index(o: Expr, k: Expr, window: Window, axis: int) -> Expr:
    """``o * stride - pad + k * dilation`` (trivial factors and terms left out)."""
    stride, pad, dilation = window.stride[axis], window.pad[axis], window.dilation[axis]
    index = o if stride == 1 else o * stride
    if pad:
        index = index - pad
    return index + (k if dilation == 1 else k * dilation)


# -- MaxPool -----------------------------------------------------------------------------------

def lowest(storage: ScalarType) -> float | int:
    """The lowest finite value of element type ``storage`` (MaxPool's padding value)."""
    if storage.is_float:
        return float(np.finfo(storage.numpy).min)
    return storage.min


class MaxBody(PoolBody):
    """Running maximum, and the position of its first occurrence when ``indices`` is set."""

    def __init__(self, source: Buffer, window: Window, store: Store,
                 indices: Buffer | None = None, flat_axis: int = 0) -> None:
        self.source, self.window = source, window
        self.store, self.indices, self.flat_axis = store, indices, flat_axis
        if indices is None:
            self.row_type = value_type(source.dtype)

    def identity(self) -> float | int:
        return lowest(self.source.dtype)

    def combine(self, acc: Expr, x: Expr) -> Expr:
        return lb.max_(acc, x)

    def start(self, b: lb.KernelBuilder, lanes: int) -> None:
        t = value_type(self.source.dtype).with_lanes(lanes)
        self.best = b.local(as_expr(lowest(self.source.dtype), t), "best")
        self.where = None
        if self.indices is not None:
            self.where = b.local(as_expr(0, i64.with_lanes(lanes)), "where")

    def visit(self, b: lb.KernelBuilder, tap: Tap) -> None:
        x = b.let(tap.value, "x")
        if self.where is None:
            b.assign(self.best, lb.max_(self.best, x))
            return
        better = b.let(lb.gt(x, self.best), "better")
        b.assign(self.where, Select(better, tap.position, self.where))
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
            return self.where + splat((n * self.source.shape[1] + c) * plane, self.where)
        if self.flat_axis == 1:
            return self.where + splat(c * plane, self.where)
        modulus = math.prod(size[self.flat_axis - 2:])
        return self.where if modulus == plane else lb.binary("mod", self.where, modulus)


@lowering(nn.MaxPoolV1)
def lower_max_pool_v1(ctx: LoweringContext, node: nn.MaxPoolV1, epilogue: Epilogue) -> list:
    source = ctx.buffer(node.inputs[0])
    window = Window.of(node)
    return lower_pool(ctx, node, source, lambda: MaxBody(source, window, epilogue.store))


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

    return lower_pool(ctx, node, source, lambda: MaxBody(source, window, store, indices,
                                                         node.flatten_axis))


# -- AvgPool -----------------------------------------------------------------------------------

class AvgBody(PoolBody):
    """Sum of the in-bounds taps over the divisor of the module docstring."""

    def __init__(self, window: Window, fixed_divisor: bool, out_dtype: ScalarType,
                 store: Store) -> None:
        self.window, self.fixed_divisor = window, fixed_divisor
        self.out_dtype, self.store = out_dtype, store

    row_type = f32

    def identity(self) -> float | int:
        return 0.0

    def combine(self, acc: Expr, x: Expr) -> Expr:
        return acc + _to_f32(x)

    def start(self, b: lb.KernelBuilder, lanes: int) -> None:
        self.total = b.local(as_expr(0.0, f32.with_lanes(lanes)), "total")

    def visit(self, b: lb.KernelBuilder, tap: Tap) -> None:
        b.assign(self.total, self.total + _to_f32(tap.value))

    def finish(self, b: lb.KernelBuilder, nc: Sequence[Expr], outs: Sequence[Expr],
               inside_last: bool) -> None:
        mean = self.total / splat(self.divisor(outs, inside_last), self.total)
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
            count = inside if count is None else _widen(count, inside) * _widen(inside, count)
        if count is None:
            return as_expr(float(known), f32)
        return Cast(count * known, f32, "nearest")


def _widen(x: Expr, other: Expr) -> Expr:
    """``x`` broadcast to ``other``'s lanes if ``other`` is the vector of the two."""
    return splat(x, other) if other.type.lanes > x.type.lanes else x


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
    return lower_pool(ctx, node, source, lambda: AvgBody(window, fixed, out_dtype,
                                                         epilogue.store))


__all__ = ["AvgBody", "MaxBody", "Window", "lower_pool", "lowest"]
