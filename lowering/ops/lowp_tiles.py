"""Integer register tiles: exact ``u8 x i8 -> i32`` dot products, and which instruction runs them.

A ``DotStep`` is one reduction step of an integer tile: ``acc' = acc + sum_t a[t] * w[t]``
over ``group`` consecutive reduction elements (input channels, or K) per i32 lane.  Its kind
is chosen from the ``Target`` (``choose_dot_step``):

========== ===== ================================================================ ==========
kind       group instruction (``lowering.microkernels``)                          exact?
========== ===== ================================================================ ==========
quad       4     ``DotU8I8Quad``: VNNI ``vpdpbusd``                                always
pairs      2     ``DotI8Pairs``: ``vpmaddwd`` on values widened to 16 bits (AVX2)  always
saturating 4     ``DotU8I8Saturating``: ``vpmaddubsw`` + ``vpmaddwd`` by ones      by proof
mac        1     widened i32 multiply-add (portable: no AVX2)                      always
========== ===== ================================================================ ==========

``saturating`` is chosen only on AVX2 without VNNI, and only when ``saturation_proof`` shows,
from the constant weights and the largest level index the activations can hold, that no pair
``a[2i]*w[2i] + a[2i+1]*w[2i+1]`` of any output channel can leave [-32768, 32767]; the proof
is written into every ``DotU8I8Saturating`` node (``justification``), where the printer, the
verifier and ``lowering.ops.lowp.integer_kernels`` see it.  Otherwise the exact pair step runs:
never a silently saturated result.

``emit_dot_tile`` writes the integer counterpart of ``nn_tiles.emit_fma_tile``::

    acc[r, v] = 0                          (rows x vectors i32 x lanes, a scratch tile)
    for k... in reduction loops:
      for tap, r unrolled:
        b = replicate(broadcast_operand(r, k..., tap))       (group elements -> every lane)
        for v unrolled:
          acc[r, v] = step(acc[r, v], vector_operand(v, k..., tap), b)
    for r, v unrolled: store(r, v, acc[r, v])

The operands are in *group-interleaved* layout: lane ``j`` of the accumulator takes elements
``group*j .. group*j + group-1`` of the vector operand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import UNROLLED, Cast, Expr, Var, i16, i32
from lowering.microkernels import DotI8Pairs, DotU8I8Quad, DotU8I8Saturating
from lowering.ops.nn_schedules import RegisterTile
from lowering.ops.nn_tiles import Reduction, cover_axis, vector_index
from lowering.target import Target

PAIR_LIMIT = 32767      # vpmaddubsw saturates each pair sum to [-32768, 32767]
DOT_GROUPS = {"quad": 4, "pairs": 2, "saturating": 4, "mac": 1}
INSTRUCTIONS = {"quad": "vpdpbusd (exact)", "pairs": "vpmaddwd on 16-bit values (exact)",
                "saturating": "vpmaddubsw + vpmaddwd (proven not to saturate)",
                "mac": "i32 multiply-add (exact)"}


@attrs.frozen
class DotStep:
    """One reduction step of an integer tile (see the module docstring).

    ``kind`` is quad/pairs/saturating/mac; ``justification`` is the no-saturation proof of a
    saturating step; ``note`` says why the step was chosen (shown by the kernel report).
    """

    kind: str
    justification: str = ""
    note: str = ""

    @property
    def group(self) -> int:
        """Reduction elements per i32 lane and step."""
        return DOT_GROUPS[self.kind]

    def apply(self, acc: Expr, activations: Expr, weights: Expr) -> Expr:
        """``acc + group sums of activations * weights`` (u8 activations; i8 weights, or u8
        for an activation x activation product, which only ``pairs`` and ``mac`` take)."""
        if self.kind == "mac":
            return acc + lb.cast(activations, i32) * lb.cast(weights, i32)
        if self.kind == "pairs":
            if not weights.type.is_signed:
                weights = Cast(weights, i16, "exact")
            return DotI8Pairs(acc, activations, weights)
        if self.kind == "quad":
            return DotU8I8Quad(acc, activations, weights)
        return DotU8I8Saturating(acc, activations, weights, self.justification)

    def describe(self) -> str:
        text = f"{self.kind}: {INSTRUCTIONS[self.kind]}"
        return f"{text}; {self.note}" if self.note else text


def replicate(value: Expr, lanes: int, group: int) -> Expr:
    """``group`` elements (a vector, or a scalar when ``group == 1``) repeated ``lanes`` times."""
    if group == 1:
        return lb.broadcast(value, lanes, value.type)
    return lb.shuffle(value, list(range(group)) * lanes)


# -- choosing the step ---------------------------------------------------------------------------

@attrs.frozen
class SaturationProof:
    """Per output channel: whether every pair sum stays in [-32768, 32767], and the extreme
    pair sums ``low``/``high`` over all channels, for activations in ``[0, max_activation]``."""

    safe: np.ndarray            # bool [channels]
    low: int
    high: int
    max_activation: int

    @property
    def channels(self) -> int:
        return int(self.safe.size)

    @property
    def holds(self) -> bool:
        return bool(self.safe.all())

    def statement(self) -> str:
        return (f"u8 activations <= {self.max_activation} x the constant i8 weights: every pair "
                f"of products of all {self.channels} output channels lies in "
                f"[{self.low}, {self.high}], inside [-32768, {PAIR_LIMIT}]")


def saturation_proof(pairs: np.ndarray, max_activation: int) -> SaturationProof:
    """The proof for weights ``pairs[channel, p, 2]``: the two weights vpmaddubsw multiplies
    with two activations in ``[0, max_activation]`` and adds (``p`` runs over all pairs)."""
    pairs = pairs.astype(np.int64)
    positive = np.clip(pairs, 0, None).sum(axis=-1) * max_activation
    negative = np.clip(pairs, None, 0).sum(axis=-1) * max_activation
    high = positive.max(axis=-1, initial=0)
    low = negative.min(axis=-1, initial=0)
    safe = (high <= PAIR_LIMIT) & (low >= -PAIR_LIMIT - 1)
    return SaturationProof(safe, int(low.min(initial=0)), int(high.max(initial=0)),
                           max_activation)


def choose_dot_step(target: Target, pairs: Callable[[], np.ndarray] | None,
                    max_activation: int) -> DotStep:
    """The step for ``target``: VNNI quads; on AVX2, vpmaddubsw when the proof holds for every
    output channel, else exact pairs; the portable multiply-add without AVX2.  ``pairs()``
    gives the weights as ``[channels, p, 2]`` in the quad layout (``None``: the other operand
    is not constant, so nothing can be proved)."""
    if target.has_vnni:
        return DotStep("quad")
    if not target.has_avx2:
        return DotStep("mac", note="target without AVX2")
    if pairs is None:
        return DotStep("pairs", note="no constant weights to prove vpmaddubsw safe")
    proof = saturation_proof(pairs(), max_activation)
    if proof.holds:
        return DotStep("saturating", justification=proof.statement())
    unsafe = int((~proof.safe).sum())
    return DotStep("pairs", note=f"vpmaddubsw could saturate in {unsafe} of {proof.channels} "
                                 f"output channels (pair sums reach [{proof.low}, "
                                 f"{proof.high}] for activations <= {max_activation})")


# -- the tile ------------------------------------------------------------------------------------

BroadcastOperand = Callable[[Expr, Sequence[Var], Expr], Expr]
VectorOperand = Callable[[Expr, Sequence[Var], Expr], Expr]
StoreTile = Callable[[Expr, Expr, Expr], None]


def emit_dot_tile(b: lb.KernelBuilder, step: DotStep, rows: int, vectors: int, lanes: int,
                  reduction: Sequence[Reduction], taps: int,
                  broadcast_operand: BroadcastOperand, vector_operand: VectorOperand,
                  store: StoreTile, broadcast_is_activation: bool) -> None:
    """Emit one ``rows x vectors`` integer tile (see the module docstring).

    ``broadcast_operand(r, ks, tap)`` is row ``r``'s ``group`` elements (a scalar when the
    group is 1), ``vector_operand(v, ks, tap)`` vector ``v``'s ``group * lanes`` elements; the
    one that holds the activations (u8) is named by ``broadcast_is_activation``.
    ``store(r, v, acc)`` writes an i32 accumulator afterwards.
    """
    group = step.group
    acc = b.allocate("acc", i32, (rows, vectors * lanes))

    def at(r: Expr, v: Expr) -> tuple[Expr, Expr]:
        return (r, vector_index(v * lanes, lanes))

    with b.for_range(rows, kind=UNROLLED, name="r") as r, \
            b.for_range(vectors, kind=UNROLLED, name="v") as v:
        b.store(acc, at(r, v), lb.broadcast(0, lanes, i32))
    ks: list[Var] = []
    contexts = []
    for loop in reduction:
        cm = b.for_range(loop.extent, kind=loop.kind, name=loop.name)
        ks.append(cm.__enter__())
        contexts.append(cm)
    with b.for_range(taps, kind=UNROLLED, name="tap") as tap, \
            b.for_range(rows, kind=UNROLLED, name="r") as r:
        shared = b.let(replicate(broadcast_operand(r, ks, tap), lanes, group), "w")
        with b.for_range(vectors, kind=UNROLLED, name="v") as v:
            x = vector_operand(v, ks, tap)
            a, w = (shared, x) if broadcast_is_activation else (x, shared)
            b.store(acc, at(r, v), step.apply(acc[at(r, v)], a, w))
    for cm in reversed(contexts):
        cm.__exit__(None, None, None)
    with b.for_range(rows, kind=UNROLLED, name="r") as r, \
            b.for_range(vectors, kind=UNROLLED, name="v") as v:
        store(r, v, acc[at(r, v)])


# -- register tiles -----------------------------------------------------------------------------

# Vector registers a tile needs besides its accumulators: per vector operand, and fixed.
_PER_VECTOR = {"quad": 1, "pairs": 1, "saturating": 1, "mac": 1}
_FIXED = {"quad": 1, "pairs": 2, "saturating": 3, "mac": 2}


def integer_tile(target: Target, step: DotStep, row_extent: int, column_extent: int,
                 max_rows: int = 8, max_vectors: int = 8, steps: int = 1,
                 epilogue: float = 0.0) -> RegisterTile:
    """The cheapest tile of ``integer_tile_cost`` (see there)."""
    return integer_tile_cost(target, step, row_extent, column_extent, max_rows,
                             max_vectors, steps, epilogue)[1]


# Instructions of an epilogue per output vector, in dot-step units (a fused chain, such as a
# requantization; the convolution's own output formula): it does not get cheaper on narrower
# vectors (each one is an instruction), unlike the dot steps.
EPILOGUE_PER_VECTOR = 12.0
FORMULA_PER_VECTOR = 5.0


def integer_tile_cost(target: Target, step: DotStep, row_extent: int, column_extent: int,
                      max_rows: int = 8, max_vectors: int = 8, steps: int = 1,
                      epilogue: float = 0.0) -> tuple[float, RegisterTile]:
    """The cheapest ``rows x vectors`` i32 tile of ``lanes`` for a row axis (broadcast
    operands) of ``row_extent`` and a vectorized axis of ``column_extent``, and its cost.

    Cost of one reduction step over both axes, as ``nn_tiles.cover_axis`` and the row blocks
    cover them: each tile costs ``rows * vectors`` dot steps plus ``rows + vectors`` operand
    loads at half that price (the remainder tile with its own vector count).  On AVX-512 a
    256-bit vector counts as half a 512-bit one (AMD Zen 4 splits 512-bit operations in two);
    narrower vectors are never cheaper elsewhere.  Accumulators and operands must fit the
    register file.  With ``steps`` reduction steps and an ``epilogue`` cost per output vector
    (not halved on 256 bits), the cost is the whole tile's: ``steps`` times the step's cost
    plus the epilogues (small reductions favour wide vectors).
    """
    registers = 32 if target.has_avx512 else 16
    widest = target.f32_lanes
    options = [widest, widest // 2] if target.has_avx512 else [widest]
    best: tuple[float, RegisterTile] | None = None
    for lanes in options:
        price = lanes / widest
        for rows in range(1, min(max_rows, max(row_extent, 1)) + 1):
            for vectors in range(1, min(max_vectors, -(-column_extent // lanes)) + 1):
                needed = rows * vectors + _PER_VECTOR[step.kind] * vectors + _FIXED[step.kind]
                if needed > registers:
                    continue
                cover = cover_axis(column_extent, lanes, vectors)
                cost = cover.full_tiles * _tile_cost(rows, vectors)
                if cover.remainder_count:
                    cost += _tile_cost(rows, cover.remainder_count)
                blocks = -(-row_extent // rows)
                cost *= price * blocks * steps
                outputs = cover.full_tiles * vectors + cover.remainder_count
                cost += epilogue * outputs * rows * blocks
                if best is None or cost < best[0] - 1e-9:
                    best = (cost, RegisterTile(rows, vectors, lanes))
    assert best is not None
    return best


def _tile_cost(rows: int, vectors: int) -> float:
    return rows * vectors + 0.5 * (rows + vectors)


__all__ = ["EPILOGUE_PER_VECTOR", "FORMULA_PER_VECTOR", "DotStep", "SaturationProof", "choose_dot_step", "emit_dot_tile", "integer_tile",
           "integer_tile_cost",
           "replicate", "saturation_proof"]
