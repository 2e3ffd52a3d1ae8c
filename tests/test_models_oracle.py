"""Float real-model IRs: lpjit's reference agrees with the OpenVINO CPU plugin to 1e-4.

Every builder in ``tests/models/builders.py`` (small sizes) is saved three ways:

* ``f32``:  ``save_model(compress_to_fp16=False)``: plain f32 Const weights;
* ``f16``:  ``save_model(compress_to_fp16=True)``: ``Const(f16) -> Convert(f32)`` weights
  (facts 1.10); both sides decompress f16 -> f32 exactly, so the tolerance is the same;
* ``v10``:  IR v10 (``Serialize`` with ``Version.IR_V10``), for the CNN and the encoder.

The tolerance, relative L2 < 1e-4, covers f32 summation-order differences (blocked GEMM and
convolution kernels, vectorised exp/erf in SoftMax and Gelu) on O(1) activations.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from models import builders

import lpjit
from lpjit import dtypes
from lpjit.graph import Constant

pytestmark = pytest.mark.oracle

FLOAT_TOLERANCE = 1e-4

MODELS: dict[str, Callable[[], ov.Model]] = {
    "resnet": lambda: builders.resnet_like(channels=(16, 32), image=32),
    "mobilenet_v2": lambda: builders.mobilenet_v2_like(channels=(16, 24, 32), image=32),
    "bert": lambda: builders.bert_like(layers=2, hidden=64, heads=4, seq=16),
    "mlp": lambda: builders.mlp((64, 128, 128, 10)),
}

# (model, variant): every model as f32 and f16 IR v11, the CNN and the encoder also as IR v10.
CASES = [(m, v) for m in MODELS for v in ("f32", "f16")] + [("resnet", "v10"), ("bert", "v10")]


@pytest.fixture(scope="session")
def float_models() -> dict[str, ov.Model]:
    """Each float model built once per session."""
    return {name: build() for name, build in MODELS.items()}


def _save(model: ov.Model, directory: Path, variant: str) -> Path:
    if variant == "v10":
        return oracle.save(model, directory, version=10)
    return oracle.save(model, directory, compress_to_fp16=variant == "f16")


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{m}-{v}" for m, v in CASES])
def test_float_ir_matches_openvino(name: str, variant: str, float_models: dict[str, ov.Model],
                                   tmp_path: Path) -> None:
    """reference.run on the saved IR is within relative L2 1e-4 of OpenVINO (f32 config)."""
    model = float_models[name]
    xml = _save(model, tmp_path, variant)
    inputs = oracle.random_inputs(model, seed=7)
    expected = oracle.ov_run(xml, inputs, oracle.F32_CONFIG)
    actual = oracle.lpjit_reference(xml, inputs)
    assert len(actual) == len(expected) == 1
    assert actual[0].shape == expected[0].shape
    error = oracle.relative_l2(actual[0], expected[0])
    assert error < FLOAT_TOLERANCE, f"{name} ({variant}): relative L2 {error:.3g}"


@pytest.mark.parametrize("variant", ["f32", "f16"])
def test_weight_storage_follows_compress_to_fp16(variant: str,
                                                 float_models: dict[str, ov.Model],
                                                 tmp_path: Path) -> None:
    """compress_to_fp16 stores float weights as f16 Consts; lpjit reads them as f16 tensors."""
    xml = _save(float_models["resnet"], tmp_path, variant)
    graph = lpjit.read_ir(xml)
    float_consts = [n for n in graph.nodes
                    if isinstance(n, Constant) and n.element_type.is_float and n.data.size > 1]
    kinds = {n.element_type for n in float_consts}
    assert kinds == ({dtypes.f16} if variant == "f16" else {dtypes.f32})
    weights = max(float_consts, key=lambda n: n.data.size)
    assert np.std(weights.data.astype(np.float32)) > 0.01, "weights should be random, not zeros"


EXAMPLES = Path(lpjit.__file__).parent / "examples"


@pytest.mark.parametrize(("name", "config"), [
    ("resnet_tiny_fp32", oracle.F32_CONFIG), ("resnet_tiny_int8", oracle.FQ_AS_IS_CONFIG)])
def test_bundled_example_matches_openvino(name: str, config: dict) -> None:
    """The demo IRs (tools/make_example.py) run in lpjit's reference as in OpenVINO."""
    xml = EXAMPLES / f"{name}.xml"
    assert xml.with_suffix(".bin").stat().st_size < 200_000
    inputs = oracle.random_inputs(ov.Core().read_model(str(xml)), seed=2)
    expected = oracle.ov_run(xml, inputs, config)
    actual = oracle.lpjit_reference(xml, inputs)
    assert oracle.relative_l2(actual[0], expected[0]) < FLOAT_TOLERANCE
    np.testing.assert_allclose(actual[0].sum(), 1.0, rtol=1e-5)  # SoftMax head
