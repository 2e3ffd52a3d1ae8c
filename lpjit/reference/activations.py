"""Reference semantics of the activations and SoftMax/LogSoftmax.

Float inputs are computed in float32 (f16/bf16 are widened first, as OpenVINO's CPU plugin
does) and rounded to the output type by the executor.  Gelu and Erf are computed in float64
and rounded once, as OpenVINO's reference does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lpjit.ops import activations as act
from lpjit.reference import evaluator

_ERF = np.frompyfunc(math.erf, 1, 1)


def compute_type(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 when it is a narrower float (f16), else unchanged."""
    if x.dtype.kind == "f" and x.dtype.itemsize < 4:
        return x.astype(np.float32)
    return x


def erf(x: np.ndarray) -> np.ndarray:
    """The error function in float64 (``math.erf`` per element; numpy has none)."""
    return np.asarray(_ERF(np.asarray(x, np.float64)), dtype=np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in ``x``'s float type (0 and 1 at the extremes, no warnings)."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` without overflow (``logaddexp(0, x)``)."""
    return np.logaddexp(np.zeros((), x.dtype), x)


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """``0.5 * x * (1 + erf(x / sqrt(2)))`` in float64."""
    x64 = np.asarray(x, np.float64)
    return 0.5 * x64 * (1 + erf(x64 / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`` in float64."""
    x64 = np.asarray(x, np.float64)
    return 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))


def hsigmoid(x: np.ndarray) -> np.ndarray:
    """``min(max(x + 3, 0), 6) / 6``."""
    return np.minimum(np.maximum(x + 3, 0), 6) / 6


_UNARY: dict[type, Callable[[np.ndarray], np.ndarray]] = {
    act.Relu: lambda x: np.maximum(x, np.zeros((), x.dtype)),
    act.Sigmoid: sigmoid,
    act.Tanh: np.tanh,
    act.Exp: np.exp,
    act.Log: np.log,
    act.Erf: erf,
    act.Sqrt: np.sqrt,
    act.Abs: np.abs,
    act.Negative: np.negative,
    act.Floor: lambda x: np.floor(x) if x.dtype.kind == "f" else x,
    act.Ceiling: lambda x: np.ceil(x) if x.dtype.kind == "f" else x,
    act.HSwish: lambda x: x * hsigmoid(x),
    act.HSigmoid: hsigmoid,
    act.Mish: lambda x: x * np.tanh(softplus(x)),
    act.SoftPlus: softplus,
    act.GeluV2: gelu_erf,
}


@evaluator(*_UNARY)
def _unary(node: act.UnaryActivation, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return _UNARY[type(node)](compute_type(x))


@evaluator(act.GeluV7)
def _gelu_v7(node: act.GeluV7, x: np.ndarray) -> np.ndarray:
    return gelu_tanh(x) if node.approximation_mode == "tanh" else gelu_erf(x)


@evaluator(act.Clamp)
def _clamp(node: act.Clamp, x: np.ndarray) -> np.ndarray:
    """Bounds rounded to the element type: float32, or ``ceil(min)``/``floor(max)`` for ints."""
    x = compute_type(x)
    if x.dtype.kind == "f":
        low, high = np.asarray(node.min, x.dtype), np.asarray(node.max, x.dtype)
    else:
        info = np.iinfo(x.dtype)
        low = np.asarray(np.clip(math.ceil(node.min), info.min, info.max), x.dtype)
        high = np.asarray(np.clip(math.floor(node.max), info.min, info.max), x.dtype)
    return np.minimum(np.maximum(x, low), high)


@evaluator(act.PRelu)
def _prelu(node: act.PRelu, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    slope = compute_type(slope).reshape(node.slope_shape())
    x = compute_type(x)
    return np.where(x < 0, x * slope, x)


@evaluator(act.Swish)
def _swish(node: act.Swish, x: np.ndarray, beta: np.ndarray | None = None) -> np.ndarray:
    x = compute_type(x)
    b = compute_type(beta) if beta is not None else np.ones((), x.dtype)
    return x * sigmoid(b * x)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis`` (sum accumulated in float64)."""
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    total = shifted.sum(axis=axis, keepdims=True, dtype=np.float64).astype(x.dtype)
    return shifted / total


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """``x - max - log(sum(exp(x - max)))`` along ``axis``."""
    shifted = x - x.max(axis=axis, keepdims=True)
    total = np.exp(shifted).sum(axis=axis, keepdims=True, dtype=np.float64)
    return shifted - np.log(total).astype(x.dtype)


@evaluator(act.SoftmaxV1, act.SoftmaxV8)
def _softmax(node: act.AxisActivation, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return softmax(compute_type(x), node.normalized_axis)


@evaluator(act.LogSoftmax)
def _log_softmax(node: act.LogSoftmax, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return log_softmax(compute_type(x), node.normalized_axis)
