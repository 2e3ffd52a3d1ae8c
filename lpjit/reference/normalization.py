"""Reference semantics of MVN-2/-6, NormalizeL2-1 and BatchNormInference-1/-5.

Elementwise steps run in float32; means and sums of squares accumulate in float64 and are
rounded once to float32, which agrees with OpenVINO's CPU plugin to about 1e-6 relative.
"""

from __future__ import annotations

import numpy as np

from lpjit.ops import normalization as norm
from lpjit.reference import evaluator
from lpjit.reference.activations import compute_type

Axes = tuple[int, ...]


def _mean32(x: np.ndarray, axes: Axes) -> np.ndarray:
    """Mean over ``axes`` (kept as size 1), accumulated in float64, rounded to ``x``'s type."""
    return np.mean(x, axis=axes, dtype=np.float64, keepdims=True).astype(x.dtype)


def mvn(x: np.ndarray, axes: Axes, normalize_variance: bool, eps: float,
        eps_mode: str) -> np.ndarray:
    """Mean-variance normalization over ``axes``, as OpenVINO's ``mvn_6``.

    1. ``d = x - mean(x)``.
    2. ``var = mean(d * d)`` (the biased variance).
    3. ``inside_sqrt``: ``d / sqrt(var + eps)``; ``outside_sqrt``: ``d / (sqrt(var) + eps)``.
    """
    d = x - _mean32(x, axes)
    if not normalize_variance:
        return d
    var = _mean32(d * d, axes)
    eps32 = np.asarray(eps, x.dtype)
    denominator = np.sqrt(var + eps32) if eps_mode == "inside_sqrt" else np.sqrt(var) + eps32
    return d / denominator


@evaluator(norm.MVNV2)
def _mvn_v2(node: norm.MVNV2, x: np.ndarray) -> np.ndarray:
    """MVN-2 puts eps inside the square root (OpenVINO's reference and CPU plugin agree)."""
    return mvn(compute_type(x), node.axes, node.normalize_variance, node.eps, "inside_sqrt")


@evaluator(norm.MVNV6)
def _mvn_v6(node: norm.MVNV6, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return mvn(compute_type(x), node.axes, node.normalize_variance, node.eps, node.eps_mode)


def normalize_l2(x: np.ndarray, axes: Axes, eps: float, eps_mode: str) -> np.ndarray:
    """``x / sqrt(sum(x^2) + eps)`` (``add``) or ``x / sqrt(max(sum(x^2), eps))`` (``max``).

    Empty ``axes`` divide each element by itself: ``x == 0 ? 0 : 1``.
    """
    if not axes:
        return np.where(x == 0, 0, 1).astype(x.dtype)
    x64 = x.astype(np.float64)
    total = np.sum(x64 * x64, axis=axes, keepdims=True).astype(x.dtype)
    eps32 = np.asarray(eps, x.dtype)
    guarded = total + eps32 if eps_mode == "add" else np.maximum(total, eps32)
    return x / np.sqrt(guarded)


@evaluator(norm.NormalizeL2)
def _normalize_l2(node: norm.NormalizeL2, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return normalize_l2(compute_type(x), node.axes, node.eps, node.eps_mode)


def batch_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
               variance: np.ndarray, epsilon: float) -> np.ndarray:
    """``(x - mean) / sqrt(variance + epsilon) * gamma + beta``, channels on axis 1."""
    channel = (1, -1) + (1,) * (x.ndim - 2)
    gamma, beta, mean, variance = (compute_type(v).reshape(channel)
                                   for v in (gamma, beta, mean, variance))
    normalized = (x - mean) / np.sqrt(variance + np.asarray(epsilon, x.dtype))
    return normalized * gamma + beta


@evaluator(norm.BatchNormInferenceV1, norm.BatchNormInferenceV5)
def _batch_norm(node: norm.BatchNormInference, *inputs: np.ndarray) -> np.ndarray:
    gamma, beta, data, mean, variance = (
        inputs[node.port(name)] for name in ("gamma", "beta", "data", "mean", "variance"))
    with np.errstate(divide="ignore", invalid="ignore"):
        return batch_norm(compute_type(data), gamma, beta, mean, variance, node.epsilon)
