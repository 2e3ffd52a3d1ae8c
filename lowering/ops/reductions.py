"""Reduce{Mean,Sum,Max,Min,Prod,L2} lowered to loops, and the reduce-then-map kernel frame.

Every op of this family (and SoftMax, MVN, NormalizeL2 in ``normalization.py``) computes, for
each *group* of elements that share their kept-axis indices, one or more statistics over the
reduced axes, then stores the group's result(s).  ``reduction_frames`` opens the loops over the
kept axes and yields a ``Frame`` for the current group:

* When the innermost input axis is **kept**, its loop is ``vectorized(lanes)``: each lane owns
  a group and the reduction loops inside run serially per lane (``vectorize_loops`` widens
  them); memory access stays dense along the last axis.
* When the innermost axis is **reduced**, the frame reduces with explicit vector accumulators
  over the trailing run of reduced axes (flattened into one dense axis when the input is
  contiguous), a scalar tail, and a horizontal combine of the lanes (``ReduceLanes``).

The first kept loop longer than one iteration is ``parallel`` unless ``threads == 1``.
Float accumulation is float32 in loop order, where the reference accumulates in float64:
results agree to a few ulps times the reduction length.  ReduceL2 of f32 squares and sums in
float64 (an f32 sum of squares overflows for values past 1.8e19 whose norm is finite).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import attrs

from lowering import builder as lb
from lowering.loop_ir import (
    PARALLEL,
    SERIAL,
    Broadcast,
    Buffer,
    Cast,
    Expr,
    IntImm,
    Load,
    LoopKind,
    ReduceLanes,
    Type,
    as_expr,
    contiguous_strides,
    f32,
    f64,
    i64,
    value_type,
    vectorized,
)
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, lowering, make_kernel
from lpjit.ops import reductions as red

Term = Callable[[Expr], Expr]
# Ops with a horizontal lane reduction; products reduce with a scalar loop.
VECTOR_OPS = ("add", "max", "min")


# -- combining values ------------------------------------------------------------------------

def identity(op: str, t: Type) -> Expr:
    """The neutral element of ``op`` (``add``, ``mul``, ``max``, ``min``) in type ``t``."""
    elem = t.elem
    if op == "add":
        value: float = 0
    elif op == "mul":
        value = 1
    elif op == "max":
        value = elem.min
    else:
        value = elem.max
    if elem.is_float:
        value = float(value)
    return as_expr(value, t)


def combine(op: str, a: Expr, b: Expr) -> Expr:
    """``a op b`` lane-wise (``max``/``min`` do not propagate NaN)."""
    return lb.binary(op, a, b)


def horizontal(op: str, vector: Expr) -> Expr:
    """The lanes of ``vector`` combined by ``op`` (add, max, min), in lane order."""
    return vector if vector.type.lanes == 1 else ReduceLanes(op, vector)


def splat(value: Expr, like: Expr) -> Expr:
    """``value`` broadcast to the lanes of ``like`` (unchanged when the lanes agree)."""
    lanes = like.type.lanes
    if value.type.lanes == lanes:
        return value
    return Broadcast(value, lanes)


def parallel_kind(ctx: LoweringContext, extent: int, taken: list[bool]) -> LoopKind:
    """``PARALLEL`` for the first loop longer than one iteration (unless ``threads == 1``)."""
    if taken[0] or extent < 2 or ctx.options.threads == 1:
        return SERIAL
    taken[0] = True
    return PARALLEL


# -- the reduce-then-map frame ---------------------------------------------------------------

@attrs.frozen(eq=False)
class Frame:
    """One group of a reduce-then-map kernel: kept axes fixed, reduced axes free.

    ``fixed[a]`` is the index of kept axis ``a`` (``None`` for a reduced axis); ``lanes`` > 1
    means the innermost axis is reduced and reductions use explicit vector accumulators.
    """

    b: lb.KernelBuilder
    source: Buffer
    axes: tuple[int, ...]
    fixed: tuple[Expr | None, ...]
    lanes: int

    @property
    def count(self) -> int:
        """Elements per group."""
        return math.prod(self.source.shape[a] for a in self.axes)

    def indices(self, free: dict[int, Expr]) -> list[Expr]:
        return [free[a] if f is None else f for a, f in enumerate(self.fixed)]

    def reduce(self, op: str, term: Term = lambda x: x, keep: Buffer | None = None) -> Expr:
        """``op`` over the group of ``term(x)`` (``term`` sees a scalar or a vector of x).

        ``keep``, a buffer of the source's shape, also receives every ``term(x)`` (so that a
        later pass can reuse it instead of recomputing an ``exp``).
        """
        b = self.b
        init_type = term(Load(self.source, tuple(IntImm(0) for _ in self.fixed))).type
        trailing = self._trailing()
        if self.lanes > 1 and trailing and op in VECTOR_OPS:
            flat, length = self._flattened(trailing if keep is None else trailing[-1:])
            if length >= self.lanes:
                return self._vector_reduce(op, term, init_type, trailing, flat, length, keep)
        acc = b.local(identity(op, init_type), "acc")
        with self._loops(self.axes) as free:
            index = tuple(self.indices(free))
            value = self._kept(term(Load(self.source, index)), keep, index)
            b.assign(acc, combine(op, acc, value))
        return acc

    def _kept(self, value: Expr, keep: Buffer | None, index: tuple[Expr, ...]) -> Expr:
        """``value``, after storing it to ``keep`` at ``index`` (bound once)."""
        if keep is None:
            return value
        value = self.b.let(value, "kept")
        self.b.store(keep, index, value)
        return value

    @contextlib.contextmanager
    def map(self) -> Iterator[list[Expr]]:
        """Loops over the group's elements (the innermost ``vectorized`` when it is reduced);
        yields the input indices."""
        with self._loops(self.axes, vector_last=self.lanes > 1) as free:
            yield self.indices(free)

    # -- internals ---------------------------------------------------------------------------
    def _trailing(self) -> tuple[int, ...]:
        """The run of reduced axes ending at the innermost axis (empty if it is kept)."""
        rank = len(self.fixed)
        run: list[int] = []
        for axis in range(rank - 1, -1, -1):
            if self.fixed[axis] is not None:
                break
            run.insert(0, axis)
        return tuple(run)

    def _flattened(self, trailing: tuple[int, ...]) -> tuple[Buffer, int]:
        """A view with ``trailing`` merged into one axis (or only the last axis merged when
        the source is strided), and that axis's length."""
        shape = self.source.shape
        if len(trailing) > 1 and self.source.strides == contiguous_strides(shape):
            length = math.prod(shape[a] for a in trailing)
            head = shape[:trailing[0]]
            view = self.source.view(f"{self.source.name}_flat", (*head, length))
            return view, length
        return self.source, shape[-1]

    def _vector_reduce(self, op: str, term: Term, t: Type, trailing: tuple[int, ...],
                       flat: Buffer, length: int, keep: Buffer | None) -> Expr:
        b, lanes = self.b, self.lanes
        merged = flat is not self.source
        inner = trailing if merged else (len(self.fixed) - 1,)
        outer_axes = tuple(a for a in self.axes if a not in inner)
        vacc = b.local(identity(op, t.with_lanes(lanes)), "vacc")
        sacc = b.local(identity(op, t), "acc")
        full, tail = divmod(length, lanes)
        with self._loops(outer_axes) as free:
            head = self.indices({**free, **{a: IntImm(0) for a in inner}})
            head = head[:trailing[0]] if merged else head[:-1]
            with b.for_range(full, name="v") as v:
                index = (*head, lb.ramp(v * lanes, lanes))
                chunk = self._kept(term(Load(flat, index)), keep, index)
                b.assign(vacc, combine(op, vacc, chunk))
            if tail:
                with b.for_range(tail, name="t") as t_index:
                    index = (*head, t_index + full * lanes)
                    one = self._kept(term(Load(flat, index)), keep, index)
                    b.assign(sacc, combine(op, sacc, one))
        return combine(op, horizontal(op, vacc), sacc)

    @contextlib.contextmanager
    def _loops(self, axes: Sequence[int], vector_last: bool = False
               ) -> Iterator[dict[int, Expr]]:
        free: dict[int, Expr] = {}
        with contextlib.ExitStack() as stack:
            for axis in axes:
                extent = self.source.shape[axis]
                last = axis == len(self.fixed) - 1
                kind = vectorized(self.lanes) if (vector_last and last and
                                                  extent >= self.lanes) else SERIAL
                free[axis] = stack.enter_context(self.b.for_range(extent, kind, name="r"))
            yield free


@contextlib.contextmanager
def reduction_frames(ctx: LoweringContext, b: lb.KernelBuilder, source: Buffer,
                     axes: Sequence[int]) -> Iterator[Frame]:
    """Open the kept-axis loops over ``source`` (see the module docstring); yields the frame
    of the current group."""
    rank = len(source.shape)
    axes = tuple(sorted(set(axes)))
    kept = [a for a in range(rank) if a not in axes]
    vector_kept = bool(kept) and kept[-1] == rank - 1 and source.shape[-1] >= 2
    fixed: list[Expr | None] = [None] * rank
    with output_loops(ctx, b, [source.shape[a] for a in kept], vector_kept,
                      ["ijklmnop"[a % 8] for a in kept]) as indices:
        for axis, index in zip(kept, indices):
            fixed[axis] = index
        yield Frame(b, source, axes, tuple(fixed), 1 if vector_kept else ctx.lanes)


@contextlib.contextmanager
def output_loops(ctx: LoweringContext, b: lb.KernelBuilder, extents: Sequence[int],
                 vectorize_last: bool = True, names: Sequence[str] | None = None
                 ) -> Iterator[list[Expr]]:
    """One loop per extent: the last ``vectorized`` (when ``vectorize_last``), the first other
    loop longer than one iteration ``parallel`` (unless ``threads == 1``); yields the loop
    variables."""
    names = names or ["ijklmnop"[a % 8] for a in range(len(extents))]
    taken = [False]
    indices: list[Expr] = []
    with contextlib.ExitStack() as stack:
        for position, (extent, name) in enumerate(zip(extents, names)):
            if vectorize_last and position == len(extents) - 1 and extent >= 2:
                kind = vectorized(ctx.lanes)
            else:
                kind = parallel_kind(ctx, extent, taken)
            indices.append(stack.enter_context(b.for_range(extent, kind, name=name)))
        yield indices


# -- Reduce* ---------------------------------------------------------------------------------

_OPS: dict[type, str] = {red.ReduceSum: "add", red.ReduceMean: "add", red.ReduceMax: "max",
                         red.ReduceMin: "min", red.ReduceProd: "mul", red.ReduceL2: "add"}


@lowering(*_OPS)
def lower_reduce(ctx: LoweringContext, node: red.Reduce, epilogue: Epilogue) -> list:
    """One kernel: per output element, the op's accumulation over the reduced axes, then its
    finish (``/ count`` for the mean, ``sqrt`` for L2).  Integer sums, products, maxima and
    minima run in the element type (wrapping, as the reference); integer means accumulate in
    i64 and divide truncating toward zero."""
    source = ctx.buffer(node.inputs[0])
    axes = node.axes
    b = kernel_builder(ctx, node)
    with reduction_frames(ctx, b, source, axes) as frame:
        value = _reduce_value(node, frame)
        out = [IntImm(0) if f is None else f for f in frame.fixed]
        if not node.keep_dims:
            out = [f for f in frame.fixed if f is not None]
        epilogue.store(b, out, value)
    return [make_kernel(b)]


def _reduce_value(node: red.Reduce, frame: Frame) -> Expr:
    op = _OPS[type(node)]
    dtype = value_type(frame.source.dtype)
    if isinstance(node, red.ReduceL2) and dtype == f32:
        # Squares in f64, as the reference: an f32 sum of squares overflows for |x| > 1.8e19.
        wide = frame.reduce("add", lambda x: Cast(x, f64, "exact") * Cast(x, f64, "exact"))
        return Cast(lb.call("sqrt", wide), f32, "nearest")
    if isinstance(node, red.ReduceL2):
        return lb.call("sqrt", frame.reduce("add", lambda x: x * x))
    if isinstance(node, red.ReduceMean):
        if dtype.is_float:
            return frame.reduce("add") / as_expr(float(frame.count), f32)
        total = frame.reduce("add", lambda x: x if dtype == i64 else Cast(x, i64))
        mean = lb.binary("div", total, as_expr(frame.count, i64))
        return mean if dtype == i64 else Cast(mean, dtype, "wrap")
    return frame.reduce(op)


__all__ = ["Frame", "combine", "horizontal", "identity", "lower_reduce", "output_loops",
           "parallel_kind", "reduction_frames", "splat"]
