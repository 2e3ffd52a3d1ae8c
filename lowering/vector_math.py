"""Vectorizable math functions composed from loop-IR float operations (no library calls).

LLVM scalarizes ``llvm.exp`` on vectors into one libm call per lane; these compositions use only
adds, multiplies, compares, selects and ``floor``/``round_half_even`` (single instructions), so a
vectorized loop stays vectorized.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

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



# -- erf in float64 -------------------------------------------------------------------------------

_SMALL = 0.75                   # |z| below: erf(z) = z * S(z^2); above: 1 - erfc(|z|)
_LARGEST = 6.0                  # 1 - erfc(6) rounds to 1 in float64
_SMALL_DEGREE = 12
_ERFCX_DEGREE = 24
_ERFCX_CENTER = 2.0             # erfcx(t) is fitted in y = (t - c) / (t + c)
_LN2_HI_64 = 6.93147180369123816490e-01    # fdlibm's split of ln 2 (32 significant bits)
_LN2_LO_64 = 1.90821492927058770002e-10
_EXP_DEGREE = 13                # Taylor on |r| <= ln2 / 2: r^14 / 14! < 5e-18


def _chebyshev_fit(function, low: float, high: float, degree: int) -> np.ndarray:
    """Monomial coefficients (lowest first) in ``u in [-1, 1]`` of ``function`` on
    ``[low, high]``, interpolated at ``4 * degree`` Chebyshev points."""
    count = 4 * degree
    u = np.cos(np.pi * (np.arange(count) + 0.5) / count)
    x = (u * (high - low) + (high + low)) / 2
    values = np.array([function(float(v)) for v in x])
    return np.polynomial.chebyshev.cheb2poly(np.polynomial.chebyshev.chebfit(u, values, degree))


def _erf_over_z(s: float) -> float:
    """``erf(z) / z`` at ``s = z^2``."""
    z = math.sqrt(s)
    return math.erf(z) / z if z else 2.0 / math.sqrt(math.pi)


def _erfcx(t: float) -> float:
    """``erfc(t) * exp(t^2)``, with ``t^2``'s rounding error carried into the exponential."""
    square = t * t
    low = float(Fraction(t) * Fraction(t) - Fraction(square))
    return math.erfc(t) * math.exp(square) * (1.0 + low)


def _y_range() -> tuple[float, float]:
    c = _ERFCX_CENTER
    return (_SMALL - c) / (_SMALL + c), (_LARGEST - c) / (_LARGEST + c)


@functools.cache
def _coefficients() -> tuple[np.ndarray, np.ndarray]:
    """(erf(z)/z in ``z^2 on [0, 0.75^2]``, erfcx in ``y`` on ``[0.75, 6]``) fits."""
    small = _chebyshev_fit(_erf_over_z, 0.0, _SMALL * _SMALL, _SMALL_DEGREE)
    y0, y1 = _y_range()
    c = _ERFCX_CENTER
    large = _chebyshev_fit(lambda y: _erfcx(c * (1 + y) / (1 - y)), y0, y1, _ERFCX_DEGREE)
    return small, large


def _horner(coefficients: np.ndarray, u: Expr) -> Expr:
    acc: Expr = as_expr(float(coefficients[-1]), u.type)
    for coefficient in coefficients[-2::-1]:
        acc = lb.fma(acc, u, as_expr(float(coefficient), u.type))
    return acc


def _to_unit(x: Expr, low: float, high: float) -> Expr:
    """``x`` on ``[low, high]`` mapped affinely to ``[-1, 1]``."""
    return x * as_expr(2.0 / (high - low), x.type) - as_expr((high + low) / (high - low), x.type)


def _exp_f64_small(x: Expr) -> Expr:
    """``exp(x)`` in float64 for ``x in [-37, 0]`` within an ulp or two: ``x = n ln2 + r``,
    a degree-13 Taylor polynomial of ``exp(r)``, ``2^n`` from the bits of ``n + 64``."""
    n = lb.call("round_half_even", x * as_expr(1.0 / math.log(2.0), x.type))
    r = (x - n * as_expr(_LN2_HI_64, x.type)) - n * as_expr(_LN2_LO_64, x.type)
    poly = _horner(np.array([1.0 / math.factorial(k) for k in range(_EXP_DEGREE + 1)]), r)
    m = n + as_expr(64.0, x.type)
    halves = [lb.call("floor", m * as_expr(2.0 ** -k, x.type)) for k in range(8)]
    scale: Expr = as_expr(2.0 ** -64, x.type)
    for k in reversed(range(7)):
        bit = halves[k] - halves[k + 1] * as_expr(2.0, x.type)
        scale = scale * lb.select(lb.gt(bit, as_expr(0.5, x.type)),
                                  as_expr(2.0 ** (2 ** k), x.type), as_expr(1.0, x.type))
    return poly * scale


def erf_f64(z: Expr) -> Expr:
    """``erf(z)`` for float64 ``z`` as vectorizable operations, within a few float64 ulp of
    libm (``1 - erfc`` rounds like libm's ``erf``, so ``1 + erf(z)`` keeps the same
    cancellation): ``z * S(z^2)`` below ``|z| = 0.75``; above, ``±(1 - exp(-t^2) erfcx(t))``
    with ``t = min(|z|, 6)``, ``t^2`` split exactly by an FMA.  NaN stays NaN."""
    small_fit, large_fit = _coefficients()
    like = z.type
    square = z * z
    s = lb.min_(square, as_expr(_SMALL * _SMALL, like))
    small = z * _horner(small_fit, _to_unit(s, 0.0, _SMALL * _SMALL))
    t = lb.min_(lb.max_(lb.call("abs", z), as_expr(_SMALL, like)), as_expr(_LARGEST, like))
    center = as_expr(_ERFCX_CENTER, like)
    y = (t - center) / (t + center)
    erfcx = _horner(large_fit, _to_unit(y, *_y_range()))
    high = t * t
    low = lb.fma(t, t, as_expr(0.0, like) - high)
    erfc = _exp_f64_small(as_expr(0.0, like) - high) * (as_expr(1.0, like) - low) * erfcx
    magnitude = as_expr(1.0, like) - erfc
    large = lb.select(lb.lt(z, as_expr(0.0, like)), as_expr(0.0, like) - magnitude, magnitude)
    value = lb.select(lb.lt(lb.call("abs", z), as_expr(_SMALL, like)), small, large)
    return lb.select(lb.eq(z, z), value, z)
