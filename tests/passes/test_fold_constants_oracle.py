"""fold_constants' f32 decompression rule matches the OpenVINO CPU plugin on saved IRs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import oracle
import pytest

import lpjit
from lpjit import reference
from lpjit.passes import fold_constants

pytestmark = pytest.mark.oracle


def decompressed_weights(rng: np.random.Generator, rows: int, cols: int) -> ov.Output:
    """NNCF INT8_ASYM weights: u8 -> f16, minus a u8 zero point, times an f16 scale, -> f32."""
    q = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    zp = rng.integers(100, 156, (rows, 1), dtype=np.uint8)
    scale = rng.uniform(0.001, 0.05, (rows, 1)).astype(np.float16)
    centred = ops.subtract(ops.convert(ops.constant(q), "f16"),
                           ops.convert(ops.constant(zp), "f16"))
    return ops.convert(ops.multiply(centred, ops.constant(scale)), "f32").output(0)


@pytest.mark.parametrize("consumer", ["add", "matmul"])
def test_folded_decompression_matches_openvino(consumer: str, tmp_path: Path) -> None:
    """Folded in f32 the weights equal OpenVINO's (exactly for Add; MatMul differs only by
    summation order), while literal f16 folding is off by f16 rounding."""
    rng = np.random.default_rng(11)
    weights = decompressed_weights(rng, 16, 64)
    x = ops.parameter([16, 64] if consumer == "add" else [4, 64], np.float32, name="x")
    y = ops.add(x, weights) if consumer == "add" else ops.matmul(x, weights, False, True)
    model = ov.Model([ops.result(y)], [x], consumer)
    xml = oracle.save(model, tmp_path)
    inputs = oracle.random_inputs(model, seed=3)
    expected = oracle.ov_run(xml, inputs)[0]
    graph = lpjit.read_ir(xml)
    folded = reference.run(fold_constants(graph), inputs)[0]
    literal = reference.run(graph, inputs)[0]
    tolerance = 0.0 if consumer == "add" else 2e-5
    assert np.abs(folded - expected).max() <= tolerance
    assert np.abs(literal - expected).max() > 1e-3
