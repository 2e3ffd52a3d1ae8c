"""lpjit.compile and CompiledModel: sources, calling conventions, outputs, input checks, repr,
inspection, dumps and concurrent calls."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

import lpjit
from lpjit import dtypes, reference
from lpjit.errors import InputError
from lpjit.graph import Constant, Graph, Origin, Parameter, Result
from lpjit.ops import activations as act
from lpjit.ops import elementwise as ew
from lpjit.passes.low_precision import LOW_PRECISION_PIPELINE


def two_in_two_out() -> Graph:
    """``sum = relu(x + bias)``, ``gate = sigmoid(sum * y) - x`` with tensor names."""
    x = Parameter(origin=Origin("0", "x", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(2, 3, 8), tensor_names=(("x", "input_x"),))
    y = Parameter(origin=Origin("1", "y", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(3, 1), tensor_names=(("y",),))
    bias = Constant.of(np.linspace(-0.5, 0.5, 8, dtype=np.float32), Origin("2", "bias", "Const"))
    added = ew.Add(origin=Origin("3", "add", "Add"), inputs=(x.output, bias.output))
    total = act.Relu(origin=Origin("4", "relu", "ReLU"), inputs=(added.output,),
                     tensor_names=(("sum",),))
    scaled = ew.Multiply(origin=Origin("5", "mul", "Multiply"), inputs=(total.output, y.output))
    gate = act.Sigmoid(origin=Origin("6", "sigmoid", "Sigmoid"), inputs=(scaled.output,))
    out = ew.Subtract(origin=Origin("7", "gate", "Subtract"), inputs=(gate.output, x.output),
                      tensor_names=(("gate", "logits"),))
    results = [Result(origin=Origin("8", "sum_result", "Result"), inputs=(total.output,)),
               Result(origin=Origin("9", "gate_result", "Result"), inputs=(out.output,))]
    return Graph("two_in_two_out", [x, y], results)


@pytest.fixture(scope="module")
def graph() -> Graph:
    return two_in_two_out()


@pytest.fixture(scope="module")
def compiled(graph: Graph) -> lpjit.CompiledModel:
    return lpjit.compile(graph, threads=2, verify=True)


def random_inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-2, 2, (2, 3, 8)).astype(np.float32),
            rng.uniform(-2, 2, (3, 1)).astype(np.float32))


def assert_matches_reference(graph: Graph, outputs, inputs) -> None:
    for actual, expected in zip(outputs, reference.run(graph, list(inputs)), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


# -- calling conventions and outputs -----------------------------------------------------------


def test_positional_keyword_and_dict_calls_agree_with_the_reference(graph, compiled) -> None:
    x, y = random_inputs(0)
    positional = compiled(x, y)
    assert_matches_reference(graph, positional, (x, y))
    for other in (compiled(x=x, y=y), compiled({"y": y, "x": x}), compiled(x, y=y),
                  compiled(input_x=x, y=y)):
        for a, b in zip(positional, other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_outputs_by_index_by_name_iteration_and_len(compiled) -> None:
    out = compiled(*random_inputs(1))
    assert len(out) == 2 and out.names == ("sum", "gate")
    assert out["sum"] is out[0] and out["gate"] is out[1] and out["logits"] is out[1]
    assert out["gate_result"] is out[1]                # the Result layer's name works too
    assert [a.shape for a in out] == [(2, 3, 8), (2, 3, 8)]
    assert list(out.to_dict()) == ["sum", "gate"]
    assert out[-1] is out[1] and len(out[:1]) == 1
    with pytest.raises(KeyError, match="no output named 'nope'; outputs are: sum, gate"):
        out["nope"]
    assert repr(out) == "<Outputs sum: float32[2, 3, 8], gate: float32[2, 3, 8]>"


def test_each_call_returns_fresh_outputs(compiled) -> None:
    x, y = random_inputs(2)
    first = compiled(x, y)
    kept = first[0].copy()
    compiled(*random_inputs(3))
    np.testing.assert_array_equal(first[0], kept)
    assert all(a.ctypes.data % 64 == 0 for a in first)


def test_lossless_conversions_and_non_contiguous_inputs_are_accepted(graph, compiled) -> None:
    rng = np.random.default_rng(4)
    x16 = rng.integers(-3, 4, (2, 3, 8)).astype(np.int16)          # int16 -> float32 is exact
    y_strided = rng.uniform(-2, 2, (3, 2)).astype(np.float32)[:, :1]
    assert not y_strided.flags.c_contiguous
    out = compiled(x16, y_strided)
    assert_matches_reference(graph, out, (x16.astype(np.float32), y_strided.copy()))


# -- input errors ----------------------------------------------------------------------------

EXPECTED = r"expected x: float32\[2,3,8\], y: float32\[3,1\]"


def test_missing_inputs_are_named_with_the_expected_ones(compiled) -> None:
    x, _ = random_inputs(5)
    with pytest.raises(InputError, match=r"^missing input 'y'; " + EXPECTED + "$"):
        compiled(x)
    with pytest.raises(InputError, match=r"^missing inputs 'x', 'y'; " + EXPECTED + "$"):
        compiled()


def test_unknown_duplicate_and_surplus_inputs_are_rejected(compiled) -> None:
    x, y = random_inputs(6)
    with pytest.raises(InputError, match=r"^unknown input 'z'; " + EXPECTED + "$"):
        compiled(x=x, y=y, z=y)
    with pytest.raises(InputError, match=r"^input 'x' is given twice$"):
        compiled(x, y=y, input_x=x)
    with pytest.raises(InputError, match=r"^got 3 positional inputs; the model has 2: "
                                         r"x: float32\[2,3,8\], y: float32\[3,1\]$"):
        compiled(x, y, y)


def test_lossy_dtype_conversion_is_refused(compiled) -> None:
    x, y = random_inputs(7)
    with pytest.raises(InputError, match=re.escape(
            "input 'x' has dtype float64, which does not convert to float32 without loss; "
            "expected float32[2,3,8] (convert it with .astype(np.float32) if the loss is "
            "intended)")):
        compiled(x.astype(np.float64), y)
    with pytest.raises(InputError, match="input 'y' has dtype int32"):
        compiled(x, y.astype(np.int32))
    with pytest.raises(InputError, match="input 'x' has dtype float64"):
        compiled(x.tolist(), y)                           # Python floats are float64


def test_wrong_shapes_are_refused(compiled) -> None:
    x, y = random_inputs(8)
    with pytest.raises(InputError, match=re.escape(
            "input 'y' has shape (1, 3); expected float32[3,1]")):
        compiled(x, y.reshape(1, 3))
    with pytest.raises(InputError, match=re.escape(
            "input 'x' has shape (3, 8); expected float32[2,3,8]")):
        compiled(x[0], y)


# -- compile sources and options ---------------------------------------------------------------


def test_compile_from_xml_path_and_from_xml_text_with_weights(graph, tmp_path: Path) -> None:
    xml = lpjit.write_ir(graph, tmp_path / "model.xml")
    x, y = random_inputs(9)
    from_path = lpjit.compile(xml, threads=1)(x, y)
    from_str = lpjit.compile(str(xml), threads=1)(x, y)
    from_text = lpjit.compile(xml.read_bytes(), weights=xml.with_suffix(".bin").read_bytes(),
                              threads=1)(x, y)
    assert_matches_reference(graph, from_path, (x, y))
    for a, b, c in zip(from_path, from_str, from_text, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_shapes_resolve_dynamic_inputs(graph, tmp_path: Path) -> None:
    xml = lpjit.write_ir(graph, tmp_path / "model.xml")
    text = xml.read_text()
    dynamic = text.replace('shape="2,3,8"', 'shape="?,3,8"', 1).replace(
        "<dim>2</dim>", "<dim>-1</dim>", 1)
    assert dynamic != text
    xml.write_text(dynamic)
    compiled = lpjit.compile(xml, shapes={"x": (2, 3, 8)}, threads=1)
    assert compiled.inputs[0].shape == (2, 3, 8)
    x, y = random_inputs(10)
    assert_matches_reference(graph, compiled(x, y), (x, y))


def test_bad_compile_arguments_are_input_errors(graph) -> None:
    with pytest.raises(InputError, match="weights= and shapes= apply when reading an IR"):
        lpjit.compile(graph, shapes={"x": (2, 3, 8)})
    with pytest.raises(InputError, match="expects a path to an .xml, XML text or a Graph, "
                                         "got int"):
        lpjit.compile(42)
    with pytest.raises(InputError, match=r"threads=0 is invalid; expected a positive integer"):
        lpjit.compile(graph, threads=0)


def test_default_threads_are_the_cores(graph) -> None:
    assert lpjit.compile(graph).threads == os.cpu_count()


def test_repr_shows_inputs_outputs_target_threads_and_arena(compiled) -> None:
    text = repr(compiled)
    lines = text.splitlines()
    assert lines[:3] == ["<CompiledModel 'two_in_two_out'",
                         "  inputs:  x: float32[2,3,8], y: float32[3,1]",
                         "  outputs: sum: float32[2,3,8], gate: float32[2,3,8]"]
    assert re.fullmatch(r"  target:  \S+ \(.*avx2.*\), threads=2, arena=\d+ bytes>", lines[3])


LOW_PRECISION_STEPS = [step.name for step in LOW_PRECISION_PIPELINE]


def test_inspection_program_llvm_ir_assembly_and_timings(compiled) -> None:
    assert [s.label for s in compiled.program.steps] == ["add + relu", "mul + sigmoid + gate"]
    assert 'define void @"lpjit_run"' in compiled.llvm_ir() or "@lpjit_run" in compiled.llvm_ir()
    assert re.search(r"^lpjit_run:", compiled.assembly(), re.MULTILINE)
    assert list(compiled.timings()) == [*LOW_PRECISION_STEPS, "fold_constants",
                                        "lower_graph_to_loops", "plan_memory",
                                        "lower_program_to_llvm", "compile_llvm"]
    assert compiled.arena_bytes == 0                      # relu's output is a model output


def test_dump_dir_and_progress_see_every_step(graph, tmp_path: Path) -> None:
    events: list[tuple[str, int, bool]] = []
    lpjit.compile(graph, threads=1, dump_dir=tmp_path / "dump",
                  progress=lambda name, index, record: events.append(
                      (name, index, record is not None)))
    names = [*LOW_PRECISION_STEPS, "fold_constants", "lower_graph_to_loops", "plan_memory",
             "lower_program_to_llvm", "compile_llvm"]
    assert events == [(n, i, done) for i, n in enumerate(names) for done in (False, True)]
    files = sorted(p.name for p in (tmp_path / "dump").iterdir())
    k = len(LOW_PRECISION_STEPS)
    expected = [f"{i + 1:02d}-{n}.graph" for i, n in enumerate(LOW_PRECISION_STEPS)]
    expected += [f"{k + 1:02d}-fold_constants.graph", f"{k + 2:02d}-lower_graph_to_loops.loops",
                 f"{k + 3:02d}-plan_memory.memory", f"{k + 4:02d}-lower_program_to_llvm.ll",
                 f"{k + 5:02d}-compile_llvm.opt.ll", f"{k + 5:02d}-compile_llvm.s"]
    assert files == expected
    folded = (tmp_path / f"dump/{k + 1:02d}-fold_constants.graph").read_text()
    assert "[3] %add = Add(%x, %bias" in folded
    assert "kernel add(" in (tmp_path / f"dump/{k + 2:02d}-lower_graph_to_loops.loops").read_text()


# -- edge-case graphs --------------------------------------------------------------------------


def test_a_parameter_returned_twice_and_a_constant_output_are_copied() -> None:
    x = Parameter(origin=Origin("0", "x", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(5,))
    table = np.arange(6, dtype=np.float32).reshape(2, 3)
    c = Constant.of(table, Origin("1", "table", "Const"))
    results = [Result(origin=Origin(str(2 + k), f"r{k}", "Result"), inputs=(v,))
               for k, v in enumerate((x.output, x.output, c.output))]
    compiled = lpjit.compile(Graph("copies", [x], results), threads=1, verify=True)
    data = np.random.default_rng(11).normal(size=5).astype(np.float32)
    first, second, constant = compiled(data)
    np.testing.assert_array_equal(first, data)
    np.testing.assert_array_equal(second, data)
    np.testing.assert_array_equal(constant, table)
    assert first.ctypes.data != second.ctypes.data != data.ctypes.data


def test_a_model_without_inputs_computes_its_folded_constants() -> None:
    table = np.random.default_rng(12).normal(size=(2, 3)).astype(np.float32)
    c = Constant.of(table, Origin("1", "table", "Const"))
    doubled = ew.Add(origin=Origin("2", "doubled", "Add"), inputs=(c.output, c.output))
    graph = Graph("constant", [], [Result(origin=Origin("3", "out", "Result"),
                                          inputs=(doubled.output,))])
    compiled = lpjit.compile(graph, threads=1, verify=True)
    assert repr(compiled).splitlines()[1] == "  inputs:  (none)"
    np.testing.assert_array_equal(compiled()[0], table + table)
    np.testing.assert_array_equal(compiled({})["out"], table + table)


# -- concurrency -------------------------------------------------------------------------------


EXAMPLES = Path(lpjit.__file__).parent / "examples"
CONCURRENT_THREADS, CONCURRENT_CALLS = 4, 400


def _concurrent_models() -> dict[str, lpjit.CompiledModel]:
    """Models with scratch in the arena, compiled with an OpenMP team of 2: the two-input
    graph (unchecked and checked: the checked one keeps its error record per thread too) and
    the bundled INT8 example (integer convolutions, parallel loops)."""
    scratch = _with_scratch(two_in_two_out())
    return {"two inputs": lpjit.compile(scratch, threads=2, cache=False),
            "two inputs checked": lpjit.compile(scratch, threads=2, checks=True, cache=False),
            "int8 example": lpjit.compile(EXAMPLES / "resnet_tiny_int8.xml", threads=2,
                                          cache=False)}


@pytest.fixture(scope="module")
def concurrent_models() -> dict[str, lpjit.CompiledModel]:
    return _concurrent_models()


@pytest.mark.parametrize("name", ["two inputs", "two inputs checked", "int8 example"])
def test_four_python_threads_share_one_compiled_model(concurrent_models, name) -> None:
    """4 Python threads call one model 400 times each, each thread cycling through 3 inputs
    of its own (12 distinct inputs): every call returns exactly what a lone call returned
    for that input, so no thread ever sees another's arena, outputs or error record."""
    compiled = concurrent_models[name]
    assert compiled.arena_bytes > 0 and compiled.threads == 2
    rng = np.random.default_rng(100)
    pool = [[rng.uniform(-2, 2, info.shape).astype(info.dtype) for info in compiled.inputs]
            for _ in range(3 * CONCURRENT_THREADS)]
    expected = [[a.copy() for a in compiled(*arrays)] for arrays in pool]
    if name.startswith("two inputs"):
        for arrays, outputs in zip(pool, expected):
            assert_matches_reference(compiled.graph, outputs, arrays)
    calls = [0] * CONCURRENT_THREADS
    failures: list[str] = []
    barrier = threading.Barrier(CONCURRENT_THREADS)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(CONCURRENT_CALLS):
            j = 3 * k + i % 3
            out = compiled(*pool[j])
            calls[k] += 1
            if not all(np.array_equal(a, e) for a, e in zip(out, expected[j], strict=True)):
                failures.append(f"thread {k}, call {i}, input {j}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONCURRENT_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert calls == [CONCURRENT_CALLS] * CONCURRENT_THREADS


def _with_scratch(graph: Graph) -> Graph:
    """One output, ``sum + gate``: ``sum`` feeds two kernels, so it lives in the arena."""
    total, gate = (r.inputs[0] for r in graph.results)
    both = ew.Add(origin=Origin("10", "both", "Add"), inputs=(total, gate))
    return Graph("scratch", graph.parameters,
                 [Result(origin=Origin("11", "both_result", "Result"), inputs=(both.output,))])
