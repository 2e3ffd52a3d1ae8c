"""Low-precision IRs made by NNCF 3.4 from the float builders (``tests/models/builders.py``).

``quantize`` runs post-training INT8 quantization (``nncf.quantize``) with a calibration set of
seeded random inputs; ``compress_weights`` runs weight-only compression
(``nncf.compress_weights``).  Both return a new ``ov.Model``; save it with ``oracle.save``.

Patterns observed in the saved XML (OpenVINO 2026.4.1, NNCF 3.4.0, test-size models; see also
facts sheet section 3):

``quantize`` with the defaults (preset PERFORMANCE, overflow fix FIRST_LAYER)
    * Activation FQs (``<producer>/fq_output_0``, levels 256, ``il == ol``, ``ih == oh``) on the
      Parameter, on ReLU/Clamp outputs before MaxPool or a conv, on the ReduceMean/AvgPool
      output feeding the head, and on **both inputs of residual Adds** (ResNet: the conv2 and
      shortcut bias Adds; MobileNetV2: the block output and the residual Add output).  None
      on bias Adds feeding only a ReLU, on SoftMax, or on the model output.
    * Ranges: ``[0, max]`` after ReLU/Clamp; signed tensors symmetric for i8
      (``-il / ih = 128 / 127``).  Per-tensor scalars, except the FQ feeding a depthwise
      GroupConvolution: per-channel ``[1,C,1,1]``.
    * Weights ``Const(i8) -> Convert(f32) -> Multiply(f32 scale)``, no Subtract; scales
      ``[OC,1,1,1]`` (Convolution), ``[G,1,1,1,1]`` (GroupConvolution ``[G,1,1,3,3]``),
      ``[N,1]`` (MatMul).  i8 in [-127, 127]; the first conv in [-63, 63] (overflow fix).
      Biases stay f32 Adds.
    * ``compress_weights=False`` keeps ``Const(f32) -> FakeQuantize`` (``*/fq_weights_1``,
      levels 255, per-OC ranges, ``il == ol``).  With the overflow fix the first conv's range
      is ``+-2 max|w|``, which puts that channel's largest weight exactly on the rounding
      midpoint 190.5 (or 63.5): OpenVINO and a half-to-even FQ may round it differently.
    * ``preset=MIXED`` makes signed activation ranges asymmetric (e.g. ``[-6.24, 7.24]``;
      some per-channel depthwise FQs get ``il = -8e-4``); ``overflow_fix=DISABLE`` gives the
      first conv [-127, 127].

``quantize(model_type=TRANSFORMER)`` on ``bert_like``
    * SmoothQuant Multiply (``*_0_0/nncf_smooth_quant``) before the FQs feeding Linear
      MatMuls; one FQ feeds all of q/k/v.  Ranges signed, e.g. ``[-0.984, 0.992]``.
    * Q K^T has both inputs quantized (FQs on the q and k bias Adds); **attn V is left in
      float** (no FQ on SoftMax or v here).  MVN, Gelu, SoftMax and residual Adds stay float.
    * Weights i8 [-127, 127], ``[N,1]`` f32 scales, no zero point.

``compress_weights`` (MatMul weights ``[N, K]``, transpose_b; no ``decompression`` rt_info)
    * INT8_ASYM: ``Const(u8,[N,K]) -> Convert(f16)``, zero point ``Const(u8,[N,1]) ->
      Convert(f16)``, Subtract, Multiply(``Const(f16,[N,1])``), ``Convert(f32)``.
    * INT8_SYM: ``Const(i8) -> Convert(f16) -> Multiply(f16 [N,1]) -> Convert(f32)``, full
      range [-128, 127].  Every MatMul, the last one included.
    * INT4_SYM / INT4_ASYM with ``group_size=g``: ``Const(i4|u4,[N,K/g,g]) -> Convert(f16)
      [-> Subtract(Const(u4,[N,K/g,1]) -> Convert(f16))] -> Multiply(f16 [N,K/g,1]) ->
      Reshape([N,K]) -> Convert(f32)``.  The last MatMul stays in the backup mode INT8_ASYM
      (u8 + u8 zero point) unless ``all_layers=True``.
"""

from __future__ import annotations

from typing import Any

import nncf
import numpy as np
import openvino as ov
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix


def calibration_inputs(model: ov.Model, samples: int = 5, seed: int = 0,
                       low: float = -2.0, high: float = 2.0) -> list[list[np.ndarray]]:
    """``samples`` seeded uniform random input lists for every Parameter of ``model``."""
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(samples):
        data.append([rng.uniform(low, high, tuple(p.get_partial_shape().to_shape()))
                     .astype(np.float32) for p in model.get_parameters()])
    return data


def quantize(model: ov.Model, samples: int = 5, seed: int = 0, *,
             overflow_fix: OverflowFix | None = None, compress_weights: bool = True,
             **kwargs: Any) -> ov.Model:
    """INT8 post-training quantization of ``model`` calibrated on random inputs.

    ``overflow_fix`` and ``compress_weights`` go to NNCF's advanced parameters (``None`` keeps
    NNCF's default FIRST_LAYER); every other keyword (``preset``, ``model_type``,
    ``fast_bias_correction``, ``ignored_scope`` ...) goes to ``nncf.quantize`` unchanged.
    """
    dataset = nncf.Dataset(calibration_inputs(model, samples, seed))
    advanced = AdvancedQuantizationParameters(
        overflow_fix=overflow_fix, backend_params={"compress_weights": compress_weights})
    return nncf.quantize(model, dataset, subset_size=samples, advanced_parameters=advanced,
                         **kwargs)


def compress_weights(model: ov.Model, mode: nncf.CompressWeightsMode, *,
                     group_size: int | None = None, all_layers: bool | None = None,
                     **kwargs: Any) -> ov.Model:
    """Weight-only compression of ``model`` (data-free): ``nncf.compress_weights`` with ``mode``.

    ``group_size`` applies to the 4-bit modes (NNCF default 128); the int8 modes are per
    output channel.  ``ratio`` defaults to 1 here so every eligible layer gets ``mode``.
    """
    options: dict[str, Any] = {"mode": mode, **kwargs}
    if mode in (nncf.CompressWeightsMode.INT4_SYM, nncf.CompressWeightsMode.INT4_ASYM):
        options.setdefault("ratio", 1.0)
        if group_size is not None:
            options["group_size"] = group_size
    if all_layers is not None:
        options["all_layers"] = all_layers
    return nncf.compress_weights(model, **options)
