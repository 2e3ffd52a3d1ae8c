"""End to end: ``lpjit.compile`` on saved IRs against the reference executor and OpenVINO.

* Small graphs of every op family that lowers: the compiled model equals
  ``lpjit.reference.run`` on fresh random inputs (float rtol 1e-4 / atol 1e-5, which covers the
  vectorised exp/tanh/erf; data movement exact), at threads=1 and threads=2, which agree
  bit for bit.
* The float real models of ``tests/models/builders.py`` match the OpenVINO CPU plugin (f32)
  to relative L2 < 1e-4, threads=1 and threads=2 identical.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import oracle
import pytest
from models import builders

import lpjit
from lpjit import reference

pytestmark = pytest.mark.oracle

FLOAT = {"rtol": 1e-4, "atol": 1e-5}
EXACT = {"rtol": 0.0, "atol": 0.0}


def weights(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> ov.Output:
    return ops.constant(rng.normal(0, scale, shape).astype(np.float32)).output(0)


def compile_and_compare(model: ov.Model, tmp_path: Path, tolerance: dict[str, float],
                        seed: int = 0) -> lpjit.CompiledModel:
    """Save ``model``; compile it at 1 and 2 threads (verifying every step); both must equal
    the reference executor within ``tolerance`` and each other exactly."""
    xml = oracle.save(model, tmp_path)
    inputs = oracle.random_inputs(model, seed)
    expected = reference.run(lpjit.read_ir(xml), inputs)
    serial = lpjit.compile(xml, threads=1, verify=True)
    parallel = lpjit.compile(xml, threads=2, verify=True)
    one, two = serial(*inputs), parallel(*inputs)
    assert len(one) == len(expected)
    for index, (a, b, e) in enumerate(zip(one, two, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, f"output {index}"
        np.testing.assert_allclose(a, e, **tolerance, err_msg=f"output {index}")
        np.testing.assert_array_equal(a, b, err_msg=f"output {index}: threads=1 vs 2")
    return serial


# -- op families -------------------------------------------------------------------------------


def test_elementwise_chain_with_broadcasting_and_fake_quantize(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = ops.parameter([2, 5, 7], np.float32, name="x")
    y = ops.parameter([5, 1], np.float32, name="y")
    h = ops.relu(ops.add(ops.multiply(x, y), weights(rng, 7)))
    fq = ops.fake_quantize(h, np.float32(0.0), np.float32(2.5), np.float32(0.0),
                           np.float32(2.5), 256)
    out = ops.subtract(ops.tanh(fq), ops.clamp(x, -1.0, 1.0))
    model = ov.Model([ops.result(out), ops.result(ops.sigmoid(h))], [x, y], "chain")
    compile_and_compare(model, tmp_path, FLOAT)


def test_convolutions_with_bias_and_activation(tmp_path: Path) -> None:
    """3x3 stride 2 with asymmetric pads + bias + ReLU, then depthwise 3x3 + ReLU6."""
    rng = np.random.default_rng(2)
    x = ops.parameter([1, 3, 11, 11], np.float32, name="x")
    conv = ops.convolution(x, weights(rng, 8, 3, 3, 3), [2, 2], [0, 1], [1, 0], [1, 1])
    h = ops.relu(ops.add(conv, weights(rng, 1, 8, 1, 1)))
    depthwise = ops.group_convolution(h, weights(rng, 8, 1, 1, 3, 3), [1, 1], [1, 1],
                                      [1, 1], [1, 1])
    out = ops.clamp(depthwise, 0.0, 6.0)
    compile_and_compare(ov.Model([ops.result(out)], [x], "convs"), tmp_path, FLOAT)


def test_matmul_with_bias_gelu_and_softmax(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = ops.parameter([2, 6, 24], np.float32, name="x")
    h = ops.gelu(ops.add(ops.matmul(x, weights(rng, 40, 24), False, True), weights(rng, 40)),
                 "erf")
    logits = ops.matmul(h, weights(rng, 40, 10), False, False)
    out = ops.softmax(logits, -1)
    compile_and_compare(ov.Model([ops.result(out)], [x], "mlp_head"), tmp_path, FLOAT)


def test_reductions_and_normalizations(tmp_path: Path) -> None:
    x = ops.parameter([2, 4, 6, 5], np.float32, name="x")
    mean = ops.reduce_mean(x, np.array([2, 3]), True)
    largest = ops.reduce_max(x, np.array([1]), False)
    mvn = ops.mvn(x, np.array([1, 2, 3]), True, 1e-5, "inside_sqrt")
    norm = ops.normalize_l2(x, np.array([1]), 1e-6, "add")
    model = ov.Model([ops.result(r) for r in (mean, largest, mvn, norm)], [x], "reduce")
    compile_and_compare(model, tmp_path, FLOAT)


def test_data_movement_views_and_multi_output_split(tmp_path: Path) -> None:
    """Reshape/Transpose of an intermediate (views of an arena buffer that outlive their
    producer), Concat, a two-output Split, Gather, StridedSlice and Pad: exact."""
    x = ops.parameter([2, 3, 8], np.float32, name="x")
    h = ops.relu(x)
    flat = ops.reshape(h, np.array([6, 8], np.int64), False)
    swapped = ops.transpose(ops.reshape(h, np.array([2, 24], np.int64), False),
                            np.array([1, 0], np.int64))
    halves = ops.split(flat, np.int64(1), 2)
    joined = ops.concat([halves.output(1), halves.output(0), flat], 1)
    picked = ops.gather(joined, np.array([5, 0, 2], np.int64), np.int64(0))
    sliced = ops.strided_slice(picked, np.array([0, 1], np.int64), np.array([3, 15], np.int64),
                               np.array([1, 3], np.int64), [0, 0], [0, 0])
    padded = ops.pad(sliced, np.array([1, 0], np.int64), np.array([0, 2], np.int64),
                     "constant", np.float32(-1.0))
    outputs = [ops.result(o) for o in (swapped, padded, ops.negative(flat))]
    compile_and_compare(ov.Model(outputs, [x], "movement"), tmp_path, EXACT)


def test_pooling(tmp_path: Path) -> None:
    """MaxPool 3x3 stride 2 with pads (both outputs), AvgPool excluding pads, global AvgPool."""
    x = ops.parameter([1, 4, 9, 9], np.float32, name="x")
    pooled = ops.max_pool(x, [2, 2], [1, 1], [1, 1], [1, 1], [3, 3])
    average = ops.avg_pool(ops.relu(x), [1, 1], [1, 0], [0, 1], [3, 2], True)
    overall = ops.avg_pool(pooled.output(0), [1, 1], [0, 0], [0, 0], [5, 5], False)
    outputs = [ops.result(o) for o in (pooled.output(0), pooled.output(1), average, overall)]
    compile_and_compare(ov.Model(outputs, [x], "pooling"), tmp_path, FLOAT)


def test_scaled_dot_product_attention_in_an_encoder_block(tmp_path: Path) -> None:
    """Q/K/V projections split into [batch, heads, seq, dim], causal SDPA plus SDPA with a
    float mask and an explicit scale, merged heads, output projection."""
    rng = np.random.default_rng(5)
    x = ops.parameter([2, 6, 16], np.float32, name="x")
    mask = ops.parameter([1, 1, 6, 6], np.float32, name="mask")

    def heads() -> ov.Output:
        projected = ops.matmul(x, weights(rng, 16, 16), False, True)
        split = ops.reshape(projected, np.array([2, 6, 2, 8], np.int64), False)
        return ops.transpose(split, np.array([0, 2, 1, 3], np.int64)).output(0)

    q, k, v = heads(), heads(), heads()
    causal = ops.scaled_dot_product_attention(q, k, v, causal=True)
    masked = ops.scaled_dot_product_attention(q, k, v, mask, np.float32(0.25), causal=False)
    merged = ops.reshape(ops.transpose(ops.add(causal, masked), np.array([0, 2, 1, 3],
                                                                          np.int64)),
                         np.array([2, 6, 16], np.int64), False)
    out = ops.matmul(merged, weights(rng, 16, 16), False, True)
    compile_and_compare(ov.Model([ops.result(out)], [x, mask], "attention"), tmp_path, FLOAT)


def test_interpolate_and_channel_movement(tmp_path: Path) -> None:
    """Nearest and linear resizes, DepthToSpace, ShuffleChannels, Tile and Broadcast."""
    x = ops.parameter([1, 8, 5, 6], np.float32, name="x")
    nearest = ops.interpolate(x, np.array([10, 12], np.int64), "nearest", "sizes",
                              axes=np.array([2, 3], np.int64))
    linear = ops.interpolate(x, np.array([1.5, 0.5], np.float32), "linear", "scales",
                             axes=np.array([2, 3], np.int64),
                             coordinate_transformation_mode="half_pixel")
    depth = ops.depth_to_space(x, "blocks_first", 2)
    shuffled = ops.shuffle_channels(x, 1, 4)
    tiled = ops.tile(ops.relu(x), np.array([1, 1, 2, 1], np.int64))
    wide = ops.broadcast(ops.reduce_sum(x, np.array([1]), True), np.array([2, 3, 5, 6]))
    outputs = [ops.result(o) for o in (nearest, linear, depth, shuffled, tiled, wide)]
    compile_and_compare(ov.Model(outputs, [x], "resize_move"), tmp_path, FLOAT)


def test_comparisons_select_conversions_and_normalizing_activations(tmp_path: Path) -> None:
    """Boolean masks into Select, a float -> i32 Convert (exact), BatchNormInference,
    LogSoftmax, Divide and Power."""
    rng = np.random.default_rng(6)
    x = ops.parameter([2, 4, 3, 5], np.float32, name="x")
    y = ops.parameter([2, 4, 3, 5], np.float32, name="y")
    picked = ops.select(ops.greater(x, y), ops.divide(x, ops.add(ops.abs(y), np.float32(1))),
                        ops.power(ops.abs(y), np.float32(1.5)))
    counted = ops.convert(ops.multiply(x, np.float32(10)), "i32")
    gamma, beta, mean = (rng.normal(size=4).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.5, 2, 4).astype(np.float32)
    normed = ops.batch_norm_inference(x, gamma, beta, mean, variance, 1e-5)
    log_probabilities = ops.log_softmax(ops.multiply(x, y), 1)
    outputs = [ops.result(o) for o in (picked, normed, log_probabilities)]
    compile_and_compare(ov.Model(outputs, [x, y], "misc"), tmp_path, FLOAT)
    exact = ov.Model([ops.result(counted)], [x, y], "convert")
    compile_and_compare(exact, tmp_path / "convert", EXACT)


# -- whole models vs OpenVINO ------------------------------------------------------------------

MODELS: dict[str, Callable[[], ov.Model]] = {
    "resnet": lambda: builders.resnet_like(channels=(16, 32), image=32),
    "mobilenet_v2": lambda: builders.mobilenet_v2_like(channels=(16, 24, 32), image=32),
    "bert": lambda: builders.bert_like(layers=2, hidden=64, heads=4, seq=16),
    "mlp": lambda: builders.mlp((64, 128, 128, 10)),
}
# Every model with f32 weights; two also with f16 weights (Const(f16) -> Convert(f32), folded).
CASES = [(name, "f32") for name in MODELS] + [("resnet", "f16"), ("mlp", "f16")]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "weights"), CASES, ids=[f"{m}-{w}" for m, w in CASES])
def test_float_model_matches_openvino(name: str, weights: str, tmp_path: Path) -> None:
    """Relative L2 < 1e-4 against OpenVINO f32; threads=1 and threads=2 give identical
    outputs."""
    model = MODELS[name]()
    xml = oracle.save(model, tmp_path, compress_to_fp16=weights == "f16")
    inputs = oracle.random_inputs(model, seed=7)
    expected = oracle.ov_run(xml, inputs, oracle.F32_CONFIG)
    serial = lpjit.compile(xml, threads=1)(*inputs)
    parallel = lpjit.compile(xml, threads=2)(*inputs)
    assert len(serial) == len(expected)
    for a, b, e in zip(serial, parallel, expected):
        assert a.shape == e.shape
        error = oracle.relative_l2(a, e)
        assert error < 1e-4, f"{name} ({weights} weights): relative L2 {error:.3g}"
        np.testing.assert_array_equal(a, b)
