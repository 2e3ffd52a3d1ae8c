"""What ``lpjit compile --dump DIR`` writes beyond the pipeline's own per-step files.

The compile pipeline (``lpjit.pipeline.PassRunner`` with ``dump_dir``) writes the IR after every
step, numbered in order: ``NN-<pass>.graph`` (each graph pass, the low-precision passes
included), ``NN-lower_graph_to_loops.loops``, ``NN-plan_memory.memory``,
``NN-lower_program_to_llvm.ll``, ``NN-compile_llvm.opt.ll`` and ``NN-compile_llvm.s``.
``write_dump`` adds the graph as read (``00-read_ir.graph``), the loop IR after
``vectorize_loops`` (the last loop-IR stage, run inside code generation), the schedule
decisions and the precision report, and describes every file of the directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowering.loop_ir import Allocate, For, Stmt
from lowering.printer import print_kernel
from lowering.program import Program
from lowering.traversal import children, walk
from lowering.vectorize import vectorize_loops
from lpjit.graph import Graph
from lpjit.pipeline import print_graph

READ_GRAPH = "00-read_ir.graph"
VECTORIZED = "vectorize_loops.loops"
SCHEDULE = "schedule.txt"
PRECISION = "precision.txt"

_SUFFIXES = (  # longest first
    (".opt.ll", "optimised LLVM IR of the whole module"),
    (".ll", "LLVM IR as generated (kernels and the lpjit_run entry point)"),
    (".s", "assembly"),
    (".memory", "memory plan: arena offsets and lifetimes"),
    (".loops", "loop IR of every step"),
)


def print_schedule(program: Program) -> str:
    """The schedule decisions as applied, per step: the loop nest outline (loop kinds,
    extents, vector widths, register tiles) and a one-line summary."""
    lines = [f"schedule of {program.name}: {len(program.steps)} steps",
             "(loops as the schedule left them; 'tile' = a register tile or scratch block)"]
    for index, step in enumerate(program.steps):
        kernel = step.kernel
        loops = [n for n in walk(kernel.body) if isinstance(n, For)]
        kinds = sorted({str(loop.kind) for loop in loops if loop.kind.name != "serial"})
        tiles = [n.buffer for n in walk(kernel.body) if isinstance(n, Allocate)]
        summary = ", ".join(kinds) or "serial"
        flags = f"; fast-math {','.join(kernel.fast_math)}" if kernel.fast_math else ""
        lines.append(f"\n[{index}] {kernel.name}: {step.label}")
        lines.append(f"    {len(loops)} loops ({summary}), {len(tiles)} tiles{flags}")
        lines.extend(_outline(kernel.body, 2))
    return "\n".join(lines)


def _outline(stmt: Stmt, depth: int) -> list[str]:
    """Loops and allocations of ``stmt``, indented by nesting."""
    pad = "  " * depth
    if isinstance(stmt, For):
        kind = "" if stmt.kind.name == "serial" else f" {stmt.kind}"
        return [f"{pad}for {stmt.var.name} in range({stmt.extent}){kind}",
                *_outline(stmt.body, depth + 1)]
    if isinstance(stmt, Allocate):
        buffer = stmt.buffer
        shape = ",".join(map(str, buffer.shape))
        return [f"{pad}tile {buffer.name}: {buffer.dtype}[{shape}]",
                *_outline(stmt.body, depth)]
    lines: list[str] = []
    for child in children(stmt):
        if isinstance(child, Stmt):
            lines.extend(_outline(child, depth))
    return lines


def print_vectorized_program(program: Program) -> str:
    """Every step's kernel after ``vectorize_loops``, as code generation receives it."""
    lines = [f"program {program.name} after vectorize_loops"]
    for step in program.steps:
        lines.append(f"# step {step.kernel.name}: {step.label}")
        lines.append(print_kernel(vectorize_loops(step.kernel)))
    return "\n".join(lines)


def write_dump(compiled: Any, directory: Path, source: Graph) -> list[tuple[Path, str]]:
    """Write the files this module adds to ``directory`` (where the compile of ``compiled``
    dumped its steps) and return every file there with what it holds, in name order."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / READ_GRAPH).write_text(print_graph(source) + "\n")
    (directory / VECTORIZED).write_text(print_vectorized_program(compiled.program) + "\n")
    (directory / SCHEDULE).write_text(print_schedule(compiled.program) + "\n")
    (directory / PRECISION).write_text(compiled.precision_report().format() + "\n")
    return [(path, describe_file(path.name)) for path in sorted(directory.iterdir())
            if path.is_file()]


def describe_file(name: str) -> str:
    """What a dump file holds, from its name."""
    fixed = {READ_GRAPH: "graph as read from the IR", VECTORIZED: "loop IR after vectorize_loops",
             SCHEDULE: "schedule decisions per step",
             PRECISION: "precision report: every layer, every FakeQuantize left in float "
                        "and why"}
    if name in fixed:
        return fixed[name]
    stem = name.split(".", 1)[0]
    step = stem.split("-", 1)[1] if "-" in stem else stem
    if name.endswith(".graph"):
        return f"graph after {step}"
    for suffix, what in _SUFFIXES:
        if name.endswith(suffix):
            return what
    return "other file"
