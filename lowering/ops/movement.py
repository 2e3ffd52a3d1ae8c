"""Lowerings of the shape and data-movement ops: views where the layout allows, copies otherwise.

A *view* binds the op's output value to ``Buffer.view`` of its input's buffer (no kernel, no
copy): offsets and strides say where each element lives.  Both executors, ``ctx.load`` and the
output copy step (``lower_graph._bind_outputs``) index every buffer through its strides, so a
view may be non-contiguous; but a lowering that reinterprets an input with ``Buffer.view``
(flattening, say) is only right on contiguous inputs.  Hence the view rule:

1. A *contiguous* view (row-major strides, any offset) is always taken: Reshape, Squeeze,
   Unsqueeze, a split along an axis with no larger dimension before it, a slice of whole rows.
2. A *strided* view is taken only when its innermost dimension is dense (stride 1, so the
   consumer's vector loads stay vector loads) and every consumer reads inputs through strides:
   elementwise ops (``ctx.load``), the ops of this module, Results, and the ops other lowerings
   declare with ``reads_strided_inputs``.  Transpose ``(0, 2, 1, 3)`` of attention heads,
   splits and slices along inner axes are such views.
3. Otherwise the op copies: Transpose, DepthToSpace and ShuffleChannels run one loop nest over
   the output (vectorized along its last axis, so stores are dense and loads gather); a
   Reshape of a strided view that strides cannot express is materialized.

Ops that may copy (Transpose, slices, Gather, Concat, Broadcast, Tile, Pad, DepthToSpace,
ShuffleChannels) are epilogue anchors: an elementwise chain after them runs in the copy loop
(then no view is taken: the chain needs a kernel anyway).  Reshape, Squeeze, Unsqueeze, the
splits and ShapeOf are not.  Shape-deciding inputs are Constants (``infer`` checked that);
Gather indices and the Pad value may be computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.emitters import is_elementwise
from lowering.loop_ir import (
    SERIAL,
    Buffer,
    Expr,
    IntImm,
    Kernel,
    Load,
    Select,
    as_expr,
    contiguous_strides,
    i64,
    value_type,
    vectorized,
)
from lowering.lower_graph import (
    LOWERINGS,
    PARALLEL_ELEMENTWISE_MIN,
    Epilogue,
    LoweringContext,
    kernel_builder,
    loop_nest,
    lowering,
    make_kernel,
)
from lpjit.graph import Node, Result, Value, constant_value
from lpjit.ops import movement as mv
from lpjit.ops import shape as sh
from lpjit.ops import slicing as sl

Strides = tuple[int, ...]

# Ops whose lowerings index every input through its Buffer strides (see rule 2).
STRIDED_READERS: set[type[Node]] = set()


def reads_strided_inputs(*classes: type[Node]) -> None:
    """Declare that the lowerings of ``classes`` read inputs through strides only (never
    reinterpret them with ``Buffer.view``), so strided views may feed them."""
    STRIDED_READERS.update(classes)


# -- strides ---------------------------------------------------------------------------------

def reshape_strides(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]
                    ) -> Strides | None:
    """Strides showing the elements of a ``(shape, strides)`` view, in row-major order, as
    ``new_shape``; ``None`` when no strides can (numpy's no-copy reshape rule)."""
    if math.prod(shape) == 0:
        return contiguous_strides(new_shape)
    old = [(d, s) for d, s in zip(shape, strides) if d != 1]
    dims, olds = [d for d, _ in old], [s for _, s in old]
    new = list(new_shape)
    out = [1] * len(new)
    oi, oj, ni, nj = 0, 1, 0, 1
    while ni < len(new) and oi < len(dims):
        n_size, o_size = new[ni], dims[oi]
        while n_size != o_size:
            if n_size < o_size:
                n_size *= new[nj]
                nj += 1
            else:
                o_size *= dims[oj]
                oj += 1
        if any(olds[k] != dims[k + 1] * olds[k + 1] for k in range(oi, oj - 1)):
            return None
        out[nj - 1] = olds[oj - 1]
        for k in range(nj - 1, ni, -1):
            out[k - 1] = out[k] * new[k]
        ni, nj, oi, oj = nj, nj + 1, oj, oj + 1
    return normalized_strides(new, out)


def normalized_strides(shape: Sequence[int], strides: Sequence[int]) -> Strides:
    """Row-major strides when ``strides`` address the same elements (size-1 dimensions may
    have any stride), else ``strides``."""
    dense = contiguous_strides(shape)
    if math.prod(shape) == 0 or all(n == 1 or s == c for n, s, c in zip(shape, strides, dense)):
        return dense
    return tuple(strides)


def is_contiguous(buffer: Buffer) -> bool:
    """True when ``buffer``'s elements are consecutive in row-major order."""
    return normalized_strides(buffer.shape, buffer.strides) == contiguous_strides(buffer.shape)


def _inner_dense(shape: Sequence[int], strides: Sequence[int]) -> bool:
    inner = [s for n, s in zip(shape, strides) if n != 1]
    return not inner or inner[-1] == 1


# -- views -------------------------------------------------------------------------------------

def _view(ctx: LoweringContext, node: Node, base: Buffer, shape: Sequence[int],
          strides: Sequence[int], offset: int = 0) -> Buffer:
    return base.view(ctx.name(node.origin.name), tuple(shape),
                     normalized_strides(shape, strides), offset)


def _reads_strides(node: Node) -> bool:
    if isinstance(node, Result) or type(node) in STRIDED_READERS:
        return True
    return is_elementwise(node) and type(node) not in LOWERINGS


def _accepts(ctx: LoweringContext, value: Value, view: Buffer) -> bool:
    """The view rule of the module docstring."""
    if is_contiguous(view):
        return True
    consumers = ctx.graph.consumers.get(value, ())
    return _inner_dense(view.shape, view.strides) and all(
        _reads_strides(node) for node, _ in consumers)


def _publish(ctx: LoweringContext, node: Node, value: Value, view: Buffer) -> list[Kernel]:
    """Bind ``value`` to ``view`` when the view rule accepts it, else copy it out."""
    if _accepts(ctx, value, view):
        ctx.bind(value, view)
        return []
    return [_copy_kernel(ctx, node, view, ctx.new_buffer(value))]


def _view_or_copy(ctx: LoweringContext, node: Node, epilogue: Epilogue, view: Buffer | None,
                  copy: Callable[[], list[Kernel]]) -> list[Kernel]:
    """For an epilogue anchor: the view when nothing is fused after the op, the value is not a
    model output (it is written there directly) and the rule accepts it; else ``copy()``."""
    value = node.outputs[0]
    if (view is not None and epilogue.is_identity and value not in ctx.model_outputs
            and _accepts(ctx, value, view)):
        ctx.bind(value, view)
        return []
    return copy()


# -- copy kernels ----------------------------------------------------------------------------

def _copy_kernel(ctx: LoweringContext, node: Node, source: Buffer, target: Buffer) -> Kernel:
    """``target[i] = source[i]`` over their common shape, the last axis vectorized, the first
    outer one in parallel when large enough (as ``lower_elementwise``)."""
    b = kernel_builder(ctx, node, "_copy")
    indices: list[Expr] = []
    parallel = ctx.options.threads != 1 and math.prod(source.shape) >= PARALLEL_ELEMENTWISE_MIN
    with loop_nest(b, source.shape, ctx.lanes, indices, parallel=parallel):
        b.store(target, tuple(indices), Load(source, tuple(indices)))
    return make_kernel(b)


def _loop_kernel(ctx: LoweringContext, node: Node, shape: Sequence[int],
                 body: Callable[[lb.KernelBuilder, list[Expr]], None]) -> list[Kernel]:
    """One kernel running ``body(b, indices)`` over ``shape`` (none when it is empty)."""
    if math.prod(shape) == 0:
        return []
    b = kernel_builder(ctx, node)
    indices: list[Expr] = []
    with loop_nest(b, shape, ctx.lanes, indices):
        body(b, indices)
    return [make_kernel(b)]


def _merge(indices: Sequence[Expr], extents: Sequence[int]) -> Expr:
    """The row-major index of ``indices`` in dimensions ``extents`` (Horner form, so the
    innermost index is added last and a vector ramp stays a ramp)."""
    merged = indices[0]
    for index, extent in zip(indices[1:], extents[1:]):
        merged = merged * extent + index
    return merged


def _regrouped_copy(ctx: LoweringContext, node: Node, epilogue: Epilogue, source: Buffer,
                    split: Sequence[int], groups_in: Sequence[Sequence[int]],
                    order: Sequence[int], groups_out: Sequence[Sequence[int]]) -> list[Kernel]:
    """Read ``source`` as ``split`` (its dims cut into consecutive ``groups_in``), permute the
    split axes by ``order`` and merge consecutive ``groups_out`` into the output dims: one loop
    nest over the permuted split shape (Transpose, DepthToSpace, ShuffleChannels)."""
    permuted = [split[p] for p in order]

    def body(b: lb.KernelBuilder, t: list[Expr]) -> None:
        s: list[Expr] = [IntImm(0)] * len(split)
        for k, p in enumerate(order):
            s[p] = t[k]
        src = [_merge([s[g] for g in group], [split[g] for g in group]) for group in groups_in]
        out = [_merge([t[g] for g in group], [permuted[g] for g in group])
               for group in groups_out]
        epilogue.store(b, out, Load(source, tuple(src)))

    return _loop_kernel(ctx, node, permuted, body)


def _ints(node: Node, index: int) -> tuple[int, ...]:
    data = constant_value(node.inputs[index])
    assert data is not None, "infer() checked that this input is a constant"
    return tuple(int(v) for v in np.asarray(data).reshape(-1))


def _zero(buffer: Buffer) -> Expr:
    return as_expr(0, value_type(buffer.dtype))


def _input(ctx: LoweringContext, node: Node, index: int) -> Buffer:
    """The buffer of input ``index``, seen with the value's own shape when the buffer's
    differs (a buffer bound by another lowering with the same elements in another shape)."""
    value = node.inputs[index]
    buffer = ctx.buffer(value)
    if buffer.shape == value.shape:
        return buffer
    return buffer.view(ctx.name(node.origin.name), value.shape)


# -- Reshape, Squeeze, Unsqueeze, ShapeOf ----------------------------------------------------

@lowering(sh.Reshape, sh.Squeeze, sh.SqueezeV15, sh.Unsqueeze, epilogue=False)
def lower_reshape(ctx: LoweringContext, node: Node, epilogue: Epilogue) -> list[Kernel]:
    """The input's elements under the output shape: a view (a copy only when the input is a
    strided view whose elements no strides can show in the new shape)."""
    source = _input(ctx, node, 0)
    shape = node.output_types[0].shape
    strides = reshape_strides(source.shape, source.strides, shape)
    if strides is not None:
        return _publish(ctx, node, node.outputs[0], _view(ctx, node, source, shape, strides))
    target = ctx.new_buffer(node.outputs[0])
    as_source = target.view(ctx.name(node.origin.name), source.shape)
    return [_copy_kernel(ctx, node, source, as_source)]


@lowering(sh.ShapeOf, sh.ShapeOfV3, epilogue=False)
def lower_shape_of(ctx: LoweringContext, node: sh.ShapeOf, epilogue: Epilogue) -> list[Kernel]:
    """The input's static shape as a constant buffer (the reader usually folded it)."""
    data = np.array(node.input_type(0).shape, dtype=node.result_type.numpy)
    ctx.bind(node.outputs[0], ctx.constant(node.origin.name, data))
    return []


# -- Transpose, DepthToSpace, ShuffleChannels ------------------------------------------------

@lowering(mv.Transpose)
def lower_transpose(ctx: LoweringContext, node: mv.Transpose, epilogue: Epilogue
                    ) -> list[Kernel]:
    """A view with permuted strides (view rule), else a copy over the output shape."""
    source = _input(ctx, node, 0)
    rank = source.rank
    order = node.order(rank, _ints(node, 1))
    view = _view(ctx, node, source, [source.shape[p] for p in order],
                 [source.strides[p] for p in order])
    singles = [[a] for a in range(rank)]
    return _view_or_copy(ctx, node, epilogue, view, lambda: _regrouped_copy(
        ctx, node, epilogue, source, source.shape, singles, order, singles))


@lowering(mv.DepthToSpace)
def lower_depth_to_space(ctx: LoweringContext, node: mv.DepthToSpace, epilogue: Epilogue
                         ) -> list[Kernel]:
    """Channels read as ``[bs]*k + [C']`` (blocks_first) or ``[C'] + [bs]*k`` (depth_first),
    each block axis moved after its spatial axis."""
    source = _input(ctx, node, 0)
    n, c, *spatial = source.shape
    k, bs = len(spatial), node.block_size
    depth = c // bs**k
    if node.mode == "blocks_first":
        split = [n, *[bs] * k, depth, *spatial]
        order = [0, k + 1] + [a for i in range(k) for a in (k + 2 + i, 1 + i)]
    else:
        split = [n, depth, *[bs] * k, *spatial]
        order = [0, 1] + [a for i in range(k) for a in (k + 2 + i, 2 + i)]
    groups_in = [[0], list(range(1, k + 2)), *[[k + 2 + i] for i in range(k)]]
    groups_out = [[0], [1], *[[2 + 2 * i, 3 + 2 * i] for i in range(k)]]
    return _regrouped_copy(ctx, node, epilogue, source, split, groups_in, order, groups_out)


@lowering(mv.ShuffleChannels)
def lower_shuffle_channels(ctx: LoweringContext, node: mv.ShuffleChannels, epilogue: Epilogue
                           ) -> list[Kernel]:
    """The axis read as ``[group, dim / group]``, the pair swapped."""
    source = _input(ctx, node, 0)
    rank = source.rank
    axis = node.axis + rank if node.axis < 0 else node.axis
    dim = source.shape[axis]
    split = [*source.shape[:axis], node.group, dim // node.group, *source.shape[axis + 1:]]
    order = [*range(axis), axis + 1, axis, *range(axis + 2, rank + 1)]
    groups = [[a] for a in range(axis)] + [[axis, axis + 1]] + [
        [a + 1] for a in range(axis + 1, rank)]
    return _regrouped_copy(ctx, node, epilogue, source, split, groups, order, groups)


# -- Split, VariadicSplit --------------------------------------------------------------------

@lowering(mv.Split, mv.VariadicSplit, epilogue=False)
def lower_split(ctx: LoweringContext, node: Node, epilogue: Epilogue) -> list[Kernel]:
    """Each part is a view at its offset along the axis (view rule), else a copy."""
    source = _input(ctx, node, 0)
    if isinstance(node, mv.Split):
        axis, lengths = node.lengths(source.shape, _ints(node, 1)[0])
    else:
        axis, lengths = node.lengths(source.shape, _ints(node, 1)[0], _ints(node, 2))
    kernels: list[Kernel] = []
    start = 0
    for value, length in zip(node.outputs, lengths):
        shape = value.type.shape
        offset = start * source.strides[axis] if length else 0
        view = _view(ctx, node, source, shape, source.strides, offset)
        kernels.extend(_publish(ctx, node, value, view))
        start += length
    return kernels


# -- StridedSlice, Slice ---------------------------------------------------------------------

@lowering(sl.StridedSlice, sl.Slice)
def lower_slice(ctx: LoweringContext, node: Node, epilogue: Epilogue) -> list[Kernel]:
    """Each input axis restricted to a range: a view when every step is positive (view rule),
    else a copy reading ``start + step * i``."""
    source = _input(ctx, node, 0)
    plan = _slice_plan(node, source.shape)
    sliced = [len(r) for r in plan.ranges]
    view = None
    if all(r.step > 0 or len(r) <= 1 for r in plan.ranges):
        offset = sum(r.start * s for r, s in zip(plan.ranges, source.strides) if len(r))
        strides = [r.step * s for r, s in zip(plan.ranges, source.strides)]
        out = reshape_strides(sliced, normalized_strides(sliced, strides), plan.shape)
        assert out is not None, "a slice plan only inserts or drops size-1 axes"
        view = _view(ctx, node, source, plan.shape, out, offset)

    def copy() -> list[Kernel]:
        def body(b: lb.KernelBuilder, idx: list[Expr]) -> None:
            src = [i if r.start == 0 and r.step == 1 else r.start + i * r.step
                   for i, r in zip(idx, plan.ranges)]
            epilogue.store(b, _align_unit_dims(idx, sliced, plan.shape), Load(source, src))
        return _loop_kernel(ctx, node, sliced, body)

    return _view_or_copy(ctx, node, epilogue, view, copy)


def _slice_plan(node: Node, shape: tuple[int, ...]) -> sl.SlicePlan:
    if isinstance(node, sl.StridedSlice):
        begin, end = _ints(node, 1), _ints(node, 2)
        strides = _ints(node, 3) if len(node.inputs) == 4 else (1,) * len(begin)
        return node.plan(shape, begin, end, strides)
    axes = _ints(node, 4) if len(node.inputs) == 5 else None
    return node.plan(shape, _ints(node, 1), _ints(node, 2), _ints(node, 3), axes)


def _align_unit_dims(indices: Sequence[Expr], shape: Sequence[int], target: Sequence[int]
                     ) -> list[Expr]:
    """``indices`` in ``shape`` as indices in ``target``, a shape equal to it but for size-1
    dimensions (non-1 dimensions pair up in order; size-1 ones read index 0)."""
    big = iter([i for i, n in zip(indices, shape) if n != 1])
    return [IntImm(0) if n == 1 else next(big) for n in target]


# -- Concat ----------------------------------------------------------------------------------

@lowering(mv.Concat)
def lower_concat(ctx: LoweringContext, node: mv.Concat, epilogue: Epilogue) -> list[Kernel]:
    """One kernel: for each input, a loop nest storing it at its offset along the axis."""
    shape = node.output_types[0].shape
    axis = node.axis + len(shape) if node.axis < 0 else node.axis
    if math.prod(shape) == 0:
        return []
    b = kernel_builder(ctx, node)
    start = 0
    for k in range(len(node.inputs)):
        source = _input(ctx, node, k)
        if source.numel:
            indices: list[Expr] = []
            with loop_nest(b, source.shape, ctx.lanes, indices):
                out = list(indices)
                out[axis] = out[axis] + start if start else out[axis]
                epilogue.store(b, out, Load(source, tuple(indices)))
        start += source.shape[axis]
    return [make_kernel(b)]


# -- Gather ----------------------------------------------------------------------------------

@lowering(mv.Gather, mv.GatherV7, mv.GatherV8)
def lower_gather(ctx: LoweringContext, node: mv.Gather, epilogue: Epilogue) -> list[Kernel]:
    """``out[o] = data[o_outer, indices[o_batch, o_index], o_inner]``; an index outside
    ``[0, dim)`` (after Gather-8 maps ``[-dim, 0)``) gives 0.  Constant indices that step
    evenly through valid positions are a view."""
    data, indices = _input(ctx, node, 0), _input(ctx, node, 1)
    axis, batch = node.axes(data.shape, indices.shape, _ints(node, 2)[0])
    dim = data.shape[axis]
    index_rank = indices.rank - batch
    shape = node.output_types[0].shape
    constant = constant_value(node.inputs[1])
    known = None if constant is None else _normalized_indices(node, constant, dim)

    def body(b: lb.KernelBuilder, o: list[Expr]) -> None:
        at: Expr = Load(indices, (*o[:batch], *o[axis:axis + index_rank]))
        index = b.let(at if at.type.elem == i64 else lb.cast(at, i64), "idx")
        if node.negative_indices:
            index = b.let(Select(lb.lt(index, 0), index + dim, index), "idx")
        rest = o[axis + index_rank:]
        # Clamped, so that the load is in bounds whatever the index (select runs both arms).
        value = Load(data, (*o[:axis], lb.min_(lb.max_(index, 0), dim - 1), *rest))
        if known is not None and known.all_valid:
            epilogue.store(b, o, value)
            return
        valid = b.let(lb.binary("and", lb.ge(index, 0), lb.lt(index, dim)), "valid")
        epilogue.store(b, o, Select(valid, value, _zero(data)))

    def copy() -> list[Kernel]:
        if dim == 0:
            return _loop_kernel(ctx, node, shape,
                                lambda b, o: epilogue.store(b, o, _zero(data)))
        return _loop_kernel(ctx, node, shape, body)

    view = None
    if known is not None and batch == 0 and known.step is not None:
        ind_strides = [s * known.step * data.strides[axis]
                       for s in contiguous_strides(indices.shape)]
        strides = [*data.strides[:axis], *ind_strides, *data.strides[axis + 1:]]
        view = _view(ctx, node, data, shape, strides, known.first * data.strides[axis])
    return _view_or_copy(ctx, node, epilogue, view, copy)


@attrs.frozen
class _KnownIndices:
    """Constant Gather indices: whether all are valid, and (for a view) the first index and
    the positive step between consecutive ones (``None`` when they do not step evenly)."""

    all_valid: bool
    first: int
    step: int | None


def _normalized_indices(node: mv.Gather, constant: np.ndarray, dim: int) -> _KnownIndices:
    flat = np.asarray(constant).astype(np.int64).reshape(-1)
    if node.negative_indices:
        flat = np.where(flat < 0, flat + dim, flat)
    all_valid = bool(((flat >= 0) & (flat < dim)).all())
    if not all_valid or flat.size == 0:
        return _KnownIndices(all_valid, 0, 1 if all_valid else None)
    steps = set(np.diff(flat).tolist())
    step = 1 if not steps else steps.pop() if len(steps) == 1 else None
    return _KnownIndices(True, int(flat[0]), step if step is not None and step > 0 else None)


# -- Broadcast, Tile -------------------------------------------------------------------------

def _broadcast_load(buffer: Buffer, indices: Sequence[Expr]) -> Load:
    """``buffer`` read at output ``indices`` with numpy broadcasting (right-aligned; size-1
    dimensions read index 0)."""
    mine = list(indices)[len(indices) - buffer.rank:] if buffer.rank else []
    return Load(buffer, tuple(IntImm(0) if n == 1 else i for n, i in zip(buffer.shape, mine)))


@lowering(sh.Broadcast, sh.BroadcastV3)
def lower_broadcast(ctx: LoweringContext, node: sh.Broadcast, epilogue: Epilogue
                    ) -> list[Kernel]:
    """One loop nest over the output reading the data with numpy broadcasting (explicit mode
    first views the data with 1s inserted so that data axis i sits at ``mapping[i]``)."""
    source = _input(ctx, node, 0)
    mapping = _ints(node, 2) if node.mode == "explicit" else ()
    expanded = node.expanded_shape(source.shape, _ints(node, 1), mapping)
    strides = reshape_strides(source.shape, source.strides, expanded)
    assert strides is not None, "an expanded shape only inserts size-1 axes"
    data = _view(ctx, node, source, expanded, strides)
    return _loop_kernel(ctx, node, node.output_types[0].shape,
                        lambda b, o: epilogue.store(b, o, _broadcast_load(data, o)))


@lowering(sh.Tile)
def lower_tile(ctx: LoweringContext, node: sh.Tile, epilogue: Epilogue) -> list[Kernel]:
    """``out[r * d + j] = data[j]`` per axis: a repeated axis becomes two loops (repeat,
    then the data axis), so the innermost loop stays a dense vector copy."""
    source = _input(ctx, node, 0)
    shape = node.output_types[0].shape
    if math.prod(shape) == 0:
        return []
    repeats = _ints(node, 1)
    rank = len(shape)
    repeats = (1,) * (rank - len(repeats)) + repeats
    dims = (1,) * (rank - source.rank) + source.shape
    data = _view(ctx, node, source, dims, reshape_strides(source.shape, source.strides, dims))
    b = kernel_builder(ctx, node)
    out: list[Expr] = []
    src: list[Expr] = []
    with _tile_nest(b, dims, repeats, ctx.lanes, out, src):
        epilogue.store(b, out, Load(data, tuple(src)))
    return [make_kernel(b)]


class _tile_nest:
    """Loops over a tiled shape filling output and source indices (see ``lower_tile``)."""

    def __init__(self, b: lb.KernelBuilder, dims: Sequence[int], repeats: Sequence[int],
                 lanes: int, out: list[Expr], src: list[Expr]) -> None:
        self.b, self.dims, self.repeats, self.lanes = b, dims, repeats, lanes
        self.out, self.src = out, src
        self._contexts: list = []

    def _open(self, extent: int, last: bool, name: str) -> Expr:
        kind = vectorized(self.lanes) if last and extent >= self.lanes else SERIAL
        cm = self.b.for_range(extent, kind=kind, name=name)
        self._contexts.append(cm)
        return cm.__enter__()

    def __enter__(self) -> None:
        rank = len(self.dims)
        for axis, (d, r) in enumerate(zip(self.dims, self.repeats)):
            last = axis == rank - 1
            if d == 1:
                self.out.append(self._open(r, last, "r"))
                self.src.append(IntImm(0))
            elif r == 1:
                index = self._open(d, last, "j")
                self.out.append(index)
                self.src.append(index)
            else:
                rep = self._open(r, False, "r")
                index = self._open(d, last, "j")
                self.out.append(rep * d + index)
                self.src.append(index)

    def __exit__(self, *exc: object) -> None:
        for cm in reversed(self._contexts):
            cm.__exit__(*exc)


# -- Pad -------------------------------------------------------------------------------------

@lowering(mv.Pad, mv.PadV12)
def lower_pad(ctx: LoweringContext, node: mv.Pad, epilogue: Epilogue) -> list[Kernel]:
    """Outer axes map each output index to its source index (scalar arithmetic per row); the
    last axis runs as three loops: the left pad, the dense middle copy (vectorized) and the
    right pad.  Constant mode writes the pad value where any axis is outside the input."""
    source = _input(ctx, node, 0)
    shape = node.output_types[0].shape
    begin, end = _ints(node, 1), _ints(node, 2)
    fill: Expr = _zero(source)
    if node.pad_mode == "constant" and len(node.inputs) == 4:
        fill = Load(_input(ctx, node, 3), ())
    if math.prod(shape) == 0:
        return []
    if source.numel == 0 or not shape:
        value = (lambda o: fill) if source.numel == 0 else (lambda o: Load(source, ()))
        return _loop_kernel(ctx, node, shape, lambda b, o: epilogue.store(b, o, value(o)))
    b = kernel_builder(ctx, node)
    row = _PadRow(node.pad_mode, begin[-1], source.shape[-1], shape[-1], fill, ctx.lanes)
    outer: list[Expr] = []
    src: list[Expr] = []
    valid: Expr | None = None
    contexts = []
    for axis in range(len(shape) - 1):
        cm = b.for_range(shape[axis], name="ijklmnop"[axis % 8])
        contexts.append(cm)
        o = cm.__enter__()
        outer.append(o)
        index, ok = _pad_source(b, node.pad_mode, o, begin[axis], source.shape[axis],
                                end[axis])
        src.append(index)
        if ok is not None:
            valid = ok if valid is None else b.let(lb.binary("and", valid, ok), "inside")
    if valid is None:
        row.emit(b, epilogue, source, outer, src)
    else:
        with b.if_(valid):
            row.emit(b, epilogue, source, outer, src)
        with b.else_():
            row.fill_all(b, epilogue, outer)
    for cm in reversed(contexts):
        cm.__exit__(None, None, None)
    return [make_kernel(b)]


def _pad_source(b: lb.KernelBuilder, mode: str, o: Expr, begin: int, dim: int, end: int
                ) -> tuple[Expr, Expr | None]:
    """The source index of output index ``o`` on one axis, and (constant mode, where the
    axis is padded) whether it is inside the input."""
    raw = o - begin if begin else o
    if begin <= 0 and end <= 0:
        return raw, None
    raw = b.let(raw, "src")
    if mode == "constant":
        inside = b.let(lb.binary("and", lb.ge(raw, 0), lb.lt(raw, dim)), "inside")
        return b.let(_clip(raw, dim), "src"), inside
    low, high = _mirror(mode, raw, dim)
    i = raw
    if begin > 0:
        i = Select(lb.lt(raw, 0), low, i)
    if end > 0:
        i = Select(lb.ge(raw, dim), high, i)
    return b.let(_clip(i, dim), "src"), None


def _clip(i: Expr, dim: int) -> Expr:
    """``i`` clipped to ``[0, dim)``: a no-op on valid pads (the reference clips too), it
    shows the verifier that loads stay in bounds."""
    return lb.min_(lb.max_(i, 0), dim - 1)


def _mirror(mode: str, i: Expr, dim: int) -> tuple[Expr, Expr]:
    """The source of an index ``i < 0`` and of an index ``i >= dim`` (edge, reflect,
    symmetric; the reference's ``_pad_source``)."""
    if mode == "edge":
        return as_expr(0, i.type), as_expr(dim - 1, i.type)
    if mode == "reflect":
        return 0 - i, 2 * (dim - 1) - i
    return -1 - i, 2 * dim - 1 - i


@attrs.frozen
class _PadRow:
    """The last axis of a Pad: regions ``[0, left)`` (before the input), ``[left, middle)``
    (inside, ``i = o - begin``) and ``[middle, size)`` (after it)."""

    mode: str
    begin: int
    dim: int
    size: int
    fill: Expr
    lanes: int

    @property
    def left(self) -> int:
        return min(max(self.begin, 0), self.size)

    @property
    def middle(self) -> int:
        return min(max(self.begin + self.dim, self.left), self.size)

    def emit(self, b: lb.KernelBuilder, epilogue: Epilogue, source: Buffer,
             outer: Sequence[Expr], src: Sequence[Expr]) -> None:
        for start, stop in ((0, self.left), (self.middle, self.size)):
            if stop > start:
                with b.for_range(stop - start, name="p") as k:
                    o = k + start if start else k
                    value = self.fill if self.mode == "constant" else Load(
                        source, (*src, self._outside(o)))
                    epilogue.store(b, (*outer, o), value)
        if self.middle > self.left:
            extent = self.middle - self.left
            kind = vectorized(self.lanes) if extent >= self.lanes else SERIAL
            with b.for_range(extent, kind=kind, name="q") as k:
                shift = self.left - self.begin
                o = k + self.left if self.left else k
                i = k + shift if shift else k
                epilogue.store(b, (*outer, o), Load(source, (*src, i)))

    def _outside(self, o: Expr) -> Expr:
        i = o - self.begin if self.begin else o
        low, high = _mirror(self.mode, i, self.dim)
        return _clip(Select(lb.lt(i, 0), low, high), self.dim)

    def fill_all(self, b: lb.KernelBuilder, epilogue: Epilogue, outer: Sequence[Expr]) -> None:
        kind = vectorized(self.lanes) if self.size >= self.lanes else SERIAL
        with b.for_range(self.size, kind=kind, name="q") as k:
            epilogue.store(b, (*outer, k), self.fill)


# Every lowering above reads its inputs through their strides (``Load``s, or views composed
# with the input's strides), so strided views may feed them.
reads_strided_inputs(sh.Reshape, sh.Squeeze, sh.SqueezeV15, sh.Unsqueeze, sh.ShapeOf,
                     sh.ShapeOfV3, sh.Broadcast, sh.BroadcastV3, sh.Tile, mv.Transpose,
                     mv.DepthToSpace, mv.ShuffleChannels, mv.Split, mv.VariadicSplit,
                     sl.StridedSlice, sl.Slice, mv.Concat, mv.Gather, mv.GatherV7, mv.GatherV8,
                     mv.Pad, mv.PadV12)
