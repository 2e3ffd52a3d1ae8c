"""The static memory plan: every scratch buffer of a ``Program`` placed in one arena.

1. **Liveness.**  A scratch root buffer is live from the first step that uses it (its first
   write) to the last step that uses it or any view of it (its last read).  Every buffer a
   step touches is live during that whole step, so the outputs of a multi-output step and the
   inputs it reads never share memory.
2. **Placement.**  Greedy best fit, largest buffer first: a buffer goes into the smallest gap
   between the buffers already placed whose lifetimes overlap its own, else above them all.
   Offsets are multiples of ``ALIGNMENT`` (64 bytes: a cache line, an AVX-512 register).
3. **Checks.**  ``verify_memory_plan`` asserts that no two simultaneously live buffers overlap
   and that the plan covers the program's scratch buffers exactly.

Inputs and outputs live in the caller's arrays; constants are embedded in the code.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from lowering.loop_ir import Buffer, Store
from lowering.program import Program
from lowering.traversal import walk
from lpjit.errors import VerificationError

ALIGNMENT = 64


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    """``n`` rounded up to a multiple of ``alignment``."""
    return -(-n // alignment) * alignment


@attrs.frozen
class Lifetime:
    """A scratch root buffer, its size in bytes and the steps ``[first, last]`` it is live."""

    buffer: Buffer = attrs.field(eq=False)
    size: int
    first: int
    last: int

    def overlaps(self, other: Lifetime) -> bool:
        """True when both are live during some step."""
        return self.first <= other.last and other.first <= self.last


@attrs.frozen
class Placement:
    """A buffer's ``lifetime`` and its byte ``offset`` in the arena."""

    lifetime: Lifetime
    offset: int

    @property
    def buffer(self) -> Buffer:
        """The placed root buffer."""
        return self.lifetime.buffer

    @property
    def end(self) -> int:
        """One past the buffer's last byte in the arena."""
        return self.offset + self.lifetime.size


@attrs.frozen(eq=False)
class MemoryPlan:
    """Where each scratch buffer lives in the arena of ``arena_bytes`` (a multiple of 64)."""

    placements: tuple[Placement, ...]
    arena_bytes: int

    def offset(self, buffer: Buffer) -> int:
        """Byte offset of ``buffer``'s root in the arena."""
        root = buffer.root
        for placement in self.placements:
            if placement.buffer is root:
                return placement.offset
        raise KeyError(f"buffer '{root.name}' ({root.role}) has no place in the arena")

    @property
    def unshared_bytes(self) -> int:
        """The arena size without reuse: every buffer in its own aligned slot."""
        return sum(align_up(p.lifetime.size) for p in self.placements)

    def __repr__(self) -> str:
        return (f"<MemoryPlan: {len(self.placements)} buffers in {self.arena_bytes} bytes "
                f"({self.unshared_bytes} without reuse)>")


def scratch_lifetimes(program: Program) -> list[Lifetime]:
    """The lifetime of every scratch root buffer of ``program``, in first-use order."""
    spans: dict[int, list] = {}
    for index, step in enumerate(program.steps):
        for buffer in step.buffers:
            root = buffer.root
            if root.role != "scratch":
                continue
            if id(root) not in spans:
                spans[id(root)] = [root, index, index]
            spans[id(root)][2] = index
    return [Lifetime(root, root.span * root.dtype.nbytes, first, last)
            for root, first, last in spans.values()]


def plan_memory(program: Program) -> MemoryPlan:
    """Place every scratch buffer of ``program`` in one arena (see the module docstring)."""
    return place_lifetimes(scratch_lifetimes(program))


def place_lifetimes(lifetimes: Iterable[Lifetime]) -> MemoryPlan:
    """Greedy best-fit placement of ``lifetimes``, largest first (ties: earliest first)."""
    placed: list[Placement] = []
    order = sorted(enumerate(lifetimes), key=lambda item: (-item[1].size, item[1].first,
                                                           item[0]))
    for _, lifetime in order:
        placed.append(Placement(lifetime, _best_offset(lifetime, placed)))
    arena = align_up(max((p.end for p in placed), default=0))
    return MemoryPlan(tuple(sorted(placed, key=lambda p: (p.lifetime.first, p.offset))), arena)


def _best_offset(lifetime: Lifetime, placed: list[Placement]) -> int:
    """The start of the smallest gap that fits ``lifetime`` among the placements live at the
    same time, or the first aligned offset above all of them."""
    busy = sorted((p.offset, p.end) for p in placed
                  if p.lifetime.size and p.lifetime.overlaps(lifetime))
    best: tuple[int, int] | None = None          # (gap size, offset)
    cursor = 0
    for start, end in busy:
        gap = start - cursor
        if gap >= lifetime.size and (best is None or gap < best[0]):
            best = (gap, cursor)
        cursor = max(cursor, align_up(end))
    return best[1] if best is not None else cursor


def print_memory_plan(plan: MemoryPlan) -> str:
    """One line per buffer: offset, size, live steps, name and type."""
    header = (f"arena {plan.arena_bytes} bytes, {len(plan.placements)} buffers "
              f"({plan.unshared_bytes} bytes without reuse)")
    lines = [header, f"  {'offset':>10} {'bytes':>10}  {'steps':<11} buffer"]
    for p in plan.placements:
        life = p.lifetime
        steps = f"[{life.first}, {life.last}]"
        lines.append(f"  {p.offset:>10} {life.size:>10}  {steps:<11} {p.buffer!r}")
    return "\n".join(lines)


def verify_memory_plan(plan: MemoryPlan, program: Program | None = None) -> MemoryPlan:
    """Check the plan: aligned offsets inside the arena, no two simultaneously live buffers
    overlapping; with ``program``, the plan's lifetimes are exactly the program's scratch
    lifetimes and each scratch root is written by the first step that uses it.  Returns
    ``plan``; raises ``VerificationError`` naming the buffers."""
    for p in plan.placements:
        if p.offset % ALIGNMENT or p.offset < 0 or p.end > plan.arena_bytes:
            raise VerificationError(f"memory plan: buffer '{p.buffer.name}' at offset "
                                    f"{p.offset} (+{p.lifetime.size}) is misaligned or outside "
                                    f"the {plan.arena_bytes}-byte arena")
    for i, a in enumerate(plan.placements):
        for b in plan.placements[i + 1:]:
            if (a.lifetime.overlaps(b.lifetime) and a.lifetime.size and b.lifetime.size
                    and a.offset < b.end and b.offset < a.end):
                raise VerificationError(
                    f"memory plan: buffers '{a.buffer.name}' [{a.offset}, {a.end}) and "
                    f"'{b.buffer.name}' [{b.offset}, {b.end}) overlap while both are live")
    if program is not None:
        _verify_against(plan, program)
    return plan


def _verify_against(plan: MemoryPlan, program: Program) -> None:
    planned = {id(p.buffer): p.lifetime for p in plan.placements}
    for lifetime in scratch_lifetimes(program):
        name = lifetime.buffer.name
        claimed = planned.get(id(lifetime.buffer))
        if claimed != lifetime:
            said = "has no place" if claimed is None else (
                f"plans [{claimed.first}, {claimed.last}] ({claimed.size} bytes)")
            raise VerificationError(f"memory plan: scratch buffer '{name}' is live in steps "
                                    f"[{lifetime.first}, {lifetime.last}] ({lifetime.size} "
                                    f"bytes) but the plan {said}")
        first = program.steps[lifetime.first]
        if lifetime.buffer not in _stored_roots(first.kernel.body):
            raise VerificationError(f"memory plan: scratch buffer '{name}' is read by step "
                                    f"{lifetime.first} ({first.label}) before any step "
                                    "writes it")
    if len(planned) != len(scratch_lifetimes(program)):
        raise VerificationError("memory plan: it places buffers the program does not use")


def _stored_roots(body) -> list[Buffer]:
    return [node.buffer.root for node in walk(body) if isinstance(node, Store)]
