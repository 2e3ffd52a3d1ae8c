"""``insert_bounds_checks``: checked mode guards every memory access of a kernel.

Rule: before each statement, every ``Load`` that the statement's own expressions evaluate
(innermost first, so a gather's index load is checked before the gather) and, for a
``Store``, the store itself get one ``BoundsCheck`` per index, against the extent of that
dimension of the accessed buffer.  Indices that are in-range constants need no check.  The
checks report to an *error record*, an ``error`` buffer parameter appended to the kernel.

Requires a verified kernel.  Ensures: no access runs with an index outside its dimension
(for vector indices, in any lane); a view accessed by the kernel lies inside its root buffer
(checked here, at compile time: a view past its root is a lowering bug, ``VerificationError``).

The error record is ``i64[RECORD_SLOTS]``: ``[SITE]`` the failing check's ``site`` (0 while
nothing failed), ``[INDEX]`` the index, ``[STEP]`` the program step (the entry point writes it
before returning early; see ``runtime.entry_point``).  ``bounds_error`` turns a record into a
``BoundsError`` naming the kernel, its layers, the buffer, the dimension and the index.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering.loop_ir import (
    ERROR_RECORD_SLOTS,
    BoundsCheck,
    Buffer,
    Expr,
    IntImm,
    Kernel,
    Load,
    Seq,
    Stmt,
    Store,
    i64,
)
from lowering.program import Program, Step
from lowering.traversal import children, map_children, walk
from lpjit.errors import BoundsError, VerificationError

RECORD_SLOTS = ERROR_RECORD_SLOTS
SITE, INDEX, STEP = 0, 1, 2
RECORD_BYTES = 64                     # the record's slot after the arena (one cache line)


def error_record(name: str = "lpjit_error") -> Buffer:
    """A fresh error record buffer (role ``error``, i64[RECORD_SLOTS])."""
    return Buffer(name, i64, (RECORD_SLOTS,), role="error", alignment=8)


def record_of(kernel: Kernel) -> Buffer | None:
    """The error record parameter of a checked kernel (None for an unchecked one)."""
    for param in kernel.buffer_params:
        if param.role == "error":
            return param
    return None


def insert_bounds_checks(kernel: Kernel, record: Buffer | None = None) -> Kernel:
    """``kernel`` with a ``BoundsCheck`` before every access (module docstring); its new last
    parameter is ``record`` (default: a fresh ``error_record()``).  A checked kernel is
    returned unchanged."""
    if record_of(kernel) is not None:
        return kernel
    record = record or error_record()
    _check_views(kernel)
    body = _Inserter(record).stmt(kernel.body)
    return attrs.evolve(kernel, params=(*kernel.params, record), body=body)


def insert_program_bounds_checks(program: Program) -> Program:
    """Every step's kernel checked, all reporting to one error record (a kernel shared by
    several steps stays shared)."""
    record = error_record()
    checked: dict[int, Kernel] = {}
    steps = []
    for step in program.steps:
        key = id(step.kernel)
        if key not in checked:
            checked[key] = insert_bounds_checks(step.kernel, record)
        steps.append(attrs.evolve(step, kernel=checked[key]))
    return program.with_steps(tuple(steps))


def program_record(program: Program) -> Buffer | None:
    """The error record the program's kernels share (None when unchecked)."""
    for step in program.steps:
        record = record_of(step.kernel)
        if record is not None:
            return record
    return None


class _Inserter:
    """Rewrites statements, numbering the checks 1, 2, ... in kernel order."""

    def __init__(self, record: Buffer) -> None:
        self.record = record
        self.sites = itertools.count(1)

    def stmt(self, s: Stmt) -> Stmt:
        if isinstance(s, Seq):
            return Seq(tuple(self.stmt(x) for x in s.stmts))
        rebuilt = map_children(s, lambda c: self.stmt(c) if isinstance(c, Stmt) else c)
        own = [c for c in children(s) if isinstance(c, Expr)]
        checks = [check for load in _loads(own) for check in self.access(load.buffer,
                                                                         load.indices)]
        if isinstance(s, Store):
            checks += self.access(s.buffer, s.indices)
        return Seq((*checks, rebuilt)) if checks else rebuilt

    def access(self, buffer: Buffer, indices: Sequence[Expr]) -> list[Stmt]:
        return [BoundsCheck(buffer, dim, index, self.record, next(self.sites))
                for dim, index in enumerate(indices)
                if not (isinstance(index, IntImm) and 0 <= index.value < buffer.shape[dim])]


def _loads(exprs: Sequence[Expr]) -> list[Load]:
    """The loads ``exprs`` evaluate, each once, every load after the loads inside it."""
    out: list[Load] = []
    seen: set[int] = set()
    for root in exprs:
        stack: list[tuple[Expr, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                if isinstance(node, Load):
                    out.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(children(node)) if isinstance(c, Expr))
    return out


def _check_views(kernel: Kernel) -> None:
    """Every view the kernel accesses addresses only elements of its root buffer."""
    for node in walk(kernel.body):
        if not isinstance(node, (Load, Store)) or node.buffer.base is None:
            continue
        view = node.buffer
        if view.numel == 0:
            continue
        low = view.root_offset + sum(min(0, (n - 1) * s) for n, s in zip(view.shape,
                                                                         view.strides))
        high = view.root_offset + sum(max(0, (n - 1) * s) for n, s in zip(view.shape,
                                                                          view.strides))
        if low < 0 or high >= view.root.span:
            raise VerificationError(
                f"kernel '{kernel.name}': view '{view.name}' addresses elements [{low}, "
                f"{high}] of '{view.root.name}', which has {view.root.span}", kernel.origin)


def sites(kernel: Kernel) -> dict[int, BoundsCheck]:
    """The checks of a checked kernel by site number."""
    return {n.site: n for n in walk(kernel.body) if isinstance(n, BoundsCheck)}


def bounds_error(kernel: Kernel, record: Sequence[int], step: Step | None = None
                 ) -> BoundsError | None:
    """The ``BoundsError`` that ``record`` (written by ``kernel``) reports, or None when it
    reports nothing."""
    site = int(record[SITE])
    if site == 0:
        return None
    layers = f" (layers {step.label})" if step is not None and step.layers else ""
    check = sites(kernel).get(site)
    if check is None:
        return BoundsError(f"kernel '{kernel.name}'{layers} reported bounds check {site}, "
                           "which it does not have", kernel.origin)
    b, extent = check.buffer, check.buffer.shape[check.dim]
    shape = ", ".join(map(str, b.shape))
    return BoundsError(
        f"kernel '{kernel.name}'{layers}: index {int(record[INDEX])} is outside dimension "
        f"{check.dim} of buffer '{b.name}' ({b.dtype}[{shape}], valid 0..{extent - 1}); the "
        "checked kernel stopped before the access (a compiler bug: please report it)",
        kernel.origin)


def raise_recorded_failure(kernel: Kernel, args: Sequence[object]) -> None:
    """Raise the ``BoundsError`` in the error record argument of a checked kernel just
    called with ``args`` (its parameters' arrays); nothing for an unchecked kernel."""
    for param, arg in zip(kernel.params, args):
        if isinstance(param, Buffer) and param.role == "error":
            error = bounds_error(kernel, np.asarray(arg).reshape(-1))
            if error is not None:
                raise error


def failure_decoder(program: Program) -> Callable[[Sequence[int]], BoundsError | None] | None:
    """For a checked program, the function that turns its error record into the error a run
    raises (``program_bounds_error``); None for an unchecked program."""
    if program_record(program) is None:
        return None
    return functools.partial(program_bounds_error, program)


def program_bounds_error(program: Program, record: Sequence[int]) -> BoundsError | None:
    """The ``BoundsError`` a checked program's record reports (the step is in the record)."""
    if int(record[SITE]) == 0:
        return None
    index = int(record[STEP])
    if not 0 <= index < len(program.steps):
        return BoundsError(f"program '{program.name}': a bounds check failed in step {index}, "
                           f"which does not exist (the program has {len(program.steps)})")
    step = program.steps[index]
    return bounds_error(step.kernel, record, step)


__all__ = ["INDEX", "RECORD_BYTES", "RECORD_SLOTS", "SITE", "STEP", "bounds_error",
           "error_record", "failure_decoder", "insert_bounds_checks", "insert_program_bounds_checks",
           "program_bounds_error", "program_record", "raise_recorded_failure", "record_of",
           "sites"]
