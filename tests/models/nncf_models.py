"""Low-precision IRs made by NNCF 3.4 from the float builders (``tests/models/builders.py``).

``quantize`` runs post-training INT8 quantization (``nncf.quantize``) with a calibration set of
seeded random inputs; ``compress_weights`` runs weight-only compression
(``nncf.compress_weights``).  Both return a new ``ov.Model``; save it with ``oracle.save``.

Patterns observed in the saved XML (OpenVINO 2026.4.1, NNCF 3.4.0; see also facts sheet §3):

``quantize`` (defaults: preset PERFORMANCE, overflow fix FIRST_LAYER)
    * FakeQuantize (levels 256, ``il == ol``, ``ih == oh``) on the inputs of weighted ops only:
      the Parameter, ReLU/Clamp outputs, MaxPool/ReduceMean/AvgPool outputs feeding convs or
      the head, residual branches feeding the next conv.  None on bias Adds or the output.
    * Activation FQs are per-tensor scalars, except those feeding a depthwise GroupConvolution,
      which are per-channel ``[1,C,1,1]``.
    * Weights ``Const(i8) -> Convert(f32) -> Multiply(f32 scale [OC,1,1,1])`` (GroupConvolution
      ``[G,1,1,1,1]``, MatMul ``[N,1]``), no Subtract; i8 in [-127, 127], the first conv
      [-63, 63] (overflow fix).  Biases stay f32 Adds.
    * ``compress_weights=False`` (``backend_params``) keeps ``Const(f32) -> FakeQuantize(levels
      255, per-OC ranges)`` on the weights instead.
    * ``preset=MIXED`` makes activation FQs on signed tensors asymmetric; ``overflow_fix=
      DISABLE`` gives the first conv the full [-127, 127].

``quantize(model_type=TRANSFORMER)`` on ``bert_like``
    * SmoothQuant Multiply (``*/nncf_smooth_quant``) before the FQs feeding Linear MatMuls.
    * Signed asymmetric activation FQs; both inputs of Q K^T and attn V quantized (the Softmax
      output with an unsigned range).  MVN, Gelu, SoftMax and residual Adds stay float.

``compress_weights`` (MatMul weights ``[N, K]``, transpose_b)
    * INT8_ASYM: ``Const(u8,[N,K]) -> Convert(f16)``, zero point ``Const(u8,[N,1]) ->
      Convert(f16)``, Subtract, Multiply(``Const(f16,[N,1])``), ``Convert(f32)``.
    * INT8_SYM: ``Const(i8) -> Convert(f16) -> Multiply(f16 [N,1]) -> Convert(f32)``.
    * INT4_SYM / INT4_ASYM with ``group_size=g``: ``Const(i4|u4,[N,K/g,g]) -> Convert(f16)
      [-> Subtract(Const(u4,[N,K/g,1]) -> Convert(f16))] -> Multiply(f16 [N,K/g,1]) ->
      Reshape([N,K]) -> Convert(f32)``.
    * The last MatMul (and embeddings) stay in the backup mode INT8_ASYM unless
      ``all_layers=True``.
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
