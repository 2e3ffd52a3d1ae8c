"""The fast requantizing epilogue (lowering.ops.lowp_requantize): where it is taken it equals
the reference's level index for every accumulator; convolutions using it stay bit-exact."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from cpu_targets import AVX2, HOST, SSE, compiler_for
from lowp_graphs import const, graph, origin, parameter

from lowering.fusion import Group
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.ops.lowp_conv import BorderClasses, q_conv_geometry, tie_flags, zero_point_table
from lowering.ops.lowp_requantize import fma_f32, plan_fast_requantize
from lowering.program_exec import run_program
from lpjit import dtypes, reference
from lpjit.ops import activations as act
from lpjit.ops import elementwise as elt
from lpjit.ops import lowp
from lpjit.ops.quantize import FakeQuantize

F32 = np.float32


def requantized_conv(rng, data_shape, weights, pads, il=0.0, ih=6.0, levels=256):
    """QConvolution -> bias Add -> Clamp(0, 6) -> Quantize(il, ih) on a u8 parameter."""
    x = parameter(data_shape, "x", dtypes.u8)
    out = weights.shape[0] * weights.shape[1]
    conv = lowp.QConvolution(
        origin=origin("qconv", "Convolution"),
        inputs=(x.output, const(weights.astype(np.int8)),
                const(rng.uniform(0.002, 0.02, out).astype(F32)),
                const(np.array([rng.uniform(0.01, 0.05)], F32)),
                const(np.array([rng.uniform(-1.0, 0.0)], F32))),
        strides=(1, 1), pads_begin=pads, pads_end=pads, dilations=(1, 1))
    bias = const(rng.uniform(-0.5, 1.5, (1, out, 1, 1)).astype(F32))
    added = elt.Add(origin=origin("bias", "Add"), inputs=(conv.output, bias))
    clamp = act.Clamp(origin=origin("relu6", "Clamp"), inputs=(added.output,), min=0.0,
                      max=6.0)
    q = lowp.Quantize(origin=origin("q", "Quantize"),
                      inputs=(clamp.output, const(np.array([il], F32)),
                              const(np.array([ih], F32))), levels=levels)
    return conv, (added, clamp, q), x


@pytest.mark.parametrize("fused", [False, True])
def test_fast_form_is_exact_wherever_it_is_taken(fused):
    """Every accumulator of every channel: |t - rint t| < limit implies g(acc) == f(acc);
    ``t`` by a multiply and an add, or by one FMA."""
    rng = np.random.default_rng(7)
    weights = rng.integers(-4, 5, (1, 48, 2, 1, 1))
    conv, chain, _ = requantized_conv(rng, (1, 2, 4, 4), weights, (0, 0), ih=5.5)
    epilogue = SimpleNamespace(group=Group(conv, chain, (0, 0, 0)))
    g = q_conv_geometry(conv)
    step = np.repeat(np.asarray(conv.inputs[3].node.data, F32), 48)
    low = np.repeat(np.asarray(conv.inputs[4].node.data, F32), 48)
    scale = np.asarray(conv.inputs[2].node.data, F32)
    table = zero_point_table(weights.astype(np.int8), low, BorderClasses.of(g))
    plan = plan_fast_requantize(epilogue, weights, step, scale, table, 4, 255, 16, fused)
    assert plan is not None and plan.fused == fused
    flat = weights.reshape(48, -1)
    lo, hi = 255 * np.minimum(flat, 0).sum(1), 255 * np.maximum(flat, 0).sum(1)
    bias = np.asarray(chain[0].inputs[1].node.data, F32).reshape(-1)
    for oc in range(48):
        acc = np.arange(lo[oc], hi[oc] + 1)
        x = (acc.astype(F32) * step[oc] + table[0, oc, 0]) * scale[oc] + bias[oc]
        expected = lowp_index(np.clip(x, F32(0), F32(6)), 5.5)
        a, slope, offset = acc.astype(F32), plan.slope[oc], plan.offset[0, oc, 0]
        t = fma_f32(a, slope, offset) if fused else a * slope + offset
        rounded = np.rint(t)
        fast = np.clip(rounded, plan.low[0, oc, 0], plan.high[0, oc, 0])
        taken = np.abs(t - rounded) < plan.limit[oc]
        np.testing.assert_array_equal(fast[taken], expected[taken], err_msg=f"channel {oc}")
        assert taken.mean() > 0.99


def test_border_classes_sharing_zero_points_plan_once_and_map_back():
    """Padded 3x3: classes whose zero points are equal share one plan, and every class's
    table entries still give the exact level wherever the fast form is taken."""
    rng = np.random.default_rng(11)
    weights = rng.integers(-4, 5, (1, 16, 2, 3, 3))
    weights[:, :4] = np.abs(weights[:, :4])     # border taps of some channels add zero
    weights[:, :4, :, 0, :] = 0
    conv, chain, _ = requantized_conv(rng, (1, 2, 5, 5), weights, (1, 1), ih=5.5)
    epilogue = SimpleNamespace(group=Group(conv, chain, (0, 0, 0)))
    g = q_conv_geometry(conv)
    step = np.repeat(np.asarray(conv.inputs[3].node.data, F32), 16)
    low = np.repeat(np.asarray(conv.inputs[4].node.data, F32), 16)
    scale = np.asarray(conv.inputs[2].node.data, F32)
    table = zero_point_table(weights.astype(np.int8), low, BorderClasses.of(g))
    distinct = [np.unique(table[:, oc]).size for oc in range(16)]
    assert 1 < min(distinct) < max(distinct) <= table[:, 0].size
    plan = plan_fast_requantize(epilogue, weights, step, scale, table, 4, 255, 16)
    assert plan is not None and plan.offset.shape == table.shape
    flat = weights.reshape(16, -1)
    lo, hi = 255 * np.minimum(flat, 0).sum(1), 255 * np.maximum(flat, 0).sum(1)
    bias = np.asarray(chain[0].inputs[1].node.data, F32).reshape(-1)
    for (o, oc, w), zp in np.ndenumerate(table):
        acc = np.arange(lo[oc], hi[oc] + 1)
        x = (acc.astype(F32) * step[oc] + zp) * scale[oc] + bias[oc]
        expected = lowp_index(np.clip(x, F32(0), F32(6)), 5.5)
        t = acc.astype(F32) * plan.slope[oc] + plan.offset[o, oc, w]
        rounded = np.rint(t)
        fast = np.clip(rounded, plan.low[o, oc, w], plan.high[o, oc, w])
        taken = np.abs(t - rounded) < plan.limit[oc]
        np.testing.assert_array_equal(fast[taken], expected[taken], err_msg=f"{o, oc, w}")


def lowp_index(x: np.ndarray, high: float) -> np.ndarray:
    from lpjit.reference.lowp import level_index
    return level_index(x, F32(0), F32(high), 256).astype(F32)


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("shape, kernel, pads", [((1, 16, 5, 37), 1, (0, 0)),
                                                 ((1, 8, 6, 19), 3, (1, 1)),
                                                 ((1, 24, 3, 4), 3, (1, 1))])
def test_requantized_convolution_is_bit_exact(target, shape, kernel, pads):
    """The fast form is planned (both layouts: the last case vectorizes along channels) and
    the u8 output equals the reference's."""
    rng = np.random.default_rng(11)
    weights = rng.integers(-128, 128, (1, 40, shape[1], kernel, kernel))
    _, chain, x = requantized_conv(rng, shape, weights, pads, ih=4.0)
    g = graph([x], chain[-1].output)
    program = lower_graph_to_loops(g, LoweringOptions(target=target, threads=1))
    assert any("qconv_slope" in repr(s.kernel) for s in program.steps)
    data = rng.integers(0, 256, shape).astype(np.uint8)
    expected = np.asarray(reference.run(g, [data])[0])
    for name, run in (("LLVM", compiler_for(target)), ("numba", None)):
        if run is None and target is not HOST:
            continue
        actual = run_program(program, [data], run) if run else run_program(program, [data])
        np.testing.assert_array_equal(actual[0], expected, err_msg=f"{name} {target.cpu}")


@pytest.mark.parametrize("target", [HOST, AVX2], ids=lambda t: t.cpu)
@pytest.mark.parametrize("shape, layout", [((1, 16, 4, 21), "lowp_conv"),
                                           ((1, 16, 3, 3), "lowp_conv_channels")])
@pytest.mark.parametrize("unsure", ["all", "some"])
def test_vectors_near_a_tie_take_the_exact_chain(monkeypatch, target, shape, layout, unsure):
    """With a zero limit every vector is 'near a tie' (or, with a zero limit on every third
    channel, some vectors of each tile; the others skip the tie test, but for a vector of
    channels, which holds such a channel): the exact chain, run after the tile for the
    vectors it deferred, writes them; in both layouts."""
    import importlib

    import attrs

    from lowering.ops import lowp_conv, lowp_requantize

    plan = lowp_conv.plan_fast_requantize
    limit = np.zeros(40, F32) if unsure == "all" else np.where(np.arange(40) % 3, 1, 0)
    monkeypatch.setattr(lowp_conv, "plan_fast_requantize", lambda *a: attrs.evolve(
        plan(*a), limit=limit.astype(F32)))
    if layout == "lowp_conv_channels":      # 3x3 pixels: not as one row of 9 (regrouped)
        monkeypatch.setattr(importlib.import_module("lowering.ops.lowp"),
                            "scheduled_geometry", lambda ctx, node, g, *a: g)
    writer = importlib.import_module(f"lowering.ops.{layout}")
    tiles = []
    monkeypatch.setattr(writer, "DeferredExact", SimpleNamespace(open=lambda *a: tiles.append(
        lowp_requantize.DeferredExact.open(*a)) or tiles[-1]))
    rng = np.random.default_rng(5)
    _, chain, x = requantized_conv(rng, shape, rng.integers(-128, 128, (1, 40, 16, 1, 1)),
                                   (0, 0), ih=3.0)
    g = graph([x], chain[-1].output)
    program = lower_graph_to_loops(g, LoweringOptions(target=target, threads=1))
    assert tiles and all(tiles)
    flags = any("qconv_checked" in repr(s.kernel) for s in program.steps)
    assert flags == (unsure == "some" and layout == "lowp_conv")    # a vector of channels
    data = rng.integers(0, 256, shape).astype(np.uint8)
    actual = run_program(program, [data], compiler_for(target))[0]
    np.testing.assert_array_equal(actual, np.asarray(reference.run(g, [data])[0]))


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("shape, kernel, out_low", [((1, 16, 5, 37), 1, -0.0),
                                                    ((1, 24, 3, 4), 3, -2.0150604)])
def test_fake_quantize_output_is_bit_exact(target, shape, kernel, out_low):
    """QConvolution -> bias Add -> FakeQuantize (f32 values, as before a residual Add): the
    fast form writes the dequantized values where its level is trusted; output equals the
    reference bit for bit (signed zeros, a top level two-valued, clipped inputs)."""
    from lpjit.ops.quantize import FakeQuantize

    rng = np.random.default_rng(3)
    weights = rng.integers(-128, 128, (1, 40, shape[1], kernel, kernel))
    _, (added, _, _), x = requantized_conv(rng, shape, weights, (kernel // 2,) * 2)
    ranges = [const(np.array([v], F32)) for v in (-1.0, 1.5, out_low, 1.9993179)]
    y = FakeQuantize(origin=origin("fq", "FakeQuantize"), inputs=(added.output, *ranges),
                     levels=256).output
    g = graph([x], y)
    program = lower_graph_to_loops(g, LoweringOptions(target=target, threads=1))
    if kernel == 1:                       # the width layout (channels: the exact chain)
        assert any("qconv_slope" in repr(s.kernel) for s in program.steps)
    data = rng.integers(0, 256, shape).astype(np.uint8)
    expected = np.asarray(reference.run(g, [data])[0])
    actual = run_program(program, [data], compiler_for(target))[0]
    np.testing.assert_array_equal(actual.view(np.int32), expected.view(np.int32))
    if target is HOST:
        np.testing.assert_array_equal(run_program(program, [data])[0].view(np.int32),
                                      expected.view(np.int32))


def test_tie_test_runs_only_for_vectors_of_channels_with_exceptions():
    """A limit of 1 (no accumulator where the fast form differs) needs no tie test: flags per
    channel, per vector's first channel in the channel layout, or one answer for all."""
    limit = np.array([1, 0.4999, 1, 1, 0, 1], F32)
    np.testing.assert_array_equal(tie_flags(limit, 2, by_vector=False), [0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(tie_flags(limit, 2, by_vector=True), [1, 1, 0, 1, 1, 0])
    assert tie_flags(np.ones(6, F32), 4, by_vector=False) is False
    assert tie_flags(np.full(6, 0.5, F32), 4, by_vector=True) is True
    assert tie_flags(np.array([1, 0.5, 1, 0.5], F32), 2, by_vector=True) is True


def _rounded_f32(x) -> np.float32:
    """The exact rational ``x`` rounded to f32, half to even (the nearest of three)."""
    from fractions import Fraction

    guess = np.float32(float(x))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess,
                  np.nextafter(guess, np.float32(np.inf))]
    distance = [abs(Fraction(float(c)) - x) for c in candidates]
    best = min(distance)
    near = [c for c, d in zip(candidates, distance) if d == best]
    return near[0] if len(near) == 1 else next(c for c in near if c.view(np.int32) % 2 == 0)


def test_fma_f32_rounds_once():
    """``fma_f32`` equals ``a * b + c`` rounded once to f32, also where rounding the f64 sum
    would round twice (a product exactly halfway between two f32, moved by a tiny ``c``)."""
    from fractions import Fraction

    rng = np.random.default_rng(17)
    a = (rng.standard_normal(400) * 2.0 ** rng.integers(-8, 9, 400)).astype(F32)
    b = (rng.standard_normal(400) * 2.0 ** rng.integers(-12, 2, 400)).astype(F32)
    c = (rng.standard_normal(400) * 2.0 ** rng.integers(-30, 9, 400)).astype(F32)
    halfway = F32(2 ** 12 + 1)                      # its square: 2^24 + 2^13 + 1, odd
    a = np.concatenate([a, [halfway, halfway, -halfway]]).astype(F32)
    b = np.concatenate([b, [halfway, halfway, halfway]]).astype(F32)
    c = np.concatenate([c, [2.0 ** -30, -(2.0 ** -30), 2.0 ** -30]]).astype(F32)
    actual = fma_f32(a, b, c)
    expected = [_rounded_f32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                for x, y, z in zip(a, b, c)]
    np.testing.assert_array_equal(actual, np.array(expected, F32))
    assert actual[-3] == F32(2 ** 24 + 2 ** 13 + 2) and actual[-2] == F32(2 ** 24 + 2 ** 13)


def residual_conv(rng, data_shape, kernel, top, other_fq: bool = False):
    """QConvolution -> bias -> FakeQuantize -> Add(Dequantize(levels)) -> ReLU -> Quantize:
    the ResNet / MobileNetV2 residual block's second convolution, on u8 parameters
    ``x`` and ``levels``; ``top`` is FakeQuantize's output_high (the top level two-valued
    when ``span + low`` misses it)."""
    weights = rng.integers(-128, 128, (1, 24, data_shape[1], kernel, kernel))
    _, (added, _, _), x = requantized_conv(rng, data_shape, weights, (kernel // 2,) * 2)
    ranges = [const(np.array([v], F32)) for v in (-1.0, 1.5, -1.0, top)]
    fq = FakeQuantize(origin=origin("fq", "FakeQuantize"), inputs=(added.output, *ranges),
                      levels=256)
    shape = (data_shape[0], 24, *data_shape[2:])
    if other_fq:        # ResNet's downsampling blocks: the other branch's f32 FakeQuantize
        levels = parameter(shape, "levels", dtypes.f32)
        ranges = [const(np.array([v], F32)) for v in (-0.9, 1.2, -0.7, 1.3)]
        other = FakeQuantize(origin=origin("other_fq", "FakeQuantize"),
                             inputs=(levels.output, *ranges), levels=256)
    else:
        levels = parameter(shape, "levels", dtypes.u8)
        other = lowp.Dequantize(origin=origin("dequantize", "Dequantize"),
                                inputs=(levels.output, const(np.array([-0.7], F32)),
                                        const(np.array([1.3], F32))), levels=256)
    total = elt.Add(origin=origin("residual", "Add"), inputs=(fq.output, other.output))
    relu = act.Relu(origin=origin("relu", "Relu"), inputs=(total.output,))
    out = lowp.Quantize(origin=origin("out", "Quantize"),
                        inputs=(relu.output, const(np.array([0.0], F32)),
                                const(np.array([2.5], F32))), levels=256)
    return graph([x, levels], out.output)


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("shape, kernel", [((1, 16, 5, 37), 1), ((1, 16, 3, 3), 1),
                                           ((1, 8, 6, 19), 3)],
                         ids=["rows", "channels", "3x3"])
@pytest.mark.parametrize("top", [1.5, 1.4999])
def test_residual_tail_is_bit_exact(target, shape, kernel, top):
    """The rest of a residual chain after its FakeQuantize as one fast step on the two level
    indices (``TailForm``, FMAs or not: SSE has none), checked against the reference on every
    pair of levels at compile time; the u8 output equals the reference's for inputs that
    reach both ends of every range (both layouts; numba on the host too)."""
    rng = np.random.default_rng(13)
    g = residual_conv(rng, shape, kernel, top)
    program = lower_graph_to_loops(g, LoweringOptions(target=target, threads=1))
    assert any("rt2" in repr(s.kernel) for s in program.steps)
    for seed in range(3):
        data = np.random.default_rng(seed)
        inputs = [data.integers(0, 256, shape).astype(np.uint8),
                  data.choice([0, 1, 128, 254, 255], (shape[0], 24, *shape[2:])).astype(
                      np.uint8) if seed == 2 else
                  data.integers(0, 256, (shape[0], 24, *shape[2:])).astype(np.uint8)]
        expected = np.asarray(reference.run(g, inputs)[0])
        runs = [("LLVM", compiler_for(target))] + ([("numba", None)] if target is HOST
                                                    and shape[-1] == 37 else [])
        for name, run in runs:
            actual = (run_program(program, inputs, run) if run
                      else run_program(program, inputs))[0]
            np.testing.assert_array_equal(actual, expected, err_msg=f"{name} {target.cpu}")


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("shape, kernel", [((1, 16, 5, 37), 1), ((1, 16, 3, 3), 1)],
                         ids=["rows", "channels"])
def test_residual_tail_over_a_fake_quantize_value_is_bit_exact(target, shape, kernel):
    """The other operand an f32 FakeQuantize output (stored by its own step, as in ResNet's
    downsampling blocks): the form's keys are the values it can take (every level's value,
    ol and oh); inputs at both ends, beyond them, infinities and NaN (which takes the exact
    chain) give the reference's levels."""
    rng = np.random.default_rng(23)
    g = residual_conv(rng, shape, kernel, 1.5, other_fq=True)
    program = lower_graph_to_loops(g, LoweringOptions(target=target, threads=1))
    assert sum("rt2" in repr(s.kernel) for s in program.steps) == 1
    other_shape = (shape[0], 24, *shape[2:])
    for seed in range(3):
        data = np.random.default_rng(seed)
        values = data.uniform(-1.5, 1.8, other_shape).astype(F32)
        if seed == 2:
            values.flat[:5] = [np.nan, np.inf, -np.inf, -0.9, 1.2]
        inputs = [data.integers(0, 256, shape).astype(np.uint8), values]
        expected = np.asarray(reference.run(g, inputs)[0])
        actual = run_program(program, inputs, compiler_for(target))[0]
        np.testing.assert_array_equal(actual, expected, err_msg=target.cpu)


def test_residual_tail_near_its_ties_takes_the_exact_chain(monkeypatch):
    """With the tail's limit at zero every lane is 'near a tie': the exact chain writes every
    vector, and the output is still the reference's."""
    import attrs

    from lowering.ops import lowp_requantize

    form = lowp_requantize._tail_form
    monkeypatch.setattr(lowp_requantize, "_tail_form",
                        lambda *a: attrs.evolve(form(*a), limit=0.0))
    rng = np.random.default_rng(17)
    shape = (1, 16, 5, 37)
    g = residual_conv(rng, shape, 1, 1.5)
    program = lower_graph_to_loops(g, LoweringOptions(target=HOST, threads=1))
    assert any("rt2" in repr(s.kernel) for s in program.steps)
    inputs = [rng.integers(0, 256, shape).astype(np.uint8),
              rng.integers(0, 256, (1, 24, 5, 37)).astype(np.uint8)]
    actual = run_program(program, inputs, compiler_for(HOST))[0]
    np.testing.assert_array_equal(actual, np.asarray(reference.run(g, inputs)[0]))


def test_residual_tail_form_matches_the_reference_on_every_pair():
    """The planned form, evaluated as the kernel does (one rounding per FMA), gives the
    reference's level for every pair (q, r) of trusted FakeQuantize levels and u8 levels
    with |t2 - rint(t2)| below its limit; and it is taken for most pairs."""
    from lowering.ops.lowp_requantize import Dequantized, _tail_form

    rng = np.random.default_rng(19)
    g = residual_conv(rng, (1, 16, 5, 37), 1, 1.4999)
    out = g.results[0].inputs[0].node
    relu = out.inputs[0].node
    total = relu.inputs[0].node
    other = total.inputs[1].node
    output = Dequantized.of(256, np.full(24, -1.0, F32), np.full(24, 1.4999, F32))
    for fused in (False, True):
        form = _tail_form([total, relu, out], [0, 0, 0], output, fused)
        assert form is not None and form.levels is other.inputs[0]
        q = np.arange(1, 255, dtype=F32)[:, None] * np.ones((1, 256), F32)
        r = np.arange(256, dtype=F32)[None, :] * np.ones((254, 1), F32)
        fq_value = (q / F32(255) * (F32(1.4999) - F32(-1.0)) + F32(-1.0)).astype(F32)
        dequantized = reference.lowp.dequantize(r.astype(np.uint8), F32(-0.7), F32(1.3), 256)
        expected = reference.lowp.level_index(np.maximum(fq_value + dequantized, F32(0)),
                                              F32(0.0), F32(2.5), 256)
        a, b, c = (np.full(q.shape, v, F32) for v in (form.a, form.b, form.c))
        t2 = fma_f32(q, a, fma_f32(r, b, c)) if fused else (q * a + (r * b + c)).astype(F32)
        sure = np.abs(t2 - np.rint(t2)) < form.limit
        fast = np.clip(np.rint(t2), 0, 255)
        np.testing.assert_array_equal(fast[sure], expected[sure])
        assert sure.mean() > 0.9
