"""NNCF low-precision IRs: lpjit's reference agrees with the OpenVINO CPU plugin.

INT8 IRs (``nncf.quantize``) are compared with OpenVINO compiled with ``FQ_AS_IS_CONFIG``
(low-precision transformations and dynamic quantization off, so every FakeQuantize runs as-is
in f32): relative L2 of the output < 1e-3.  The float ops between FakeQuantizes differ only by
summation order, but a FakeQuantize maps a value on a rounding midpoint to one of two levels,
and OpenVINO (``fma(x, isc, ish)``) and the spec formula (``(x-il)/(ih-il)*(L-1)``, half to
even) can choose differently (facts 2.3, pitfall 10).  So every INT8 case also compares all
FakeQuantize inputs and outputs of both executors on the same input, in topological order: the
first FQ that differs, and any other whose inputs still agree, must differ only at rounding
ties (input within float rounding of a midpoint ``k + 0.5``), by exactly one quantization step.
A real bug (wrong range, broadcast or op before the FQ) differs by more than a step, away from
midpoints, or already in the FQ's input.  An output difference above 1e-3 is accepted only with
such a tie found.

Ties are not rare in NNCF IRs: with the first-layer overflow fix and uncompressed weights
(``compress_weights=False``), the weight FQ range is twice the largest |w|, so that weight sits
at bin position 0.75 * 254 = 190.5, exactly on a midpoint, in every output channel.

Weight-only IRs (``nncf.compress_weights``) are compared with OpenVINO's ``F32_CONFIG``, which
sets ``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``: by default the CPU plugin quantizes the activations
of MatMuls with compressed weights to int8 on the fly (~1e-2 relative L2; the same happens to
INT8 IRs with i8 weights when LP transformations are off).  Tolerance 1e-3: OpenVINO
decompresses ``(q - zp) * scale`` in f32 even where the IR says f16 (facts 3.1); a reference
doing the f16 Subtract/Multiply literally (as lpjit's reference does, following the IR types) is
off by up to half an f16 ulp per weight, relative 2^-11 = 4.9e-4 with random sign, rms about
2.8e-4; the outputs show 2.5e-4 to 4.5e-4 relative L2.  An f32 decompression gives ~1e-7.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import nncf
import numpy as np
import openvino as ov
import oracle
import pytest
from models import builders, nncf_models
from nncf.quantization.advanced_parameters import OverflowFix

import lpjit
from lpjit import dtypes, reference
from lpjit.graph import Constant, Graph, Node, constant_value

pytestmark = pytest.mark.oracle

INT8_TOLERANCE = 1e-3
WEIGHT_ONLY_TOLERANCE = 1e-3
# How close (in quantization steps) an element's FQ input must be to a rounding midpoint,
# beyond the difference between the two executors' inputs, to count as a tie: four f32 ulps
# of the largest bin position L - 1 (6.1e-5 steps for L = 256), the resolution at which either
# executor computes the position (OpenVINO by fma(x, isc, ish), the spec by dividing).
TIE_ULPS = 4
# The two executors' inputs to the first differing FQ: float rounding only, nothing larger.
INPUT_AGREEMENT = 1e-5

MIXED = nncf.QuantizationPreset.MIXED
TRANSFORMER = nncf.ModelType.TRANSFORMER

# name: (float model builder, nncf_models.quantize options)
INT8_CASES: dict[str, tuple[Callable[[], ov.Model], dict[str, Any]]] = {
    "resnet": (builders.resnet_like, {}),
    "resnet-fq_weights": (builders.resnet_like, {"compress_weights": False}),
    "resnet-mixed-fq_weights-no_overflow_fix": (builders.resnet_like, {
        "preset": MIXED, "overflow_fix": OverflowFix.DISABLE, "compress_weights": False}),
    "mobilenet_v2": (builders.mobilenet_v2_like, {}),
    "mobilenet_v2-mixed": (builders.mobilenet_v2_like, {
        "preset": MIXED, "overflow_fix": OverflowFix.DISABLE}),
    "bert-transformer": (builders.bert_like, {"model_type": TRANSFORMER}),
    "bert-transformer-mixed-fq_weights": (builders.bert_like, {
        "model_type": TRANSFORMER, "preset": MIXED, "compress_weights": False}),
    "mlp": (builders.mlp, {}),
}

Mode = nncf.CompressWeightsMode
# mode: (group size, storage type of the compressed weights, has a zero point)
WEIGHT_MODES: dict[str, tuple[int | None, dtypes.DType, bool]] = {
    "int8_asym": (None, dtypes.u8, True),
    "int8_sym": (None, dtypes.i8, False),
    "int4_sym-g32": (32, dtypes.i4, False),
    "int4_asym-g32": (32, dtypes.u4, True),
}
WEIGHT_MODELS: dict[str, Callable[[], ov.Model]] = {"mlp": builders.mlp, "bert": builders.bert_like}


# --------------------------------------------------------------------------------------
# Fixtures: each IR is made once per session.


@pytest.fixture(scope="session", params=sorted(INT8_CASES))
def int8_ir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``nncf.quantize`` of a small model (5 random calibration samples), saved as IR v11."""
    build, options = INT8_CASES[request.param]
    quantized = nncf_models.quantize(build(), **options)
    return oracle.save(quantized, tmp_path_factory.mktemp(f"int8-{request.param}"),
                       compress_to_fp16=True)


@pytest.fixture(scope="session",
                params=[(m, w) for m in WEIGHT_MODELS for w in WEIGHT_MODES],
                ids=[f"{m}-{w}" for m in WEIGHT_MODELS for w in WEIGHT_MODES])
def weight_only_ir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[str, Path]:
    """``nncf.compress_weights`` of the MLP or the encoder; returns (mode key, .xml)."""
    model_name, mode_key = request.param
    group_size = WEIGHT_MODES[mode_key][0]
    mode = Mode(mode_key.split("-")[0])
    compressed = nncf_models.compress_weights(WEIGHT_MODELS[model_name](), mode,
                                              group_size=group_size)
    directory = tmp_path_factory.mktemp(f"weights-{model_name}-{mode_key}")
    return mode_key, oracle.save(compressed, directory, compress_to_fp16=True)


def _inputs(xml: Path, seed: int = 11) -> list[np.ndarray]:
    """Seeded random inputs (not the calibration samples, which use seed 0)."""
    return oracle.random_inputs(ov.Core().read_model(str(xml)), seed)


# --------------------------------------------------------------------------------------
# Per-layer FakeQuantize comparison


@attrs.frozen(eq=False)
class FakeQuantizeValues:
    """One activation FakeQuantize as both executors computed it on the same model input."""

    name: str
    levels: int
    ranges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # il, ih, ol, oh
    lpjit_input: np.ndarray
    lpjit_output: np.ndarray
    openvino_input: np.ndarray
    openvino_output: np.ndarray

    @property
    def step(self) -> np.ndarray:
        """Output quantization step (oh - ol) / (L - 1), broadcast to the tensor."""
        _, _, ol, oh = self.ranges
        step = (oh.astype(np.float64) - ol) / (self.levels - 1)
        return np.broadcast_to(np.abs(step), self.lpjit_output.shape)

    def differing(self) -> np.ndarray:
        """Mask of elements whose outputs differ by more than half a step."""
        diff = np.abs(self.lpjit_output.astype(np.float64) - self.openvino_output)
        return diff > 0.5 * self.step

    def midpoint_distance(self) -> np.ndarray:
        """Distance in steps from lpjit's input to the nearest rounding midpoint ``k + 0.5``."""
        il, ih = (r.astype(np.float64) for r in self.ranges[:2])
        position = (self.lpjit_input.astype(np.float64) - il) / (ih - il) * (self.levels - 1)
        position = np.broadcast_to(position, self.lpjit_input.shape)
        return np.abs(position - np.floor(position) - 0.5)

    def input_difference(self) -> np.ndarray:
        """|lpjit input - OpenVINO input| in input steps (ih - il) / (L - 1)."""
        il, ih = (r.astype(np.float64) for r in self.ranges[:2])
        step = np.abs(ih - il) / (self.levels - 1)
        diff = np.abs(self.lpjit_input.astype(np.float64) - self.openvino_input)
        return np.broadcast_to(diff / step, self.lpjit_input.shape)


def _fake_quantizes(graph: Graph) -> list[Node]:
    """Every FakeQuantize (on activations and on weights), in topological order."""
    return [n for n in graph.nodes if n.origin.type == "FakeQuantize"]


def _openvino_fq_values(xml: Path, names: Sequence[str], inputs: Sequence[np.ndarray]
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(input, output) of each named FakeQuantize, from OpenVINO with FQ_AS_IS_CONFIG.

    The FQ outputs and their data inputs are added as extra outputs of the saved IR's model.
    """
    core = ov.Core()
    model = core.read_model(str(xml))
    ops_by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    extra = []
    for name in names:
        fq = ops_by_name[name]
        extra += [fq.input_value(0), fq.output(0)]
    first = len(model.outputs)
    model.add_outputs(extra)
    compiled = core.compile_model(model, "CPU", oracle.FQ_AS_IS_CONFIG)
    results = compiled(list(inputs))
    arrays = [np.array(results[out]) for out in compiled.outputs[first:]]
    return {name: (arrays[2 * i], arrays[2 * i + 1]) for i, name in enumerate(names)}


def compare_fake_quantizes(xml: Path, inputs: Sequence[np.ndarray]) -> list[FakeQuantizeValues]:
    """Every FakeQuantize's input and output from lpjit and OpenVINO, in topological order."""
    graph = lpjit.read_ir(xml)
    values = reference.run_all(graph, list(inputs))
    fqs = _fake_quantizes(graph)
    ov_values = _openvino_fq_values(xml, [n.origin.name for n in fqs], inputs)
    compared = []
    for node in fqs:
        ranges = tuple(np.asarray(values[v]) for v in node.inputs[1:5])
        ov_in, ov_out = ov_values[node.origin.name]
        compared.append(FakeQuantizeValues(
            name=node.origin.name, levels=node.levels, ranges=ranges,
            lpjit_input=values[node.inputs[0]], lpjit_output=values[node.output],
            openvino_input=ov_in, openvino_output=ov_out))
    return compared


def assert_ties_only(fq: FakeQuantizeValues) -> str:
    """Every differing element of ``fq`` is a rounding tie and off by exactly one step."""
    mask = fq.differing()
    distance = fq.midpoint_distance()[mask]
    tie_tolerance = TIE_ULPS * float(np.spacing(np.float32(fq.levels - 1)))
    allowed = tie_tolerance + fq.input_difference()[mask]
    assert np.all(distance <= allowed), (
        f"FQ '{fq.name}': {np.sum(distance > allowed)} of {mask.sum()} differing elements "
        f"are not rounding ties (max distance {distance.max():.3g} steps)")
    diff = np.abs(fq.lpjit_output.astype(np.float64) - fq.openvino_output)[mask]
    np.testing.assert_allclose(diff, fq.step[mask], rtol=1e-4,
                               err_msg=f"FQ '{fq.name}': differences are not one step")
    return (f"'{fq.name}': {mask.sum()} of {mask.size} elements, rounding ties "
            f"(max distance {distance.max():.2g} steps), one step each")


def assert_differences_are_ties(compared: Sequence[FakeQuantizeValues]) -> list[str]:
    """Each FakeQuantize that differs while its inputs still agree differs by ties only.

    In topological order: an FQ whose inputs agree to float rounding (relative L2 < 1e-5) is a
    root cause and must differ by ties only (``assert_ties_only``); the first differing FQ
    must be such a root cause.  An FQ whose inputs already differ is downstream of an earlier
    tie and is not checked.  Returns one summary line per root cause (empty: all agree).
    """
    causes = []
    for fq in compared:
        if not fq.differing().any():
            continue
        input_error = oracle.relative_l2(fq.lpjit_input, fq.openvino_input)
        if input_error < INPUT_AGREEMENT:
            causes.append(assert_ties_only(fq))
        else:
            assert causes, (f"first differing FQ '{fq.name}': its inputs already differ "
                            f"(relative L2 {input_error:.3g}); an op before it disagrees")
    return causes


# --------------------------------------------------------------------------------------
# INT8 (nncf.quantize)


def test_int8_ir_is_read_with_its_fake_quantizes(int8_ir: Path) -> None:
    """lpjit reads every FakeQuantize of the NNCF IR, with NNCF's levels (255/256)."""
    graph = lpjit.read_ir(int8_ir)
    ov_fqs = [op for op in ov.Core().read_model(str(int8_ir)).get_ordered_ops()
              if op.get_type_name() == "FakeQuantize"]
    fqs = [n for n in graph.nodes if n.origin.type == "FakeQuantize"]
    assert sorted(n.origin.name for n in fqs) == sorted(op.get_friendly_name() for op in ov_fqs)
    assert {n.levels for n in fqs} <= {255, 256}
    assert any(n.levels == 256 for n in fqs)


def test_int8_ir_matches_openvino_fq_as_is(int8_ir: Path) -> None:
    """Output within relative L2 1e-3 of OpenVINO (FQ as-is); per-layer: ties only."""
    inputs = _inputs(int8_ir)
    expected = oracle.ov_run(int8_ir, inputs, oracle.FQ_AS_IS_CONFIG)
    actual = oracle.lpjit_reference(int8_ir, inputs)
    assert [a.shape for a in actual] == [e.shape for e in expected]
    error = oracle.relative_l2(actual[0], expected[0])
    ties = assert_differences_are_ties(compare_fake_quantizes(int8_ir, inputs))
    assert error < INT8_TOLERANCE or ties, (
        f"relative L2 {error:.3g} although every FakeQuantize output agrees")


@pytest.fixture(scope="module")
def tiny_int8_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quantized 16x16 ResNet whose first FakeQuantize is on the Parameter."""
    model = builders.resnet_like(channels=(8, 16), image=16)
    return oracle.save(nncf_models.quantize(model), tmp_path_factory.mktemp("tiny-int8"))


def _midpoint_inputs(xml: Path, seed: int) -> tuple[str, np.ndarray]:
    """(input FQ name, an input whose every element is on one of its rounding midpoints)."""
    input_fq = _fake_quantizes(lpjit.read_ir(xml))[0]
    il, ih = (float(constant_value(v)) for v in input_fq.inputs[1:3])
    k = np.random.default_rng(seed).integers(0, input_fq.levels - 1, (1, 3, 16, 16))
    step = (ih - il) / (input_fq.levels - 1)
    return input_fq.origin.name, (il + (k + 0.5) * step).astype(np.float32)


def test_midpoint_inputs_differ_by_ties_only(tiny_int8_ir: Path) -> None:
    """Inputs on the input FQ's midpoints: OpenVINO and lpjit disagree on some, by ties only."""
    name, midpoints = _midpoint_inputs(tiny_int8_ir, seed=3)
    compared = compare_fake_quantizes(tiny_int8_ir, [midpoints])
    assert compared[0].name == name
    assert np.all(compared[0].midpoint_distance() < 1e-4), "inputs should sit on midpoints"
    causes = assert_differences_are_ties(compared)
    # About 20% of exact midpoints land in different bins (facts 2.3: 4-16% near ties).
    assert causes and causes[0].startswith(f"'{name}'"), causes


def test_tie_check_rejects_non_ties_and_multi_step_differences(tiny_int8_ir: Path) -> None:
    """The per-layer check fails for a difference away from a midpoint or of two steps."""
    first = compare_fake_quantizes(tiny_int8_ir, _inputs(tiny_int8_ir, seed=5))[0]
    assert not first.differing().any()
    bin_center = np.unravel_index(np.argmax(first.midpoint_distance()), first.step.shape)
    shifted = first.openvino_output.copy()
    shifted[bin_center] += first.step[bin_center]
    with pytest.raises(AssertionError, match="1 of 1 differing elements are not rounding ties"):
        assert_differences_are_ties([attrs.evolve(first, openvino_output=shifted)])

    _, midpoints = _midpoint_inputs(tiny_int8_ir, seed=3)
    tie = compare_fake_quantizes(tiny_int8_ir, [midpoints])[0]
    mask = tie.differing()
    assert mask.any()
    two_steps = tie.openvino_output + (tie.openvino_output - tie.lpjit_output) * mask
    with pytest.raises(AssertionError, match="differences are not one step"):
        assert_ties_only(attrs.evolve(tie, openvino_output=two_steps))


# --------------------------------------------------------------------------------------
# Weight-only compression (nncf.compress_weights)


def test_weight_only_ir_is_read_with_compressed_constants(weight_only_ir: tuple[str, Path]
                                                          ) -> None:
    """lpjit reads the u8/i8/u4/i4 weights, the f16 scales and the group Reshape."""
    mode_key, xml = weight_only_ir
    group_size, storage, has_zero_point = WEIGHT_MODES[mode_key]
    graph = lpjit.read_ir(xml)
    consts = [n for n in graph.nodes if isinstance(n, Constant)]
    weights = [n for n in consts if n.element_type == storage and n.data.ndim >= 2
               and n.data.shape[-1] > 1]
    assert weights, f"no {storage} weight constants"
    low, high = storage.min, storage.max
    assert all(low <= n.data.min() and n.data.max() <= high for n in weights)
    assert len({int(v) for n in weights for v in np.unique(n.data)}) > 8, "weights look constant"
    assert any(n.element_type == dtypes.f16 for n in consts), "no f16 scales"
    if group_size is not None:
        assert any(n.data.ndim == 3 and n.data.shape[-1] == group_size for n in weights)
        assert any(n.origin.type == "Reshape" for n in graph.nodes)
    zero_points = [n for n in consts if n.element_type == storage and n.data.ndim >= 2
                   and n.data.shape[-1] == 1]
    assert bool(zero_points) == has_zero_point


def test_weight_only_ir_matches_openvino(weight_only_ir: tuple[str, Path]) -> None:
    """Output within relative L2 1e-3 of OpenVINO in f32 without dynamic quantization."""
    _, xml = weight_only_ir
    inputs = _inputs(xml)
    expected = oracle.ov_run(xml, inputs, oracle.F32_CONFIG)
    actual = oracle.lpjit_reference(xml, inputs)
    assert [a.shape for a in actual] == [e.shape for e in expected]
    error = oracle.relative_l2(actual[0], expected[0])
    assert error < WEIGHT_ONLY_TOLERANCE, f"relative L2 {error:.3g}"


def test_int8_ir_v10_is_read_and_matches_openvino(tmp_path: Path) -> None:
    """An NNCF INT8 IR serialized as IR v10 (legacy version) reads and runs like v11: output
    within 1e-3 of OpenVINO executing FakeQuantize as-is, else per-layer ties only; and the
    lpjit reference gives identical outputs for the v10 and the v11 file."""
    quantized = nncf_models.quantize(builders.resnet_like())
    v10 = oracle.save(quantized, tmp_path / "v10", version=10)
    v11 = oracle.save(quantized, tmp_path / "v11")
    assert 'version="10"' in v10.read_text()[:500]
    inputs = _inputs(v10)
    expected = oracle.ov_run(v10, inputs, oracle.FQ_AS_IS_CONFIG)
    actual = oracle.lpjit_reference(v10, inputs)
    error = oracle.relative_l2(actual[0], expected[0])
    ties = assert_differences_are_ties(compare_fake_quantizes(v10, inputs))
    assert error < INT8_TOLERANCE or ties, f"relative L2 {error:.3g}"
    np.testing.assert_array_equal(actual[0], oracle.lpjit_reference(v11, inputs)[0])
