"""Vectorizable math functions composed from loop-IR float operations (no library calls).

LLVM scalarizes ``llvm.exp`` and ``llvm.erf`` on vectors into one libm call per lane; these
compositions use only adds, multiplies, FMAs, compares, selects, ``round_half_even``,
float <-> i32 conversions and i32 shifts (single instructions on AVX2 and AVX-512), so a
vectorized loop stays vectorized, in float32 lanes.
"""

from __future__ import annotations

import math

import numpy as np

from lowering import builder as lb
from lowering.loop_ir import Cast, Expr, as_expr, i32

_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375           # exact in 9 bits: n * _LN2_HI is exact for |n| <= 2^15
_LN2_LO = -2.12194440e-4
# Cephes expf: exp(r) ~ 1 + r + r^2 * P(r) on |r| <= ln2 / 2, within about an ulp.
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)
_LOWEST = float(np.float32(-87.33654))      # exp below it is under 2^-126: flushed to 0


def _c(value: float, like: Expr) -> Expr:
    """``value`` rounded to ``like``'s float type, broadcast to its lanes."""
    return as_expr(float(np.float32(value)), like.type)


def _i32(value: int, like: Expr) -> Expr:
    """The i32 constant ``value`` with ``like``'s lanes."""
    return as_expr(value, i32.with_lanes(like.type.lanes))


def _horner(coefficients: tuple[float, ...], x: Expr) -> Expr:
    """``sum(c_k x^k)`` (``coefficients`` lowest first) by Horner's rule with FMAs."""
    acc = _c(coefficients[-1], x)
    for coefficient in coefficients[-2::-1]:
        acc = lb.fma(acc, x, _c(coefficient, x))
    return acc


def _times_pow2(y8: Expr, n: Expr) -> Expr:
    """``8 * y8 * 2^n`` for an integral float ``n`` in ``[-126, 0]``, exactly (before the
    final rounding of a result under ``2^-126``), from i32 shifts: ``m = -n = 4q + r``;
    ``(2^(31-q))^4 = 2^(124-4q)`` (``1 << 31`` wraps to ``-2^31``: the squares drop the sign)
    and ``2^(3-r) = 8 >> r`` are exact float32 powers of two."""
    m = Cast(_c(0.0, n) - n, i32, "trunc")
    high = Cast(lb.binary("shl", _i32(1, m), _i32(31, m) - (m >> _i32(2, m))), n.type.elem,
                "nearest")
    high = high * high
    low = Cast(lb.binary("shr", _i32(8, m), m & _i32(3, m)), n.type.elem, "nearest")
    return ((y8 * low) * (high * high)) * _c(2.0 ** -124, y8)


def _exp_reduced(a: Expr, a_low: Expr | None = None) -> Expr:
    """``exp(a + a_low)`` for ``a`` in ``[-87.33, 0]`` (the caller clamps; ``|a_low|`` below
    an ulp of ``a``): ``n = round(a / ln2)``, ``r = a - n ln2 + a_low`` (Cody-Waite, two
    parts), ``exp(r)`` by the Cephes polynomial with coefficients scaled by ``1/8`` (exactly),
    times ``8 * 2^n`` (``_times_pow2``).  Within 2 ulp."""
    n = lb.call("round_half_even", a * _c(_LOG2E, a))
    r = lb.fma(n, _c(-_LN2_LO, a), lb.fma(n, _c(-_LN2_HI, a), a))
    if a_low is not None:
        r = r + a_low
    poly = _horner(tuple(c / 8 for c in reversed(_EXP_POLY)), r)
    y8 = lb.fma(r * r, poly, r * _c(0.125, r)) + _c(0.125, r)
    return _times_pow2(y8, n)


def exp_nonpositive(x: Expr) -> Expr:
    """``exp(x)`` for float32 ``x <= 0`` (SoftMax's ``x - max``) within 2 ulp, as
    vectorizable float and i32 operations (``_exp_reduced``).  Results below ``2^-126``
    flush to 0; ``x > 0`` is treated as 0 (exp 1); NaN stays NaN."""
    clamped = lb.min_(lb.max_(x, _c(_LOWEST, x)), _c(0.0, x))
    value = lb.select(lb.lt(x, _c(_LOWEST, x)), _c(0.0, x), _exp_reduced(clamped))
    return lb.select(lb.eq(x, x), value, x)


# -- Gelu (erf form) ------------------------------------------------------------------------------

_GELU_LARGEST = 13.2            # |x| beyond: exp(-x^2 / 2) under 2^-126; Gelu(x) = x or -0
_ERFC_P = 0.265625              # u = 1 / (1 + p |x|), exactly representable
# erfc(|x| / sqrt 2) = exp(-x^2 / 2) * u * Q(u) on |x| <= 13.2 (u in [0.222, 1]); Q fitted
# (Lawson's iteration, relative error) to erfc(t) exp(t^2) / u: 1.2e-8 relative before
# rounding the coefficients to float32.
_ERFC_Q = (0.21197740733623505, 0.2110740691423416, 0.2051466852426529, 0.12364035844802856,
           0.26837974786758423, -0.2212468832731247, 0.42430955171585083,
           -0.28462040424346924, 0.06133945658802986)


def erfc_scaled(a: Expr) -> Expr:
    """``erfc(a / sqrt 2)`` for float32 ``a`` in ``[0, 13.2]`` (callers clamp) within 4.1e-7
    relative where it is a normal float32 (measured against float64 ``math.erfc``): ``exp(-a^2 / 2) * u * Q(u)``,
    ``u = 1 / (1 + 0.265625 a)``, ``Q`` a degree-8 fit; ``a^2 / 2`` is split exactly into
    high and low parts (FMA) and both go into the exponential (``_exp_reduced``)."""
    half = a * _c(-0.5, a)
    square = half * a                                    # -a^2 / 2, rounded
    square_low = lb.fma(half, a, _c(0.0, a) - square)    # its rounding error, exactly
    u = _c(1.0, a) / lb.fma(a, _c(_ERFC_P, a), _c(1.0, a))
    return (_exp_reduced(square, square_low) * u) * _horner(_ERFC_Q, u)


def gelu_erf(x: Expr) -> Expr:
    """``0.5 * x * (1 + erf(x / sqrt 2))`` in float32 lanes, as ``0.5 * x * erfc(|x| / sqrt 2)``
    for ``x < 0`` and ``0.5 * x * (2 - erfc(|x| / sqrt 2))`` above (``erfc_scaled``), so the
    negative tail keeps its relative accuracy (no ``1 - 1`` cancellation).

    Measured against float64 ``math.erf`` / ``math.erfc`` on every 1.4e-5 of
    ``[-14, 14]`` plus all powers of two down to the denormals
    (tests/lowering/test_vector_math.py): within 5.7e-7 relative (9.5 float32 ulp) wherever
    the result is a normal float32, 3.9e-7 absolute.  ``x < -13.2`` gives ``-0`` (true
    values are below 1e-38; the reference's float64 ``1 + erf`` rounds to 0 below -8.3
    already).  ``Gelu(inf) = inf``; ``Gelu(-inf)`` is NaN like the reference's (and OpenVINO's)
    ``-inf * 0``; NaN stays NaN.
    """
    # NaN |x| clamps to the bound (min is a compare-select); the product with x restores NaN.
    erfc = erfc_scaled(lb.min_(lb.call("abs", x), _c(_GELU_LARGEST, x)))
    one_plus_erf = lb.select(lb.lt(x, _c(0.0, x)), erfc, _c(2.0, x) - erfc)
    value = (x * _c(0.5, x)) * one_plus_erf
    value = lb.select(lb.lt(x, _c(-_GELU_LARGEST, x)), _c(-0.0, x), value)
    return lb.select(lb.eq(x, _c(-math.inf, x)), _c(math.nan, x), value)
