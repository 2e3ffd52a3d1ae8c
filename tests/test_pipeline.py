"""The compile pipeline: the pass table, the runner (names, times, verifies, dumps) and the
graph printer and verifier."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.errors import VerificationError
from lpjit.graph import Constant, Graph, Origin, Parameter, Result, TensorType
from lpjit.ops import activations as act
from lpjit.ops import elementwise as ew
from lpjit.passes.low_precision import LOW_PRECISION_PIPELINE
from lpjit.pipeline import (
    GRAPH_PASSES,
    CompileOptions,
    GraphPass,
    PassRunner,
    compile_graph,
    print_graph,
    verify_graph,
)


def small_graph() -> Graph:
    x = Parameter(origin=Origin("0", "x", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(4,))
    c = Constant.of(np.float32(2.0), Origin("1", "two", "Const"))
    doubled = ew.Multiply(origin=Origin("2", "double", "Multiply"),
                          inputs=(x.output, c.output))
    relu = act.Relu(origin=Origin("3", "relu", "ReLU"), inputs=(doubled.output,))
    return Graph("small", [x], [Result(origin=Origin("4", "out", "Result"),
                                       inputs=(relu.output,))])


def test_graph_passes_are_one_literal_table() -> None:
    assert [p.name for p in GRAPH_PASSES] == ["fold_constants"]
    assert all(isinstance(p, GraphPass) for p in GRAPH_PASSES)


def test_print_graph_lists_nodes_in_order_with_layer_ids() -> None:
    assert print_graph(small_graph()).splitlines() == [
        "graph small",
        "  [0] %x = Parameter(element_type=f32, shape=(4,)) -> f32[4]",
        "  [1] %two = Constant(element_type=f32) -> f32[]",
        "  [2] %double = Multiply(%x, %two; auto_broadcast='numpy') -> f32[4]",
        "  [3] %relu = Relu(%double) -> f32[4]",
        "  [4] - = Result(%relu) -> "]


def test_verify_graph_names_a_node_whose_types_are_stale() -> None:
    graph = small_graph()
    relu = graph.nodes[3]
    object.__setattr__(relu, "output_types", (TensorType(dtypes.f32, (5,)),))
    with pytest.raises(VerificationError, match=r"ReLU 'relu' \(layer 3\): carries types "
                                                r"\(f32\[5\],\) but infers \(f32\[4\],\)"):
        verify_graph(graph)


def test_runner_verifies_each_graph_pass_keeps_the_interface() -> None:
    """A pass may rewrite anything but the model's inputs and outputs (names and types)."""
    def rename_output(graph: Graph, options: CompileOptions) -> Graph:
        renamed = Result(origin=Origin("9", "other", "Result"), inputs=graph.results[0].inputs)
        return Graph(graph.name, graph.parameters, [renamed])

    rename = GraphPass("rename_output", rename_output)
    graph = small_graph()
    assert PassRunner().run_graph_pass(rename, graph, CompileOptions()) is not graph
    with pytest.raises(VerificationError, match=re.escape(
            "pass rename_output changed the graph's interface from ((('x', f32[4]),), "
            "((('out',), f32[4]),)) to ((('x', f32[4]),), ((('other',), f32[4]),))")):
        PassRunner(verify=True).run_graph_pass(rename, graph, CompileOptions())


def test_runner_records_times_dumps_and_reports_progress(tmp_path: Path) -> None:
    events = []
    runner = PassRunner(verify=True, dump_dir=tmp_path,
                        progress=lambda name, index, record: events.append((name, index,
                                                                            record)))
    value = runner.run("square", lambda: 7 * 7, verifier=lambda v: None,
                       dumps=(("txt", str), ("hex", hex)))
    assert value == 49
    assert [r.name for r in runner.records] == ["square"] and runner.total_seconds >= 0
    assert [(n, i, r is None) for n, i, r in events] == [("square", 0, True),
                                                         ("square", 0, False)]
    assert (tmp_path / "01-square.txt").read_text() == "49\n"
    assert (tmp_path / "01-square.hex").read_text() == "0x31\n"
    with pytest.raises(VerificationError, match="odd"):
        runner.run("three", lambda: 3, verifier=_even)
    assert [r.name for r in runner.records] == ["square", "three"]


@pytest.mark.parametrize("enabled", [True, False])
def test_compile_graph_pauses_the_garbage_collector_and_restores_it(enabled: bool) -> None:
    """The collector is off during every step and as it was afterwards, also on failure."""
    seen = []
    runner = PassRunner(progress=lambda name, index, record: seen.append(gc.isenabled()))
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        compile_graph(small_graph(), CompileOptions(threads=1), runner)
        assert gc.isenabled() is enabled
        failing = PassRunner(progress=lambda name, index, record: _fail(name))
        with pytest.raises(VerificationError, match="stop at"):
            compile_graph(small_graph(), CompileOptions(threads=1), failing)
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
    assert len(seen) >= 10 and not any(seen)


def _fail(name: str) -> None:
    raise VerificationError(f"stop at {name}")


def _even(value: int) -> None:
    if value % 2:
        raise VerificationError(f"{value} is odd")


def test_compile_graph_runs_every_stage_in_order() -> None:
    compilation = compile_graph(small_graph(), CompileOptions(threads=1),
                                PassRunner(verify=True))
    assert [r.name for r in compilation.records] == [
        *(step.name for step in LOW_PRECISION_PIPELINE), "fold_constants",
        "lower_graph_to_loops", "plan_memory", "lower_program_to_llvm", "compile_llvm"]
    assert [s.label for s in compilation.program.steps] == ["double + relu"]
