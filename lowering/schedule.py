"""Schedules as data, and ``apply_schedule``: a loop nest description -> loop IR.

A ``LoopNest`` states *what* to compute, for every point of its spatial axes::

    output[output_indices] = epilogue(combine over the reduce axes of value, from init)

A ``Schedule`` states *how*: ``splits`` (axis -> ``<axis>_o`` * factor + ``<axis>_i``),
the ``order`` of the resulting leaf loops, the ``vectorize``d leaf (``vector_width`` lanes),
the ``unroll``ed leaves, the ``parallel`` leaf and the ``packing`` of constant operands.
``apply_schedule`` is the one function that turns the pair into statements; code generation
never tiles by itself.

Rules applied by ``apply_schedule``:

1. A split whose extent is not a multiple of its factor produces a main part and a tail part
   (the tail's inner loop has the remainder as extent); no guard is ever emitted.
2. The accumulator lives at the first reduce loop of ``order``: spatial loops placed inside
   the reduction form a register tile (a scratch buffer with one element per tile point,
   initialised before and written through the epilogue after the reduction); with no spatial
   loop inside, the accumulator is a scalar ``LocalVar``.
3. ``combine="add"`` of a float product becomes ``fma(a, b, acc)``.
4. A packed constant ``B`` blocked on dimension ``dim`` by ``tile`` is rewritten to
   ``B_packed[ceil(D/tile), <other dims>, tile]`` (zero padded), indexed by the outer and
   inner parts of the axis that indexes that dimension (which must be split by ``tile``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering.loop_ir import (
    PARALLEL,
    SERIAL,
    UNROLLED,
    Allocate,
    Assign,
    Binary,
    Buffer,
    Call,
    Expr,
    For,
    IntImm,
    Load,
    LocalVar,
    LoopKind,
    Seq,
    Stmt,
    Store,
    Var,
    vectorized,
)
from lowering.traversal import rewrite, substitute, walk
from lpjit.errors import LoweringError

COMBINES = ("add", "max", "min")


@attrs.frozen
class Axis:
    """A loop axis of a nest: the variable its expressions use, its extent, reduce or not."""

    var: Var
    extent: int
    reduce: bool = False

    @property
    def name(self) -> str:
        return self.var.name


@attrs.frozen(eq=False)
class LoopNest:
    """``output[output_indices] = epilogue(fold(combine, init, value))`` over ``axes``.

    ``epilogue`` refers to the folded value through ``accumulator`` (None: store it as is).
    Without reduce axes ``init`` is unused and the fold is ``value`` itself.
    """

    axes: tuple[Axis, ...] = attrs.field(converter=tuple)
    output: Buffer
    output_indices: tuple[Expr, ...] = attrs.field(converter=tuple)
    value: Expr
    combine: str = "add"
    init: Expr | None = None
    epilogue: Expr | None = None
    accumulator: Var | None = None


@attrs.frozen
class Split:
    """Split ``axis`` (a root axis or an earlier split's part) into ``_o`` and ``_i`` parts."""

    axis: str
    factor: int


@attrs.frozen
class Packing:
    """Pack constant ``buffer`` blocked on dimension ``dim`` by ``tile`` (indexed by ``axis``)."""

    buffer: str
    dim: int
    axis: str
    tile: int


@attrs.frozen
class Schedule:
    """How to run a ``LoopNest``; every field defaults to "leave as is"."""

    splits: tuple[Split, ...] = ()
    order: tuple[str, ...] = ()
    vectorize: str | None = None
    vector_width: int = 8
    unroll: tuple[str, ...] = ()
    parallel: str | None = None
    packing: tuple[Packing, ...] = ()


def register_tile_schedule(m: str, n: str, k: str | Sequence[str], rows: int = 4,
                           columns: int = 16, vector_width: int = 8, parallel: bool = True,
                           pack: Packing | None = None) -> Schedule:
    """The GEMM-like schedule: ``rows`` x ``columns`` accumulators kept in registers.

    Loops ``m_o, n_o, <k...>, m_i, n_i_o, n_i_i``; ``n_i_i`` vectorized, the tile unrolled,
    ``m_o`` parallel.
    """
    reduce_axes = (k,) if isinstance(k, str) else tuple(k)
    return Schedule(
        splits=(Split(m, rows), Split(n, columns), Split(f"{n}_i", vector_width)),
        order=(f"{m}_o", f"{n}_o", *reduce_axes, f"{m}_i", f"{n}_i_o", f"{n}_i_i"),
        vectorize=f"{n}_i_i", vector_width=vector_width,
        unroll=(f"{m}_i", f"{n}_i_o"), parallel=f"{m}_o" if parallel else None,
        packing=(pack,) if pack is not None else ())


# ----------------------------------------------------------------------------------------------

@attrs.define
class _Node:
    """A node of an axis' split tree; leaves are loops."""

    name: str
    var: Var
    root: Axis
    parent: str | None = None
    factor: int = 0
    children: tuple[str, str] | None = None


class _Applier:
    def __init__(self, nest: LoopNest, schedule: Schedule) -> None:
        self.nest, self.schedule = nest, schedule
        self.nodes: dict[str, _Node] = {a.name: _Node(a.name, a.var, a) for a in nest.axes}
        for split in schedule.splits:
            self.split(split)
        self.leaves = [n for n in self.nodes.values() if n.children is None]
        self.order = list(schedule.order) or [n.name for n in self.leaves]
        self.check_order()

    def fail(self, message: str) -> LoweringError:
        return LoweringError(f"schedule of the nest writing '{self.nest.output.name}': {message}")

    def split(self, split: Split) -> None:
        node = self.nodes.get(split.axis)
        if node is None or node.children is not None or split.factor < 1:
            raise self.fail(f"cannot split '{split.axis}' by {split.factor}")
        names = (f"{split.axis}_o", f"{split.axis}_i")
        for name in names:
            self.nodes[name] = _Node(name, Var(name), node.root, node.name)
        node.factor, node.children = split.factor, names

    def check_order(self) -> None:
        leaf_names = sorted(n.name for n in self.leaves)
        if sorted(self.order) != leaf_names:
            raise self.fail(f"order {self.order} is not a permutation of the loops {leaf_names}")
        s = self.schedule
        for name in (s.vectorize, s.parallel, *s.unroll):
            if name is not None and name not in leaf_names:
                raise self.fail(f"'{name}' is not a loop of the nest ({leaf_names})")
        first_reduce = self.first_reduce()
        if s.parallel is not None and (self.nodes[s.parallel].root.reduce
                                       or self.order.index(s.parallel) > first_reduce):
            raise self.fail(f"parallel loop '{s.parallel}' must be a spatial loop outside "
                                "the reduction")
        if s.vectorize is not None and self.nodes[s.vectorize].root.reduce:
            raise self.fail(f"cannot vectorize reduce loop '{s.vectorize}'")

    def first_reduce(self) -> int:
        positions = [i for i, name in enumerate(self.order) if self.nodes[name].root.reduce]
        return positions[0] if positions else len(self.order)

    def kind(self, name: str) -> LoopKind:
        s = self.schedule
        if name == s.vectorize:
            return vectorized(s.vector_width)
        if name == s.parallel:
            return PARALLEL
        return UNROLLED if name in s.unroll else SERIAL

    # -- expressions in terms of leaves --------------------------------------------------------
    def node_expr(self, name: str, leaf_values: dict[str, Expr]) -> Expr | None:
        node = self.nodes[name]
        if node.children is None:
            return leaf_values.get(name)
        outer = self.node_expr(node.children[0], leaf_values)
        inner = self.node_expr(node.children[1], leaf_values)
        if outer is None or inner is None:
            return None
        return _add(_mul(outer, node.factor), inner)

    def bind(self, expr: Expr, leaf_values: dict[str, Expr]) -> Expr:
        mapping = {}
        for node in self.nodes.values():
            value = self.node_expr(node.name, leaf_values)
            if value is not None:
                mapping[node.var] = value
        return substitute(expr, mapping)

    # -- loop generation -------------------------------------------------------------------------
    def loops(self, names: Sequence[str], extents: dict[str, int], values: dict[str, Expr],
              body: Callable[[dict[str, int], dict[str, Expr]], Stmt]) -> Stmt:
        """Loops over leaves ``names`` (outermost first), splitting main and tail parts."""
        if not names:
            return body(extents, values)
        name, rest = names[0], names[1:]
        node = self.nodes[name]
        parent = self.nodes[node.parent] if node.parent else None
        if parent is not None and name == parent.children[0]:
            return self.outer_part(name, parent, rest, extents, values, body)
        extent = extents.get(name)
        if extent is None:
            raise self.fail(f"loop '{name}' comes before the outer part of its split")
        return self.loop(name, extent, rest, extents, values, body)

    def outer_part(self, name: str, parent: _Node, rest: Sequence[str],
                   extents: dict[str, int], values: dict[str, Expr], body) -> Stmt:
        if parent.name not in extents:
            raise self.fail(f"loop '{name}' comes before the outer part of '{parent.name}'")
        full, tail = divmod(extents[parent.name], parent.factor)
        inner = parent.children[1]
        parts = []
        if full:
            parts.append(self.loop(name, full, rest, {**extents, inner: parent.factor},
                                   values, body))
        if tail:
            fixed = {**values, name: IntImm(full)}
            parts.append(self.loops(rest, {**extents, inner: tail}, fixed, body))
        return parts[0] if len(parts) == 1 else Seq(tuple(parts))

    def loop(self, name: str, extent: int, rest: Sequence[str], extents: dict[str, int],
             values: dict[str, Expr], body) -> Stmt:
        extents = {**extents, name: extent}
        if extent == 1:
            return self.loops(rest, extents, {**values, name: IntImm(0)}, body)
        var = self.nodes[name].var
        inner = self.loops(rest, extents, {**values, name: var}, body)
        return For(var, extent, self.kind(name), inner)

    # -- the nest ---------------------------------------------------------------------------------
    def apply(self) -> Stmt:
        roots = {a.name: a.extent for a in self.nest.axes}
        position = self.first_reduce()
        if position == len(self.order):
            return self.loops(self.order, roots, {}, self.store_value)
        outer, inner = self.order[:position], self.order[position:]
        return self.loops(outer, roots, {}, lambda e, v: self.reduction(inner, e, v))

    def store_value(self, extents: dict[str, int], values: dict[str, Expr]) -> Stmt:
        nest = self.nest
        return Store(nest.output, tuple(self.bind(i, values) for i in nest.output_indices),
                     self.bind(self.finish(nest.value), values))

    def finish(self, folded: Expr) -> Expr:
        nest = self.nest
        if nest.epilogue is None:
            return folded
        return substitute(nest.epilogue, {nest.accumulator: folded})

    def combine(self, acc: Expr, value: Expr) -> Expr:
        op = self.nest.combine
        if op not in COMBINES:
            raise self.fail(f"unknown combine '{op}'; expected one of {COMBINES}")
        if op == "add" and isinstance(value, Binary) and value.op == "mul" and \
                value.type.elem.is_float:
            return Call("fma", (value.a, value.b, acc))
        return Binary(op, acc, value)

    def reduction(self, inner: Sequence[str], extents: dict[str, int],
                  values: dict[str, Expr]) -> Stmt:
        """Rule 2: the accumulator (scalar or register tile) around the reduce loops."""
        nest = self.nest
        if nest.init is None:
            raise self.fail("a nest with reduce axes needs an init value")
        tile = [name for name in inner if not self.nodes[name].root.reduce]
        spans, offsets = self.tile_geometry(tile, extents)
        if not spans:
            acc = Var("acc", nest.value.type)
            reduce_loops = self.loops(inner, extents, values, lambda e, v: Assign(
                acc, self.combine(acc, self.bind(nest.value, v))))
            store = Store(nest.output, tuple(self.bind(i, values) for i in nest.output_indices),
                          self.bind(self.finish(acc), values))
            return LocalVar(acc, nest.init, Seq((reduce_loops, store)))
        buffer = Buffer("acc", nest.value.type.elem, tuple(spans), role="scratch")

        def tile_index(v: dict[str, Expr]) -> tuple[Expr, ...]:
            return tuple(self.bind(o, v) for o in offsets)

        def init(e, v):
            return Store(buffer, tile_index(v), nest.init)

        def update(e, v):
            index = tile_index(v)
            return Store(buffer, index, self.combine(Load(buffer, index), self.bind(nest.value, v)))

        def write(e, v):
            indices = tuple(self.bind(i, v) for i in nest.output_indices)
            return Store(nest.output, indices, self.bind(self.finish(Load(buffer, tile_index(v))),
                                                         v))

        body = Seq((self.loops(tile, extents, values, init),
                    self.loops(inner, extents, values, update),
                    self.loops(tile, extents, values, write)))
        return Allocate(buffer, body)

    def tile_geometry(self, tile: Sequence[str], extents: dict[str, int]):
        """Per spatial axis with loops in the tile: its span and its offset within the tile."""
        spans, offsets = [], []
        for axis in self.nest.axes:
            if axis.reduce:
                continue
            mine = [name for name in tile if self.nodes[name].root is axis]
            if not mine:
                continue
            top = self.subtree_root(axis, mine)
            if top not in extents:
                raise self.fail(f"the extent of '{top}' is unknown at the reduction")
            spans.append(extents[top])
            offsets.append(self.nodes[top].var)
        return spans, offsets

    def subtree_root(self, axis: Axis, tile_leaves: list[str]) -> str:
        """The split node whose leaves are exactly ``tile_leaves`` (rule 2's tile)."""
        node = self.nodes[tile_leaves[0]]
        while set(self.leaves_under(node.name)) < set(tile_leaves) and node.parent:
            node = self.nodes[node.parent]
        if set(self.leaves_under(node.name)) != set(tile_leaves):
            raise self.fail(f"the register tile of axis '{axis.name}' must be whole inner "
                            f"parts of its splits, got {tile_leaves}")
        return node.name

    def leaves_under(self, name: str) -> list[str]:
        node = self.nodes[name]
        if node.children is None:
            return [name]
        return self.leaves_under(node.children[0]) + self.leaves_under(node.children[1])


def _mul(e: Expr, factor: int) -> Expr:
    """``e * factor`` with constants folded."""
    if isinstance(e, IntImm):
        return IntImm(e.value * factor, e.imm_type)
    return e if factor == 1 else Binary("mul", e, IntImm(factor, e.type))


def _add(a: Expr, b: Expr) -> Expr:
    """``a + b`` with constants folded and zeros dropped."""
    if isinstance(a, IntImm) and isinstance(b, IntImm):
        return IntImm(a.value + b.value, a.imm_type)
    if isinstance(a, IntImm) and a.value == 0:
        return b
    if isinstance(b, IntImm) and b.value == 0:
        return a
    return Binary("add", a, b)


def pack_constant(buffer: Buffer, dim: int, tile: int) -> Buffer:
    """``buffer`` blocked on ``dim``: shape ``(ceil(D/tile), <other dims>, tile)``, zero padded."""
    data = buffer.data
    extent = data.shape[dim]
    blocks = math.ceil(extent / tile)
    pad = [(0, 0)] * data.ndim
    pad[dim] = (0, blocks * tile - extent)
    padded = np.pad(data, pad)
    moved = np.moveaxis(padded, dim, 0).reshape(blocks, tile, *np.delete(data.shape, dim))
    packed = np.ascontiguousarray(np.moveaxis(moved, 1, -1))
    return Buffer(f"{buffer.name}_packed", buffer.dtype, packed.shape, role="constant",
                  alignment=max(buffer.alignment, 64), data=packed)


def _pack_loads(applier: _Applier, nest: LoopNest) -> LoopNest:
    """Rule 4: loads of packed constants index the packed layout through the split parts."""
    for packing in applier.schedule.packing:
        loads = [n for part in (nest.value, nest.epilogue) if part is not None
                 for n in walk(part) if isinstance(n, Load) and n.buffer.name == packing.buffer]
        if not loads:
            raise applier.fail(f"no load of constant '{packing.buffer}' to pack")
        node = applier.nodes.get(packing.axis)
        if node is None or node.factor != packing.tile:
            raise applier.fail(f"packing '{packing.buffer}' needs axis '{packing.axis}' split by "
                               f"{packing.tile}")
        packed = pack_constant(loads[0].buffer, packing.dim, packing.tile)
        outer, inner = (applier.nodes[c].var for c in node.children)

        def repack(n, packing=packing, packed=packed, outer=outer, inner=inner, axis=node):
            if not (isinstance(n, Load) and n.buffer.name == packing.buffer):
                return None
            if n.indices[packing.dim] is not axis.var:
                raise applier.fail(f"'{packing.buffer}' dimension {packing.dim} must be indexed "
                                   f"by axis '{packing.axis}' itself")
            others = tuple(i for d, i in enumerate(n.indices) if d != packing.dim)
            return Load(packed, (outer, *others, inner))

        nest = attrs.evolve(nest, value=rewrite(nest.value, repack),
                            epilogue=None if nest.epilogue is None
                            else rewrite(nest.epilogue, repack))
    return nest


def apply_schedule(nest: LoopNest, schedule: Schedule = Schedule()) -> Stmt:
    """The loop-IR statement computing ``nest`` as ``schedule`` says (rules in module doc)."""
    applier = _Applier(nest, schedule)
    applier.nest = _pack_loads(applier, nest)
    return applier.apply()
