"""Vectorizable math functions composed from loop-IR float operations (no library calls).

LLVM scalarizes ``llvm.exp`` on vectors into one libm call per lane; these compositions use only
adds, multiplies, compares, selects and ``floor``/``round_half_even`` (single instructions), so a
vectorized loop stays vectorized.
"""

from __future__ import annotations

import numpy as np

from lowering import builder as lb
from lowering.loop_ir import Expr, as_expr

_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375           # exact in 9 bits: n * _LN2_HI is exact for |n| <= 2^15
_LN2_LO = -2.12194440e-4
# Cephes expf: exp(r) ~ 1 + r + r^2 * P(r) on |r| <= ln2 / 2, within about an ulp.
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)
_MIN_EXPONENT = -126            # 2^n stays a normal float32 for n >= -126
_LOWEST = float(np.float32(-87.33654))      # exp below it is under 2^-126: flushed to 0


def _c(value: float, like: Expr) -> Expr:
    """``value`` rounded to ``like``'s float type, broadcast to its lanes."""
    return as_expr(float(np.float32(value)), like.type)


def _pow2_nonpositive(n: Expr) -> Expr:
    """``2^n`` for an integral float ``n`` in ``[-126, 0]``: ``2^-126`` times the powers
    ``2^(2^k)`` of the set bits of ``n + 126``, each bit read with two exact ``floor``s."""
    m = n + _c(-_MIN_EXPONENT, n)
    halves = [lb.call("floor", m * _c(2.0 ** -k, m)) for k in range(8)]
    scale: Expr = _c(2.0 ** _MIN_EXPONENT, n)
    for k in reversed(range(7)):
        bit = halves[k] - halves[k + 1] * _c(2.0, m)
        scale = scale * lb.select(lb.gt(bit, _c(0.5, m)), _c(2.0 ** (2 ** k), m), _c(1.0, m))
    return scale


def exp_nonpositive(x: Expr) -> Expr:
    """``exp(x)`` for float32 ``x <= 0`` (SoftMax's ``x - max``) within a few ulp, as
    vectorizable float operations: ``n = round(x / ln2)``, ``r = x - n ln2`` (Cody-Waite, two
    parts), ``exp(r)`` by the Cephes polynomial, times ``2^n`` built from ``n``'s bits.
    Results below ``2^-126`` flush to 0; ``x > 0`` is treated as 0 (exp 1); NaN stays NaN."""
    clamped = lb.min_(lb.max_(x, _c(_LOWEST, x)), _c(0.0, x))
    n = lb.call("round_half_even", clamped * _c(_LOG2E, x))
    r = (clamped - n * _c(_LN2_HI, x)) - n * _c(_LN2_LO, x)
    poly: Expr = _c(_EXP_POLY[0], x)
    for coefficient in _EXP_POLY[1:]:
        poly = poly * r + _c(coefficient, x)
    value = (poly * (r * r) + r + _c(1.0, x)) * _pow2_nonpositive(n)
    value = lb.select(lb.lt(x, _c(_LOWEST, x)), _c(0.0, x), value)
    return lb.select(lb.eq(x, x), value, x)

