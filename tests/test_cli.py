"""The ``lpjit`` command line on IRs written by OpenVINO and NNCF: every subcommand, run
in-process through ``lpjit.cli.main`` (plus the console script once, as a subprocess).

The model is a small ResNet-like network (``tests/models/builders.py``) quantized by NNCF and
saved by OpenVINO; the bundled examples (``lpjit/examples``) are used by ``info`` and the
console script.  What each test checks:

* ``profile``: a table row for every executed step (its layers, in order), latency figures,
  a Chrome trace with one complete event per step per iteration, and JSON whose per-layer
  times add up;
* ``compare``: the figures equal those computed here from an independently built observed
  graph, the compiled model and the reference;
* ``run``: the .npz holds exactly the compiled model's (or the reference's) outputs;
* ``compile --dump``: every artifact is written and listed;
* errors: one line on stderr, a non-zero exit code, no traceback unless ``--debug``.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from models import builders, nncf_models

import lpjit
from lpjit import reference
from lpjit.cli import DEMO_MODEL, EXAMPLES, build_parser, main
from lpjit.cli_progress import CLEAR_LINE, CompileProgress
from lpjit.graph import Graph, Origin, Result
from lpjit.ops.quantize import FakeQuantize

pytestmark = pytest.mark.oracle

ITERATIONS = 4


@pytest.fixture(scope="module")
def model_xml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-like IR (one stage of 4 channels, 8x8 images) quantized by NNCF."""
    model = nncf_models.quantize(builders.resnet_like(channels=(4,), image=8), samples=2)
    return oracle.save(model, tmp_path_factory.mktemp("cli"), "resnet_int8")


@pytest.fixture(scope="module")
def input_npy(model_xml: Path) -> Path:
    x = np.random.default_rng(7).uniform(-2, 2, (1, 3, 8, 8)).astype(np.float32)
    path = model_xml.parent / "x.npy"
    np.save(path, x)
    return path


@pytest.fixture(scope="module")
def compiled(model_xml: Path) -> lpjit.CompiledModel:
    return lpjit.compile(model_xml, threads=1)


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- profile -------------------------------------------------------------------------------


def test_profile_table_has_a_row_for_every_step_and_writes_a_trace(
        capsys, model_xml, compiled, tmp_path):
    trace = tmp_path / "trace.json"
    code, out, err = run_cli(capsys, "profile", model_xml, "--threads", 1, "--iterations",
                             ITERATIONS, "--trace", trace)
    assert code == 0, err
    for key in ("compile ", "first inference", "latency   min", "median", "p90", "max",
                "throughput"):
        assert key in out
    rows = [line for line in out.splitlines() if re.match(r"^\s*\d+\s+[\d.]+us ", line)]
    steps = compiled.program.steps
    assert len(rows) == len(steps)
    for row, step in zip(rows, steps):
        assert row.rstrip().endswith(step.label), (row, step.label)
        assert step.kernel.name in row

    document = json.loads(trace.read_text())
    spans = [e for e in document["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(steps) * ITERATIONS
    for event in spans:
        assert {"name", "ph", "ts", "dur", "pid", "tid", "args"} <= event.keys()
        assert isinstance(event["ts"], (int, float)) and event["dur"] >= 0
        assert event["args"]["layers"]
    for iteration in range(ITERATIONS):
        mine = [e for e in spans if e["args"]["iteration"] == iteration]
        assert [e["name"] for e in mine] == [s.label for s in steps]
        assert all(a["ts"] + a["dur"] <= b["ts"] + 1e-3 for a, b in itertools.pairwise(mine))


def test_profile_json_is_complete_and_consistent(capsys, model_xml, compiled):
    code, out, _ = run_cli(capsys, "profile", model_xml, "--threads", 1, "--iterations", 3,
                           "--json")
    assert code == 0
    document = json.loads(out)
    assert document["iterations"] == 3 and document["threads"] == 1
    latency = document["latency_ms"]
    assert 0 < latency["min"] <= latency["median"] <= latency["p90"] <= latency["max"]
    assert document["throughput_per_s"] > 0 and document["first_inference_ms"] > 0
    assert set(document["compile_steps_s"]) == set(compiled.timings())
    layers = document["layers"]
    assert [row["layers"] for row in layers] == [
        [o.name for o in step.layers] for step in compiled.program.steps]
    assert sum(row["share"] for row in layers) == pytest.approx(1.0)
    assert sum(row["time_us"] for row in layers) == pytest.approx(
        document["steps_total_ms"] * 1e3)
    for row in layers:
        assert row["gops"] == pytest.approx(row["ops"] / row["time_us"] / 1e3)
        assert re.fullmatch(r"[a-z0-9/]+( x [a-z0-9/]+)? -> [a-z0-9/]+", row["precision"])
    convolutions = [row for row in layers if row["op"] == "Convolution"]
    assert convolutions and all(row["ops"] > 0 for row in convolutions)


# -- compare -------------------------------------------------------------------------------


def observed_by_hand(graph: Graph) -> tuple[Graph, list[FakeQuantize]]:
    """The graph with a Result on every FakeQuantize whose data input is not constant."""
    constant_types = {"Constant", "Convert", "Multiply", "Subtract", "Reshape"}

    def constant(node) -> bool:
        return not node.inputs if node.kind == "Constant" else (
            node.kind in constant_types and all(constant(v.node) for v in node.inputs))

    observed = [n for n in graph.nodes if isinstance(n, FakeQuantize)
                and not constant(n.inputs[0].node)]
    extra = [Result(origin=Origin(f"t{i}", f"t{i}", "Result"), inputs=(n.output,),
                    tensor_names=((f"t{i}",),)) for i, n in enumerate(observed)]
    return Graph(graph.name, graph.parameters, (*graph.results, *extra)), observed


def test_compare_figures_equal_those_computed_directly(capsys, model_xml, input_npy):
    code, out, err = run_cli(capsys, "compare", model_xml, "--threads", 1, "--input",
                             f"input={input_npy}", "--json")
    assert code == 0, err
    document = json.loads(out)
    graph = lpjit.read_ir(model_xml)
    x = np.load(input_npy)
    variant, observed = observed_by_hand(graph)
    compiled = lpjit.compile(variant, threads=1)
    outputs = compiled(x)
    values = reference.run_all(graph, [x])
    rows = {row["layer"]: row for row in document["layers"]}
    assert [row["kind"] for row in document["layers"]].count("FakeQuantize") == len(observed)
    assert len(observed) >= 4
    for index, node in enumerate(observed):
        actual = outputs[f"t{index}"].astype(np.float64)
        expected = values[node.output].astype(np.float64)
        low, high = (values[node.inputs[k]].astype(np.float64) for k in (3, 4))
        step = np.broadcast_to((high - low) / (node.levels - 1), expected.shape)
        error = np.abs(actual - expected)
        in_steps = error / step
        row = rows[node.origin.name]
        assert row["levels"] == node.levels and row["elements"] == expected.size
        assert row["max_abs_error"] == pytest.approx(error.max(), abs=0)
        assert row["max_error_steps"] == pytest.approx(in_steps.max(), rel=1e-12)
        assert row["off_by_step"] == pytest.approx(np.mean(np.round(in_steps) >= 1))
        noise = np.sum(error ** 2)
        sqnr = None if noise == 0 else 10 * math.log10(np.sum(expected ** 2) / noise)
        assert row["sqnr_db"] == pytest.approx(sqnr)
    output_row = rows[graph.results[0].inputs[0].node.origin.name]
    assert output_row["kind"] == "output" and output_row["max_error_steps"] is None
    assert output_row["max_abs_error"] == pytest.approx(
        np.abs(outputs[0] - values[graph.results[0].inputs[0]]).max(), abs=0)
    grows = [row["layer"] for row in document["layers"] if row["grows"]]
    assert grows == ([document["first_growth"]] if document["first_growth"] else [])


def test_compare_text_names_the_compile_and_every_observed_layer(capsys, model_xml):
    code, out, _ = run_cli(capsys, "compare", model_xml, "--threads", 1, "--seed", 3)
    assert code == 0
    assert out.startswith("compare   compiled ")
    assert "seed 3" in out and "FakeQuantize as-is" in out
    graph = lpjit.read_ir(model_xml)
    for node in observed_by_hand(graph)[1]:
        assert re.search(rf"\s{re.escape(node.origin.name)}(\s|$)", out)
    assert ("error grows first at" in out) or ("no FakeQuantize output is off" in out)


# -- run -----------------------------------------------------------------------------------


def test_run_writes_the_compiled_outputs(capsys, model_xml, input_npy, compiled, tmp_path):
    npz = tmp_path / "out.npz"
    code, out, _ = run_cli(capsys, "run", model_xml, "--threads", 1, "--input",
                           f"input={input_npy}", "--output", npz)
    assert code == 0 and f"wrote {npz}" in out and "compiled" in out
    saved = np.load(npz)
    expected = compiled(np.load(input_npy))
    assert list(saved.keys()) == list(expected.names)
    for name in expected.names:
        np.testing.assert_array_equal(saved[name], expected[name])


def test_run_reference_writes_the_reference_outputs(capsys, model_xml, input_npy, tmp_path):
    npz = tmp_path / "ref.npz"
    code, out, _ = run_cli(capsys, "run", model_xml, "--reference", "--input",
                           f"input={input_npy}", "--output", npz)
    assert code == 0 and "reference executor" in out
    graph = lpjit.read_ir(model_xml)
    expected = reference.run(graph, [np.load(input_npy)])
    np.testing.assert_array_equal(np.load(npz)[graph.results[0].names[0]], expected[0])


def test_run_with_shape_resolves_a_dynamic_input(capsys, tmp_path):
    model = builders.mlp((16, 32, 10))
    model.reshape({"input": ov.PartialShape([-1, 16])})
    xml = oracle.save(model, tmp_path, "dynamic_mlp")
    npz = tmp_path / "out.npz"
    code, out, err = run_cli(capsys, "run", xml, "--shape", "input=3,16", "--threads", 1,
                             "--seed", 2, "--output", npz)
    assert code == 0, err
    assert "output: float32[3, 10]" in out
    graph = lpjit.read_ir(xml, shapes={"input": (3, 16)})
    x = np.random.default_rng(2).uniform(-1, 1, (3, 16)).astype(np.float32)
    np.testing.assert_allclose(np.load(npz)["output"], reference.run(graph, [x])[0],
                               rtol=1e-5, atol=1e-6)


# -- compile --dump ------------------------------------------------------------------------


def test_compile_dump_writes_every_artifact(capsys, model_xml, tmp_path):
    dump = tmp_path / "dump"
    code, out, _ = run_cli(capsys, "compile", model_xml, "--threads", 1, "--dump", dump)
    assert code == 0
    names = sorted(p.name for p in dump.iterdir())
    for name in names:
        assert re.search(rf"^  {re.escape(name)} +\S", out, re.MULTILINE)  # listed with what it is
    steps = re.search(r"^compile .*?\((.*)\)$", out, re.MULTILINE).group(1)
    step_names = [part.rsplit(" ", 2)[0] for part in steps.split(", ")][1:]  # after read_ir
    assert "fold_constants" in step_names[:step_names.index("lower_graph_to_loops")]
    suffixes = {"lower_graph_to_loops": [".loops"], "plan_memory": [".memory"],
                "lower_program_to_llvm": [".ll"], "compile_llvm": [".opt.ll", ".s"]}
    for index, step in enumerate(step_names, start=1):
        for suffix in suffixes.get(step, [".graph"]):
            assert f"{index:02d}-{step}{suffix}" in names
    for fixed in ("00-read_ir.graph", "vectorize_loops.loops", "schedule.txt",
                  "precision.txt"):
        assert fixed in names

    def text(suffix: str) -> str:
        return next((dump / n).read_text() for n in names if n.endswith(suffix))

    assert 'define void @"lpjit_run"' in text(".opt.ll") or "@lpjit_run(" in text(".opt.ll")
    assert "lpjit_run:" in text(".s") and "ret" in text(".s")
    assert "arena" in text(".memory")
    assert "vectorized(" in text("vectorize_loops.loops") or "x" in text(
        "vectorize_loops.loops")
    schedule = text("schedule.txt")
    assert "for " in schedule and "range(" in schedule
    precision = text("precision.txt")
    assert "layer precisions:" in precision
    report = lpjit.compile(model_xml, threads=1).precision_report()
    for entry in report.kept_float:
        assert f"'{entry.origin.name}'" in precision and entry.reason in precision


# -- info, demo, help, progress, errors ----------------------------------------------------


def test_info_on_the_bundled_examples(capsys):
    for xml in sorted(EXAMPLES.glob("*.xml")):
        code, out, _ = run_cli(capsys, "info", xml)
        assert code == 0
        assert "input   input: f32[1,3,32,32]" in out and "Convolution x6" in out


def test_every_option_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        code, out, _ = run_cli(capsys, name, "--help")
        assert code == 0
        for action in sub._actions:
            assert action.help, (name, action.dest)
            for option in action.option_strings:
                assert option in out, (name, option)


def test_progress_shows_the_running_step_and_erases_itself():
    stream = io.StringIO()
    progress = CompileProgress(stream, delay=0.0, interval=0.01)
    with progress:
        progress("lower_graph_to_loops", 5, None)
        time.sleep(0.1)
    text = stream.getvalue()
    assert "lpjit: compiling [6] lower_graph_to_loops" in text
    assert text.endswith(CLEAR_LINE)
    quiet = io.StringIO()
    with CompileProgress(quiet, delay=10.0) as _:
        pass
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("argv, code, message", [
    (["profile", "missing.xml"], 1, "model file 'missing.xml' does not exist"),
    (["run", "{model}", "--shape", "input=1,x"], 2, "bad --shape 'input=1,x'"),
    (["compare", "{model}", "--shape", "input=1,3,9,9"], 1, "does not match the declared"),
    (["run", "{model}", "--input", "nope={npy}"], 1, "no input named 'nope'"),
    (["profile", "{model}", "--threads", "0"], 2, "'0' is not a positive int"),
    (["compile"], 2, "the following arguments are required: model"),
])
def test_errors_are_one_line_with_a_non_zero_exit_code(capsys, model_xml, input_npy, argv,
                                                       code, message):
    argv = [a.format(model=model_xml, npy=input_npy) for a in argv]
    result, _, err = run_cli(capsys, *argv)
    assert result == code
    assert err.count("\n") == 1 and err.startswith("lpjit: error: ") and message in err
    assert "Traceback" not in err


def test_debug_shows_the_exception(capsys):
    with pytest.raises(lpjit.errors.InputError, match="does not exist"):
        main(["--debug", "info", "missing.xml"])
    with pytest.raises(lpjit.errors.InputError, match="does not exist"):
        main(["info", "missing.xml", "--debug"])


def test_console_script(tmp_path):
    script = Path(sys.executable).with_name("lpjit")
    ok = subprocess.run([script, "info", DEMO_MODEL], capture_output=True, text=True,
                        timeout=60, check=False)
    assert ok.returncode == 0 and "FakeQuantize x10" in ok.stdout
    bad = subprocess.run([script, "run", tmp_path / "none.xml"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"lpjit: error: model file '{tmp_path / 'none.xml'}' does not exist"]


def test_demo_profiles_reports_and_compares(capsys, model_xml):
    code, out, err = run_cli(capsys, "demo", "--model", model_xml, "--time", 0.05)
    assert code == 0, err
    for section in ("== profile", "== precision report", "== compare with the float",
                    "demo done in"):
        assert section in out
