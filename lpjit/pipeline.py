"""The compile pipeline: Graph -> graph passes -> loop IR -> memory plan -> LLVM -> machine code.

``compile_graph`` reads top to bottom.  The graph passes are the literal tuple
``GRAPH_PASSES``; every stage (each graph pass, then ``lower_graph_to_loops``, in checked mode
``insert_bounds_checks``, ``plan_memory``,
``lower_program_to_llvm``, ``compile_llvm``) runs through one ``PassRunner``, which names and
times it, reports it to an optional progress callback, verifies its result when asked (the
tests do), and can write the IR after each step to a directory (``01-fold_constants.graph``,
``02-lower_graph_to_loops.loops``, ...).

The last two steps overlap: a big program is emitted in parts, and the codegen's
``ParallelCompiler`` optimises (and, for the JIT, compiles to machine code) each part on its
worker threads while ``lower_program_to_llvm`` emits the next; ``compile_llvm`` then waits
for the parts, compiles the entry point and loads everything.

Python's cyclic garbage collector is paused while a graph compiles (``paused_collection``):
lowering allocates millions of short-lived objects (loop-IR nodes, llvmlite values) and
almost none of them is garbage until the end, yet the collector walked the growing heap again
and again: 0.8 of 3.8 s of the main thread's CPU time on ResNet-18 INT8, for 65 MB more peak
memory without it.  It is restored (and runs as usual) when the compile returns or fails.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import attrs

from lowering.bounds_checks import insert_program_bounds_checks
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.program import Program, print_program
from lowering.target import Target
from lowering.verifier import verify_kernel
from lpjit.errors import VerificationError
from lpjit.graph import Graph, Parameter, topological_order
from lpjit.passes.fold_constants import fold_constants
from lpjit.passes.low_precision import LOW_PRECISION_PIPELINE, verify_step
from lpjit.passes.report import FloatReason, PrecisionReport, build_precision_report
from runtime.entry_point import ProgramModule, lower_program_to_llvm
from runtime.jit import CodeLibrary, CPUCodegen, JitEngine, JitLibrary
from runtime.memory import MemoryPlan, plan_memory, print_memory_plan, verify_memory_plan

T = TypeVar("T")


@attrs.frozen
class CompileOptions:
    """What ``lpjit.compile`` was asked for.

    ``threads``: OpenMP team size (1 = no parallel loops); ``low_precision``: run quantized
    subgraphs in integer code (``LOW_PRECISION_PIPELINE`` first; False executes FakeQuantize
    as float arithmetic, as a device without INT8 support does); ``target``: the CPU to
    generate code for (the host, for the JIT); ``checks``: checked mode, every memory access
    guarded at run time (``insert_program_bounds_checks``; a violation raises ``BoundsError``).
    """

    threads: int = 1
    low_precision: bool = True
    target: Target = attrs.field(factory=Target.host)
    checks: bool = False


@attrs.frozen
class GraphPass:
    """One entry of the graph pipeline: a name and ``run(graph, options) -> graph``."""

    name: str
    run: Callable[[Graph, CompileOptions], Graph]


GRAPH_PASSES: tuple[GraphPass, ...] = (
    GraphPass("fold_constants", lambda graph, options: fold_constants(graph)),
)


@attrs.frozen
class StepRecord:
    """A finished pipeline step: its name and wall time in seconds."""

    name: str
    seconds: float


Progress = Callable[[str, int, "StepRecord | None"], None]
"""``progress(name, index, record)``: called when step ``index`` starts (``record`` None) and
when it ends (with its ``StepRecord``)."""


class PassRunner:
    """Runs pipeline steps: names, times, optionally verifies and dumps each one.

    ``verify``: run each step's verifier on its result (tests); ``dump_dir``: write each
    step's result as text, one file per step, numbered in order; ``progress``: a callback
    (see ``Progress``) for progress displays and logging.
    """

    def __init__(self, *, verify: bool = False, dump_dir: str | Path | None = None,
                 progress: Progress | None = None) -> None:
        self.verify = verify
        self.dump_dir = Path(dump_dir) if dump_dir is not None else None
        self.progress = progress
        self.records: list[StepRecord] = []
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, step: Callable[[], T], *,
            verifier: Callable[[T], object] | None = None,
            dumps: Sequence[tuple[str, Callable[[T], str]]] = ()) -> T:
        """``step()``, timed and recorded under ``name``; then ``verifier(result)`` when
        verifying and ``<dump_dir>/<NN>-<name>.<suffix>`` for each ``(suffix, printer)``."""
        index = len(self.records)
        if self.progress is not None:
            self.progress(name, index, None)
        start = time.perf_counter()
        result = step()
        record = StepRecord(name, time.perf_counter() - start)
        self.records.append(record)
        if self.verify and verifier is not None:
            verifier(result)
        if self.dump_dir is not None:
            for suffix, printer in dumps:
                path = self.dump_dir / f"{index + 1:02d}-{name}.{suffix}"
                path.write_text(printer(result) + "\n")
        if self.progress is not None:
            self.progress(name, index, record)
        return result

    def run_graph_pass(self, graph_pass: GraphPass, graph: Graph,
                       options: CompileOptions) -> Graph:
        """One graph pass; its verifier checks the result and that the interface is kept."""
        return self.run(graph_pass.name, lambda: graph_pass.run(graph, options),
                        verifier=lambda result: verify_graph_pass(graph_pass.name, graph,
                                                                  result),
                        dumps=(("graph", print_graph),))

    @property
    def total_seconds(self) -> float:
        """Wall time of every step so far."""
        return sum(r.seconds for r in self.records)


@attrs.frozen(eq=False)
class Compilation:
    """Everything a compile produced: the graph after the passes, the loop-IR program, its
    memory plan, the LLVM module and the loaded machine code, plus the step timings."""

    graph: Graph
    program: Program
    plan: MemoryPlan
    module: ProgramModule
    library: CodeLibrary
    options: CompileOptions
    records: tuple[StepRecord, ...]
    precision: PrecisionReport


def compile_graph(graph: Graph, options: CompileOptions = CompileOptions(),
                  runner: PassRunner | None = None,
                  codegen: CPUCodegen | None = None) -> Compilation:
    """Compile ``graph`` for the host: the whole pipeline (module docstring).  ``codegen``
    replaces the host JIT (``lpjit.export`` passes an ``AotCodegen``; ``options.target``
    must then describe the same CPU)."""
    with paused_collection():
        return _compile_graph(graph, options, runner or PassRunner(), codegen)


@contextlib.contextmanager
def paused_collection() -> Iterator[None]:
    """Python's cyclic garbage collector is off inside the block, as before after it (module
    docstring)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _compile_graph(graph: Graph, options: CompileOptions, runner: PassRunner,
                   codegen: CPUCodegen | None) -> Compilation:
    graph, precision = run_low_precision_passes(graph, options, runner)
    for graph_pass in GRAPH_PASSES:
        graph = runner.run_graph_pass(graph_pass, graph, options)
    lowering_options = LoweringOptions(target=options.target, threads=options.threads)
    program = runner.run("lower_graph_to_loops",
                         lambda: lower_graph_to_loops(graph, lowering_options),
                         verifier=verify_program, dumps=(("loops", print_program),))
    if options.checks:
        program = runner.run("insert_bounds_checks",
                             lambda: insert_program_bounds_checks(program),
                             verifier=verify_program, dumps=(("loops", print_program),))
    plan = runner.run("plan_memory", lambda: plan_memory(program),
                      verifier=lambda p: verify_memory_plan(p, program),
                      dumps=(("memory", print_memory_plan),))
    engine = codegen or jit_engine()
    workers = engine.parallel_compiler()         # compiles kernels while the rest is emitted
    try:
        module = runner.run("lower_program_to_llvm",
                            lambda: lower_program_to_llvm(program, plan,
                                                          engine.codegen_options(),
                                                          sink=workers.submit),
                            dumps=(("ll", lambda m: m.lowered.text()),))
        library = runner.run("compile_llvm", lambda: engine.add_module(module.lowered,
                                                                       workers),
                             dumps=(("opt.ll", JitLibrary.llvm_ir),
                                    ("s", JitLibrary.assembly)))
    finally:
        workers.close()
    return Compilation(graph, program, plan, module, library, options, tuple(runner.records),
                       precision)


def run_low_precision_passes(graph: Graph, options: CompileOptions, runner: PassRunner
                             ) -> tuple[Graph, PrecisionReport]:
    """``LOW_PRECISION_PIPELINE`` through the runner (named, timed, verified, dumped), then
    the precision report; with ``low_precision=False`` the graph is unchanged and the report
    says every layer runs in float."""
    original = graph
    reasons: list[FloatReason] = []
    if options.low_precision:
        for step in LOW_PRECISION_PIPELINE:
            before = graph
            graph, found = runner.run(
                step.name, lambda s=step, g=graph: s.run(g),
                verifier=lambda result, n=step.name, b=before: verify_step(n, b, result[0]),
                dumps=(("graph", lambda result: print_graph(result[0])),))
            reasons.extend(found)
    return graph, build_precision_report(original, graph, reasons)


@functools.cache
def jit_engine() -> JitEngine:
    """The process's JIT code generator for the host CPU (created once)."""
    return JitEngine()


# -- graph printer and verifier ----------------------------------------------------------------


def print_graph(graph: Graph) -> str:
    """One line per node in topological order: ``[layer id] %outputs = Op(%inputs; fields)``."""
    lines = [f"graph {graph.name}"]
    for node in graph.nodes:
        outputs = ", ".join(repr(v) for v in node.outputs) or "-"
        lines.append(f"  [{node.origin.layer_id}] {outputs} = {node!r}")
    return "\n".join(lines)


def verify_graph(graph: Graph) -> Graph:
    """Check a graph's invariants: it is acyclic, every Parameter it reads is one of its
    inputs, and every node's types re-infer to the types it carries.  Returns ``graph``;
    raises ``VerificationError`` naming the layer."""
    nodes = topological_order(graph.parameters, graph.results)
    listed = {id(p) for p in graph.parameters}
    for node in nodes:
        for value in node.inputs:
            if isinstance(value.node, Parameter) and id(value.node) not in listed:
                raise VerificationError(f"reads a Parameter that is not an input of graph "
                                        f"'{graph.name}'", node.origin)
        inferred = tuple(node.infer())
        if inferred != node.output_types:
            raise VerificationError(f"carries types {node.output_types} but infers "
                                    f"{inferred}", node.origin)
    return graph


def verify_graph_pass(name: str, before: Graph, after: Graph) -> Graph:
    """``after`` is a valid graph with ``before``'s inputs and outputs (names and types)."""
    verify_graph(after)
    if _interface(before) != _interface(after):
        raise VerificationError(f"pass {name} changed the graph's interface from "
                                f"{_interface(before)} to {_interface(after)}")
    return after


def _interface(graph: Graph) -> tuple:
    inputs = tuple((p.origin.name, p.output.type) for p in graph.parameters)
    outputs = tuple((r.names, r.inputs[0].type) for r in graph.results)
    return inputs, outputs


def verify_program(program: Program) -> Program:
    """Every step's kernel passes the loop-IR verifier; inputs and outputs are the program's."""
    for step in program.steps:
        verify_kernel(step.kernel)
    for buffer in program.inputs:
        if buffer.role != "input" or buffer.base is not None:
            raise VerificationError(f"program input '{buffer.name}' is not an input root buffer")
    for buffer in program.outputs:
        if buffer.role != "output" or buffer.base is not None:
            raise VerificationError(f"program output '{buffer.name}' is not an output root "
                                    "buffer")
    return program
