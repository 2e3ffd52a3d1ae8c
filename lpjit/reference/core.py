"""Reference semantics of Const, Convert and the binary elementwise ops."""

from __future__ import annotations

import numpy as np

from lpjit.graph import Constant
from lpjit.ops import core, elementwise as ew
from lpjit.reference import evaluator


@evaluator(Constant)
def _constant(node: Constant) -> np.ndarray:
    return node.data


@evaluator(core.Convert)
def _convert(node: core.Convert, x: np.ndarray) -> np.ndarray:
    """float -> int: truncate toward zero, then wrap modulo 2^N (OpenVINO's behaviour)."""
    target = node.destination_type
    if target.kind == "b":
        return x != 0
    if target.is_float:
        return x.astype(target.numpy)
    if x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            wide = np.nan_to_num(np.trunc(x.astype(np.float64)), nan=0.0)
            wide = np.clip(wide, -2.0**63, 2.0**63 - 1).astype(np.int64)
        return _wrap(wide, target.bits, target.is_signed)
    return _wrap(x.astype(np.int64), target.bits, target.is_signed)


def _wrap(x: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Keep the low ``bits`` bits (two's complement for signed types)."""
    if bits >= 64:
        return x
    mask = (1 << bits) - 1
    y = x & mask
    if signed:
        y = np.where(y >= (1 << (bits - 1)), y - (1 << bits), y)
    return y


def _floor_divide(node: ew.Divide, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        if node.python_division:
            return np.floor_divide(a, b)
        return np.trunc(np.true_divide(a, b)).astype(a.dtype)
    return np.true_divide(a, b)


_BINARY = {
    ew.Add: np.add, ew.Subtract: np.subtract, ew.Multiply: np.multiply,
    ew.Maximum: np.maximum, ew.Minimum: np.minimum,
    ew.Power: np.power, ew.SquaredDifference: lambda a, b: np.square(a - b),
    ew.Equal: np.equal, ew.NotEqual: np.not_equal, ew.Greater: np.greater,
    ew.GreaterEqual: np.greater_equal, ew.Less: np.less, ew.LessEqual: np.less_equal,
    ew.LogicalAnd: np.logical_and, ew.LogicalOr: np.logical_or,
}


@evaluator(*_BINARY)
def _binary(node: ew.BinaryElementwise, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return _BINARY[type(node)](a, b)


@evaluator(ew.Divide)
def _divide(node: ew.Divide, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return _floor_divide(node, a, b)


@evaluator(ew.Select)
def _select(node: ew.Select, cond: np.ndarray, then: np.ndarray, other: np.ndarray) -> np.ndarray:
    return np.where(cond, then, other)
