"""``lpjit.compare``: the observed graph, per-layer errors from perturbed outputs, and the
first layer whose error grows (no compile: the compiled outputs are made up here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lowp_graphs import add, f32, fake_quantize, graph, parameter, relu

from lpjit import reference
from lpjit.compare import OBSERVE_PREFIX, compare_outputs, observed_graph


def chain():
    """x -> fq_a -> relu -> fq_b -> (+ fq_a) -> fq_c -> output; fq_w on a constant."""
    x = parameter((2, 16))
    a = fake_quantize(x.output, -2.0, 2.0, name="fq_a")                  # step 4/255
    b = fake_quantize(relu(a), 0.0, 2.0, name="fq_b")                    # step 2/255
    weight = fake_quantize(f32(np.linspace(-1, 1, 16)), -1.0, 1.0, name="fq_w")
    c = fake_quantize(add(add(b, a), weight), -4.0, 4.0, levels=17, name="fq_c")  # step 0.5
    return graph([x], c)


def test_observed_graph_adds_a_result_per_activation_fake_quantize():
    g = chain()
    variant, observations = observed_graph(g)
    assert [o.origin.name for o in observations] == ["fq_a", "fq_b", "fq_c", "fq_c"]
    assert [o.kind for o in observations] == ["FakeQuantize"] * 3 + ["output"]
    assert variant.results[:1] == g.results and len(variant.results) == 4
    assert [r.names[0] for r in variant.results[1:]] == [
        OBSERVE_PREFIX + name for name in ("fq_a", "fq_b", "fq_c")]


def test_errors_and_first_growth_from_perturbed_outputs():
    g = chain()
    variant, observations = observed_graph(g)
    x = np.random.default_rng(5).uniform(-2, 2, (2, 16)).astype(np.float32)
    values = reference.run_all(g, [x])
    exact = dict(zip([r.names[0] for r in variant.results], reference.run(variant, [x])))
    actual = dict(exact)
    b_name, c_name = OBSERVE_PREFIX + "fq_b", OBSERVE_PREFIX + "fq_c"
    actual[b_name] = exact[b_name].copy()
    actual[b_name][0, :4] += np.float32(2 * 2 / 255)                    # 4 of 32 off by 2 steps
    actual[c_name] = exact[c_name].copy()
    actual[c_name][1, 0] -= np.float32(0.5)                             # 1 of 32 off by 1 step
    comparison = compare_outputs(g, values, observations, actual, True, 0)
    rows = {(e.layer, e.kind): e for e in comparison.layers}
    a, b, c = rows["fq_a", "FakeQuantize"], rows["fq_b", "FakeQuantize"], \
        rows["fq_c", "FakeQuantize"]
    assert (a.max_abs_error, a.max_error_steps, a.off_by_step, a.sqnr_db) == (0, 0, 0, math.inf)
    assert b.max_error_steps == pytest.approx(2.0, rel=1e-5) and b.off_by_step == 4 / 32
    reference_b = next(values[n.output] for n in g.nodes if n.origin.name == "fq_b")
    noise = 4 * (4 / 255) ** 2
    assert b.sqnr_db == pytest.approx(10 * math.log10(np.sum(
        reference_b.astype(np.float64) ** 2) / noise), rel=1e-4)
    assert c.levels == 17 and c.max_error_steps == pytest.approx(1.0) and c.off_by_step == 1 / 32
    assert comparison.first_growth == "fq_b"          # fq_c's 1 step is below fq_b's 2
    assert [e.layer for e in comparison.layers if e.grows] == ["fq_b"]
    output = rows["fq_c", "output"]
    assert output.max_error_steps is None and output.max_abs_error == 0  # the model's own output


def test_no_growth_when_errors_stay_below_a_step():
    g = chain()
    variant, observations = observed_graph(g)
    x = np.random.default_rng(6).uniform(-2, 2, (2, 16)).astype(np.float32)
    values = reference.run_all(g, [x])
    actual = dict(zip([r.names[0] for r in variant.results], reference.run(variant, [x])))
    name = OBSERVE_PREFIX + "fq_c"
    actual[name] = actual[name] + np.float32(0.1)                       # 0.2 steps everywhere
    comparison = compare_outputs(g, values, observations, actual, False, 0)
    assert comparison.first_growth is None and comparison.mode == "float"
    fq_c = next(e for e in comparison.layers if e.layer == "fq_c")
    assert fq_c.max_error_steps == pytest.approx(0.2, rel=1e-5) and fq_c.off_by_step == 0
