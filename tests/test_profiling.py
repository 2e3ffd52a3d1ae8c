"""``lpjit.profiling``: operation counts per node, what each step reads and writes, profiles
and their Chrome trace; ``lpjit.compare.error_stats`` on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lowp_graphs import (
    compressed_weights,
    conv,
    f32,
    fake_quantize,
    graph,
    group_conv,
    matmul,
    parameter,
    relu,
)

import lpjit
from lpjit import dtypes
from lpjit.compare import error_stats
from lpjit.profiling import chrome_trace, count_ops, describe_steps, profile_model


def test_count_ops_follows_the_documented_rules():
    rng = np.random.default_rng(0)
    x = parameter((1, 6, 9, 9)).output
    y = conv(x, f32(rng.normal(size=(8, 6, 3, 3))), strides=(2, 2))       # out [1,8,5,5]
    assert count_ops(y.node) == 2 * (8 * 5 * 5) * (6 * 3 * 3)
    g = group_conv(x, f32(rng.normal(size=(3, 4, 2, 3, 3))))               # out [1,12,9,9]
    assert count_ops(g.node) == 2 * (12 * 9 * 9) * (2 * 3 * 3)
    a = parameter((5, 16), "a").output
    m = matmul(a, f32(rng.normal(size=(7, 16))))                           # out [5,7], K=16
    assert count_ops(m.node) == 2 * 5 * 7 * 16
    t = matmul(parameter((16, 5), "t").output, f32(rng.normal(size=(7, 16))),
               transpose_a=True)                                           # K = 16 too
    assert count_ops(t.node) == 2 * 5 * 7 * 16
    assert count_ops(relu(y).node) == 8 * 5 * 5


def test_steps_of_an_int8_model_read_u8_with_i8_weights():
    """The first convolution quantizes its f32 input itself (one step, named by its
    Convolution, not by the Quantize inlined before it) and requantizes its output; the second
    reads those u8 levels with i8 weights."""
    rng = np.random.default_rng(1)
    x = parameter((1, 4, 6, 6))

    def q_conv(data, out_channels, in_channels):
        weights = compressed_weights(rng.integers(-127, 128, (out_channels, in_channels, 3, 3)),
                                     dtypes.i8, rng.uniform(0.01, 0.02, (out_channels, 1, 1, 1)
                                                            ).astype(np.float32))
        return relu(conv(data, weights))

    hidden = fake_quantize(q_conv(fake_quantize(x.output, -1.0, 1.0), 8, 4), 0.0, 2.0)
    out = q_conv(hidden, 8, 8)
    compiled = lpjit.compile(graph([x], out), threads=1)
    steps = describe_steps(compiled.program, compiled.graph)
    assert len(steps) == len(compiled.program.steps) == 2
    first, second = steps
    assert (first.op, second.op) == ("Convolution", "Convolution")
    assert first.layer_types[0] == "FakeQuantize"                     # inlined, in graph order
    assert (first.precision, second.precision) == ("f32 x i8 -> u8", "u8 x i8 -> f32")
    assert second.ops == 2 * (8 * 6 * 6) * (8 * 9) + 8 * 6 * 6        # conv + fused ReLU


def test_profile_and_trace_cover_every_step_of_every_iteration():
    x = parameter((2, 64))
    a = relu(matmul(x.output, f32(np.random.default_rng(2).normal(size=(32, 64)))))
    compiled = lpjit.compile(graph([x], a), threads=1)
    data = np.random.default_rng(3).normal(size=(2, 64)).astype(np.float32)
    profile = profile_model(compiled, [data], iterations=5)
    assert profile.iterations == 5 and profile.stamps.shape == (5, len(profile.steps) + 1)
    assert np.all(np.diff(profile.stamps.ravel()) >= 0)
    assert profile.native_mean <= max(profile.latencies)
    trace = chrome_trace(profile)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == 5 * len(profile.steps)
    assert spans[0]["ts"] == 0.0
    assert sum(e["dur"] for e in spans) == pytest.approx(
        np.diff(profile.stamps, axis=1).sum() / 1e3)


def test_error_stats_by_hand():
    reference = np.array([0.0, 0.5, 1.0, 1.5], np.float32)
    actual = np.array([0.0, 0.5, 1.5, 1.5], np.float32)       # one element one step off
    max_abs, steps, off, sqnr = error_stats(actual, reference, np.full(4, 0.5))
    assert (max_abs, steps, off) == (0.5, 1.0, 0.25)
    assert sqnr == pytest.approx(10 * math.log10((0.25 + 1 + 2.25) / 0.25))
    assert error_stats(reference, reference, None) == (0.0, None, None, math.inf)
    zero_step = error_stats(np.array([1.0, 2.0]), np.array([1.0, 1.0]), np.zeros(2))
    assert zero_step[1] == math.inf and zero_step[2] == 0.5
