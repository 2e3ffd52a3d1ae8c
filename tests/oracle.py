"""The OpenVINO oracle: save models with OpenVINO, run them on its CPU plugin, compare.

Tests import this module only through the ``ov`` fixtures in ``conftest.py`` (or directly after
``pytest.importorskip`` is ruled out: under ``CI=true`` OpenVINO must be installed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov

import lpjit
from lpjit import reference

_CORE = ov.Core()

# OpenVINO executing every op in f32 (no bf16/f16 inference precision on any host), and no
# on-the-fly int8 quantization of the activations of MatMuls with compressed (i8/u8/i4/u4)
# weights, which the CPU plugin otherwise applies (about 1e-2 relative L2).
F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1,
              "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
# ... and with low-precision transformations off: FakeQuantize executed as-is in float.
FQ_AS_IS_CONFIG = {**F32_CONFIG, "LP_TRANSFORMS_MODE": False}


def save(model: ov.Model, directory: Path, name: str = "model", *,
         compress_to_fp16: bool = False, version: int = 11) -> Path:
    """Write ``model`` as IR v11 (``ov.save_model``) or v10 (``Serialize``); returns the .xml."""
    directory.mkdir(parents=True, exist_ok=True)
    xml = directory / f"{name}.xml"
    if version == 11:
        ov.save_model(model, xml, compress_to_fp16=compress_to_fp16)
    else:
        from openvino._offline_transformations import compress_model_transformation  # noqa: F401
        from openvino.passes import Manager, Serialize, Version
        manager = Manager()
        manager.register_pass(Serialize(str(xml), str(xml.with_suffix(".bin")), Version.IR_V10))
        manager.run_passes(model)
    return xml


def ov_run(xml: Path, inputs: Sequence[np.ndarray], config: dict | None = None
           ) -> list[np.ndarray]:
    """Outputs of the OpenVINO CPU plugin on the IR file ``xml``, in Result order."""
    model = _CORE.read_model(str(xml))
    compiled = _CORE.compile_model(model, "CPU", config or F32_CONFIG)
    results = compiled(list(inputs))
    return [np.array(results[out]) for out in compiled.outputs]


def lpjit_reference(xml: Path, inputs: Sequence[np.ndarray], **read_options
                    ) -> list[np.ndarray]:
    """Outputs of lpjit's reference executor on the same IR file."""
    graph = lpjit.read_ir(xml, **read_options)
    return reference.run(graph, list(inputs))


def random_inputs(model: ov.Model, seed: int = 0, low: float = -2.0, high: float = 2.0
                  ) -> list[np.ndarray]:
    """Fresh seeded random inputs for every Parameter of ``model`` (never zeros)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for p in model.get_parameters():
        shape = tuple(p.get_partial_shape().to_shape())
        dtype = p.get_element_type().to_dtype()
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.uniform(low, high, shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, shape).astype(bool))
        else:
            arrays.append(rng.integers(1, 8, shape).astype(dtype))
    return arrays


def relative_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    """||a - e|| / ||e|| in float64 (0 when both are zero)."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    denom = np.linalg.norm(e)
    diff = np.linalg.norm(a - e)
    return float(diff / denom) if denom > 0 else float(diff)


def compare_with_openvino(model: ov.Model, tmp_path: Path, *, rtol: float = 1e-4,
                          atol: float = 1e-5, seed: int = 0,
                          inputs: Sequence[np.ndarray] | None = None,
                          compress_to_fp16: bool = False, version: int = 11,
                          config: dict | None = None) -> list[np.ndarray]:
    """Save ``model``, run it with OpenVINO and with lpjit's reference; assert they agree.

    Returns lpjit's outputs.
    """
    xml = save(model, tmp_path, compress_to_fp16=compress_to_fp16, version=version)
    inputs = list(inputs) if inputs is not None else random_inputs(model, seed)
    expected = ov_run(xml, inputs, config)
    actual = lpjit_reference(xml, inputs)
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, f"output {i}: shape {a.shape} vs OpenVINO {e.shape}"
        if e.dtype.kind in "fc":
            np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64),
                                       rtol=rtol, atol=atol, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(a.astype(e.dtype), e, err_msg=f"output {i}")
    return actual
