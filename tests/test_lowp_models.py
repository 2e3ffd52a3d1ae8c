"""The low-precision pipeline on real NNCF IRs (``tests/models``): every quantized layer runs in
integer code, and the transformed graph computes what the original means.

INT8 IRs (``nncf.quantize``): ResNet-like, MobileNetV2-like and the BERT-like encoder
(``model_type=TRANSFORMER``), each with NNCF's defaults and with every non-default option of the
acceptance list at once (preset MIXED: asymmetric activations; overflow fix DISABLE: first
layer in [-127, 127]; ``compress_weights=False``: FakeQuantize on float weights).  Weight-only
IRs (``nncf.compress_weights`` INT8_ASYM and INT4_SYM group 32) of the MLP and the encoder.

Checks, on seeded random inputs:

* the report's integer layers are exactly the Convolution / GroupConvolution / MatMul layers
  whose inputs are all quantized, counted from the original graph by a walk written here;
* layer by layer, each quantized layer fed the reference's own inputs: the level indices of
  every FakeQuantize (or its Quantize) agree with the original's for >= 99.9% of the elements
  within one step, all within two;
* whole model: relative L2 <= 1e-3 against the original graph's reference, or else the first
  FakeQuantize that differs does so at rounding ties only (the float sums of an integer layer
  and of the float layer differ by float rounding, which moves a value sitting on a rounding
  midpoint into the neighbouring level; the difference then cascades, as in
  ``tests/test_nncf_oracle.py``).
"""

from __future__ import annotations

from collections.abc import Callable
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
from lpjit import reference
from lpjit.graph import Constant, Graph, Node, Parameter, Result, Value
from lpjit.ops import nn
from lpjit.ops.lowp import Quantize
from lpjit.ops.quantize import FakeQuantize
from lpjit.passes.low_precision import LowPrecisionOptions, apply_low_precision
from lpjit.passes.report import PrecisionReport
from lpjit.passes.weights import is_constant_subgraph
from lpjit.reference import evaluate_node
from lpjit.reference.lowp import level_index

pytestmark = pytest.mark.oracle

OUTPUT_TOLERANCE = 1e-3
WITHIN_ONE_STEP = 0.999
TIE_ULPS = 4

MIXED_ALL = {"preset": nncf.QuantizationPreset.MIXED, "overflow_fix": OverflowFix.DISABLE,
             "compress_weights": False}
TRANSFORMER = {"model_type": nncf.ModelType.TRANSFORMER}
INT8_CASES: dict[str, tuple[Callable[[], ov.Model], dict[str, Any]]] = {
    "resnet": (builders.resnet_like, {}),
    "resnet-mixed-no_overflow_fix-fq_weights": (builders.resnet_like, MIXED_ALL),
    "mobilenet_v2": (builders.mobilenet_v2_like, {}),
    "mobilenet_v2-mixed-no_overflow_fix-fq_weights": (builders.mobilenet_v2_like, MIXED_ALL),
    "bert": (builders.bert_like, TRANSFORMER),
    "bert-mixed-no_overflow_fix-fq_weights": (builders.bert_like, {**TRANSFORMER, **MIXED_ALL}),
}
# Integer layers per model: ResNet 6 convs + fc; MobileNetV2 19 convs (6 depthwise) + fc;
# encoder 2 x (q, k, v, Q K^T, out, ffn1, ffn2) (attn x V has no FakeQuantize).
EXPECTED_INTEGER_LAYERS = {"resnet": 7, "mobilenet_v2": 20, "bert": 14}
WEIGHT_CASES: dict[str, tuple[Callable[[], ov.Model], nncf.CompressWeightsMode, int | None]] = {
    "mlp-int8_asym": (builders.mlp, nncf.CompressWeightsMode.INT8_ASYM, None),
    "mlp-int4_sym-g32": (builders.mlp, nncf.CompressWeightsMode.INT4_SYM, 32),
    "bert-int8_asym": (builders.bert_like, nncf.CompressWeightsMode.INT8_ASYM, None),
    "bert-int4_sym-g32": (builders.bert_like, nncf.CompressWeightsMode.INT4_SYM, 32),
}


@attrs.frozen(eq=False)
class Case:
    """An IR read by lpjit, transformed by the pipeline, and random inputs for it."""

    name: str
    original: Graph
    transformed: Graph
    report: PrecisionReport
    inputs: list[np.ndarray]


def make_case(name: str, model: ov.Model, directory) -> Case:
    original = lpjit.read_ir(oracle.save(model, directory, compress_to_fp16=True))
    transformed, report = apply_low_precision(original, LowPrecisionOptions(verify=True))
    rng = np.random.default_rng(11)
    inputs = [rng.uniform(-2, 2, p.output.shape).astype(np.float32)
              for p in original.parameters]
    return Case(name, original, transformed, report, inputs)


@pytest.fixture(scope="session", params=sorted(INT8_CASES))
def int8_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Case:
    build, options = INT8_CASES[request.param]
    model = nncf_models.quantize(build(), **options)
    return make_case(request.param, model, tmp_path_factory.mktemp(f"lowp-{request.param}"))


@pytest.fixture(scope="session", params=sorted(WEIGHT_CASES))
def weight_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> Case:
    build, mode, group_size = WEIGHT_CASES[request.param]
    model = nncf_models.compress_weights(build(), mode, group_size=group_size)
    return make_case(request.param, model, tmp_path_factory.mktemp(f"lowp-{request.param}"))


# --------------------------------------------------------------------------------------
# Which layers have quantized inputs (an independent walk over the original graph)

PASS_THROUGH = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "ReLU")


def activation_fake_quantizes(graph: Graph) -> list[FakeQuantize]:
    return [n for n in graph.nodes
            if isinstance(n, FakeQuantize) and not is_constant_subgraph(n.inputs[0])]


def comes_from_fake_quantize(value: Value) -> bool:
    """``value`` is an activation FakeQuantize's output, possibly through pass-through ops."""
    node = value.node
    while node.origin.type in PASS_THROUGH:
        node = node.inputs[0].node
    return isinstance(node, FakeQuantize) and not is_constant_subgraph(node.inputs[0])


def has_quantized_weights(value: Value) -> bool:
    """A FakeQuantize or an integer Constant inside the constant weight subgraph."""
    stack = [value.node]
    while stack:
        node = stack.pop()
        if isinstance(node, FakeQuantize) or (isinstance(node, Constant)
                                              and node.element_type.is_integer
                                              and node.data.ndim >= 2):
            return True
        stack.extend(v.node for v in node.inputs)
    return False


def quantized_layers(graph: Graph) -> list[str]:
    """Convolution / GroupConvolution / MatMul layers whose inputs are all quantized."""
    names = []
    for node in graph.nodes:
        if not isinstance(node, (nn.Convolution, nn.GroupConvolution, nn.MatMul)):
            continue
        if all(has_quantized_weights(v) if is_constant_subgraph(v) else
               comes_from_fake_quantize(v) for v in node.inputs):
            names.append(node.origin.name)
    return names


# --------------------------------------------------------------------------------------
# Per-layer comparison


@attrs.frozen
class LayerAgreement:
    """How one FakeQuantize's level indices compare (transformed vs original)."""

    name: str
    kind: str
    size: int
    within_one_step: float
    max_steps: int


def per_layer_agreement(case: Case) -> tuple[list[LayerAgreement], list[np.ndarray]]:
    """Run the transformed graph with every FakeQuantize (or Quantize) output replaced by the
    original's, so each layer is fed the reference's own inputs; compare the level indices
    each FakeQuantize / Quantize computes from its input with the original's.  Returns the
    comparisons and the model outputs of that run."""
    expected = reference.run_all(case.original, case.inputs)
    fake_quantizes = {n.origin.layer_id: n for n in activation_fake_quantizes(case.original)}
    values: dict[Value, np.ndarray] = {p.output: x for p, x in
                                       zip(case.transformed.parameters, case.inputs)}
    agreements = []
    for node in case.transformed.nodes:
        if isinstance(node, (Parameter, Result)):
            continue
        outputs = evaluate_node(node, [values[v] for v in node.inputs])
        fq = fake_quantizes.get(node.origin.layer_id)
        if fq is not None and isinstance(node, (Quantize, FakeQuantize)):
            low, high = expected[fq.inputs[1]], expected[fq.inputs[2]]
            reference_q = level_index(expected[fq.inputs[0]], low, high, fq.levels)
            actual_q = level_index(values[node.inputs[0]], low, high, fq.levels)
            steps = np.abs(actual_q - reference_q)
            agreements.append(LayerAgreement(fq.origin.name, node.kind, steps.size,
                                             float(np.mean(steps <= 1)), int(steps.max())))
            forced = reference_q.astype(np.uint8) if isinstance(node, Quantize) else (
                expected[fq.output])
            outputs = (forced,)
        values.update(zip(node.outputs, outputs))
    return agreements, [values[r.inputs[0]] for r in case.transformed.results]


def first_difference(case: Case) -> str | None:
    """Cascaded runs of both graphs: the first activation FakeQuantize (topological order)
    whose level indices differ must differ at rounding ties only, by one step, with inputs
    that agree to float rounding.  Returns its description (``None``: no difference)."""
    original = reference.run_all(case.original, case.inputs)
    transformed = reference.run_all(case.transformed, case.inputs)
    replacements = {n.origin.layer_id: n for n in case.transformed.nodes
                    if isinstance(n, (Quantize, FakeQuantize))}
    for fq in activation_fake_quantizes(case.original):
        low, high = (original[v].astype(np.float64) for v in fq.inputs[1:3])
        x = original[fq.inputs[0]].astype(np.float64)
        y = transformed[replacements[fq.origin.layer_id].inputs[0]].astype(np.float64)
        qx, qy = (level_index(v, low, high, fq.levels) for v in (x, y))
        differ = qx != qy
        if not differ.any():
            continue
        assert np.all(np.abs(qx - qy)[differ] == 1), f"'{fq.origin.name}': more than a step"
        step = np.broadcast_to((high - low) / (fq.levels - 1), x.shape)
        position = np.broadcast_to((x - low) / (high - low) * (fq.levels - 1), x.shape)
        distance = np.abs(position - np.floor(position) - 0.5)[differ]
        allowed = (TIE_ULPS * float(np.spacing(np.float32(fq.levels - 1)))
                   + (np.abs(x - y) / step)[differ])
        assert np.all(distance <= allowed), (
            f"'{fq.origin.name}': {np.sum(distance > allowed)} of {differ.sum()} differing "
            "elements are not rounding ties")
        assert oracle.relative_l2(y, x) < 1e-5, f"'{fq.origin.name}': inputs differ"
        return (f"'{fq.origin.name}': {differ.sum()} of {differ.size} elements at ties "
                f"(max distance {distance.max():.2g} steps)")
    return None


# --------------------------------------------------------------------------------------
# INT8 IRs


def test_every_quantized_layer_runs_in_integer_code(int8_case: Case):
    """The report's integer layers are exactly the layers with all inputs quantized."""
    expected = quantized_layers(int8_case.original)
    actual = [layer.origin.name for layer in int8_case.report.integer_layers()]
    assert sorted(actual) == sorted(expected)
    assert len(expected) == EXPECTED_INTEGER_LAYERS[int8_case.name.split("-")[0]]
    float_convolutions = [n.origin.name for n in int8_case.transformed.nodes
                          if n.kind in ("Convolution", "GroupConvolution")]
    assert float_convolutions == []


def test_fake_quantizes_left_float_feed_only_float_ops(int8_case: Case):
    """Each activation FakeQuantize is integer or has a reason naming a non-quantizable
    consumer (NNCF's residual Add inputs, ReduceMean/AvgPool before the head)."""
    float_ids = {entry.origin.layer_id for entry in int8_case.report.kept_float}
    for fq in activation_fake_quantizes(int8_case.original):
        if fq.origin.layer_id not in float_ids:
            continue
        reason = int8_case.report.reason(fq.origin.name)
        assert reason is not None and "is not a quantizable op" in reason, reason
    assert {e.what for e in int8_case.report.kept_float} <= {"FakeQuantize"}


def test_layer_by_layer_agreement(int8_case: Case):
    """Every FakeQuantize output: >= 99.9% of the levels within one step, all within two; the
    model output of that run (each layer fed the reference's inputs) is the reference's to
    float rounding (relative L2 <= 1e-5)."""
    agreements, outputs = per_layer_agreement(int8_case)
    assert len(agreements) == len(activation_fake_quantizes(int8_case.original))
    for layer in agreements:
        assert layer.within_one_step >= WITHIN_ONE_STEP and layer.max_steps <= 2, layer
    expected = reference.run(int8_case.original, int8_case.inputs)
    assert oracle.relative_l2(outputs[0], expected[0]) <= 1e-5


def test_whole_model_output(int8_case: Case):
    """Relative L2 <= 1e-3 to the original's reference, or the first difference is a tie."""
    expected = reference.run(int8_case.original, int8_case.inputs)[0]
    actual = reference.run(int8_case.transformed, int8_case.inputs)[0]
    error = oracle.relative_l2(actual, expected)
    tie = first_difference(int8_case)
    assert error <= OUTPUT_TOLERANCE or tie is not None, f"relative L2 {error:.3g}"


# --------------------------------------------------------------------------------------
# Weight-only IRs


def compressed_matmuls(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if isinstance(n, nn.MatMul)
            and is_constant_subgraph(n.inputs[1]) and has_quantized_weights(n.inputs[1])]


def test_weight_only_matmuls_become_compressed(weight_case: Case):
    """Every MatMul with compressed weights becomes a CompressedMatMul; none is integer (the
    activations are float); no compressed weight is left over."""
    expected = sorted(n.origin.name for n in compressed_matmuls(weight_case.original))
    actual = sorted(layer.origin.name for layer in weight_case.report.compressed_layers())
    assert actual == expected and expected
    assert weight_case.report.integer_layers() == ()
    assert weight_case.report.kept_float == ()


def test_weight_only_outputs(weight_case: Case):
    """Each CompressedMatMul fed the original's input, and the whole model: relative L2
    <= 1e-3 to the original (whose reference rounds the f16 decompression steps)."""
    expected = reference.run_all(weight_case.original, weight_case.inputs)
    by_name = {n.origin.name: n for n in weight_case.original.nodes}
    for node in weight_case.transformed.nodes:
        if node.kind != "CompressedMatMul":
            continue
        original = by_name[node.origin.name]
        arrays = [expected[original.inputs[0]], *(v.node.data for v in node.inputs[1:])]
        (actual,) = evaluate_node(node, arrays)
        assert oracle.relative_l2(actual, expected[original.output]) <= OUTPUT_TOLERANCE
    outputs = reference.run(weight_case.transformed, weight_case.inputs)
    assert oracle.relative_l2(outputs[0], expected[weight_case.original.results[0].inputs[0]]
                              ) <= OUTPUT_TOLERANCE



# --------------------------------------------------------------------------------------
# The same IRs compiled: integer kernels end to end


@pytest.fixture(scope="session")
def compiled_int8(int8_case: Case):
    return lpjit.compile(int8_case.original, threads=1, cache=False)


def test_compiled_model_runs_every_quantized_layer_in_integer_code(int8_case: Case,
                                                                   compiled_int8) -> None:
    """``lpjit.compile`` (low precision by default) reports the same integer layers, and its
    kernels are integer: the program stores u8 for every Quantize it computes."""
    report = compiled_int8.precision_report()
    actual = sorted(layer.origin.name for layer in report.integer_layers())
    assert actual == sorted(quantized_layers(int8_case.original))
    u8_buffers = [b for b in compiled_int8.program.roots if b.dtype.name == "u8"]
    assert u8_buffers, "no u8 activations in the compiled program"


def test_compiled_model_output(int8_case: Case, compiled_int8) -> None:
    """Compiled INT8 output vs the transformed graph's reference (the same integer ops):
    relative L2 <= 1e-5 (float rounding of the epilogues), else <= 1e-3 with the first
    difference of the transformed graph vs the original shown to be a tie; and vs the
    original's reference (FakeQuantize as-is) <= 1e-3 or a tie."""
    actual = compiled_int8(*int8_case.inputs)[0]
    transformed = reference.run(int8_case.transformed, int8_case.inputs)[0]
    original = reference.run(int8_case.original, int8_case.inputs)[0]
    to_transformed = oracle.relative_l2(actual, transformed)
    to_original = oracle.relative_l2(actual, original)
    print(f"{int8_case.name}: compiled vs transformed reference {to_transformed:.3g}, "
          f"vs original reference {to_original:.3g}")
    assert to_transformed <= OUTPUT_TOLERANCE
    assert to_original <= OUTPUT_TOLERANCE or first_difference(int8_case) is not None


def int8_weight_bytes(graph: Graph) -> int:
    """The bytes the quantized weights take at 8 bits: the IR's i8 constants (NNCF's compressed
    weights) or, for weights stored as FakeQuantize on float constants, their element count."""
    constants = [n for n in graph.nodes if isinstance(n, Constant)]
    i8_bytes = sum(n.data.nbytes for n in constants if n.element_type.name == "i8")
    if i8_bytes:
        return i8_bytes
    return sum(n.inputs[0].node.data.size for n in graph.nodes
               if isinstance(n, FakeQuantize) and isinstance(n.inputs[0].node, Constant))


def test_compiled_model_keeps_weights_in_int8(int8_case: Case, compiled_int8) -> None:
    """Resident weight bytes <= 1.15 x the weights' bytes at 8 bits plus scales (f32), whether
    the IR stores the weights compressed (i8) or as FakeQuantize on float constants."""
    i8_bytes = int8_weight_bytes(int8_case.original)
    memory = compiled_int8.memory_report()
    int_weights = memory.weight_bytes.get("i8", 0) + memory.weight_bytes.get("u8", 0)
    scale_bytes = memory.total_weight_bytes - int_weights
    print(f"IR i8 weights {i8_bytes} B; resident {memory}")
    assert i8_bytes > 0 and int_weights <= 1.15 * i8_bytes
    assert memory.total_weight_bytes <= 1.15 * i8_bytes + scale_bytes


def test_compiled_weight_only_model(weight_case: Case) -> None:
    """Weight-only IRs compiled: every compressed MatMul is a CompressedMatMul kernel whose
    weights stay 8-bit in memory (i4/u4 unpacked to a byte), and the output equals the
    transformed graph's reference to float rounding (relative L2 <= 1e-5) and the original's
    within 1e-3 (f32 vs f16 decompression, as OpenVINO)."""
    compiled = lpjit.compile(weight_case.original, threads=1, cache=False)
    report = compiled.precision_report()
    assert sorted(layer.origin.name for layer in report.compressed_layers()) == sorted(
        n.origin.name for n in compressed_matmuls(weight_case.original))
    memory = compiled.memory_report()
    low = memory.weight_bytes.get("i8", 0) + memory.weight_bytes.get("u8", 0)
    assert low > 0 and low >= memory.weight_bytes.get("f32", 0), memory
    actual = compiled(*weight_case.inputs)[0]
    transformed = reference.run(weight_case.transformed, weight_case.inputs)[0]
    original = reference.run(weight_case.original, weight_case.inputs)[0]
    assert oracle.relative_l2(actual, transformed) <= 1e-5
    assert oracle.relative_l2(actual, original) <= OUTPUT_TOLERANCE
