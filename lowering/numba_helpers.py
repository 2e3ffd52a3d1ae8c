"""numba-compiled helpers that define the semantics of loop-IR operations for ``numba_exec``.

Scalar helpers return a wide value that the generated code re-wraps in the result type;
vector helpers take and return numpy arrays.  Integer dot products are computed in int64 and
wrapped to int32, which equals the i32 wrap-around arithmetic of the instructions.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "_dot_pairs",
    "_dot_quad",
    "_dot_saturating",
    "_erf",
    "_erf_v",
    "_f16",
    "_f16_v",
    "_fma32",
    "_fma64",
    "_ipow",
    "_reduce_add",
    "_reduce_max",
    "_reduce_min",
    "_rsat",
    "_rsat_v",
    "_saturate",
    "_saturate_v",
    "_select",
    "_tdiv",
    "_tdiv_v",
]

# Cached on disk (in __pycache__): compiling the helpers costs seconds per process.
_jit = numba.njit(cache=True)


@_jit
def _select(cond, t, f):
    """Both sides are evaluated (they are arguments); picks ``t`` when ``cond``."""
    return t if cond else f


@_jit
def _tdiv(a, b):
    """Integer division truncating toward zero (C), from Python's floor division."""
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return q


@_jit
def _tdiv_v(a, b):
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    q = a64 // b64
    q = q + ((q < 0) & (q * b64 != a64)).astype(np.int64)
    return q.astype(a.dtype)


@_jit
def _saturate(a, b, sign, lo, hi):
    """``a + sign*b`` clamped to [lo, hi] (saturating add/sub, up to 32-bit types)."""
    return min(max(np.int64(a) + sign * np.int64(b), lo), hi)


@_jit
def _saturate_v(a, b, sign, lo, hi):
    wide = a.astype(np.int64) + sign * b.astype(np.int64)
    return np.minimum(np.maximum(wide, lo), hi)


@_jit
def _rsat(x, lo, hi):
    """Round half to even, clamp to [lo, hi], NaN -> 0 (as a float)."""
    r = np.rint(np.float64(x))
    if math.isnan(r):
        return 0.0
    return min(max(r, lo), hi)


@_jit
def _rsat_v(x, lo, hi):
    r = np.rint(x.astype(np.float64))
    return np.where(np.isnan(r), 0.0, np.minimum(np.maximum(r, lo), hi))


@_jit
def _f16(x):
    """``x`` rounded to the nearest f16 value (half to even), held as f32."""
    v = np.float64(x)
    if math.isnan(v) or v == 0.0 or math.isinf(v):
        return np.float32(v)
    exponent = math.frexp(v)[1] - 1
    ulp = 2.0 ** (max(exponent, -14) - 10)
    r = np.rint(v / ulp) * ulp
    if abs(r) > 65504.0:
        r = math.copysign(np.inf, v)
    return np.float32(r)


@_jit
def _f16_v(x):
    out = np.empty(x.size, np.float32)
    for k in range(x.size):
        out[k] = _f16(x[k])
    return out


@_jit
def _erf(x):
    return math.erf(np.float64(x))


@_jit
def _erf_v(x):
    out = np.empty(x.size, x.dtype)
    for k in range(x.size):
        out[k] = math.erf(np.float64(x[k]))
    return out


@_jit
def _two_sum(a, b):
    """``(s, e)`` with ``s = fl(a + b)`` and ``a + b = s + e`` exactly (Knuth's TwoSum)."""
    s = a + b
    virtual = s - a
    return s, (a - (s - virtual)) + (b - virtual)


@_jit
def _two_product(a, b):
    """``(p, e)`` with ``p = fl(a * b)`` and ``a * b = p + e`` exactly (Dekker, with
    Veltkamp's split; ``a`` and ``b`` well inside the f64 range)."""
    p = a * b
    t = 134217729.0 * a
    a_hi = t - (t - a)
    a_lo = a - a_hi
    t = 134217729.0 * b
    b_hi = t - (t - b)
    b_lo = b - b_hi
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


@_jit
def _round_to_odd_sum(a, b):
    """``a + b`` rounded to odd in f64: the f64 neighbour of the exact sum whose last
    significand bit is 1 when the sum is not exact (so a later rounding to fewer bits
    rounds the exact value once)."""
    s, e = _two_sum(a, b)
    if e != 0.0 and math.isfinite(s):
        mantissa = math.frexp(s)[0]
        if int(abs(mantissa) * 9007199254740992.0) % 2 == 0:
            s = np.nextafter(s, math.inf if e > 0.0 else -math.inf)
    return s


@_jit
def _fma32(a, b, c):
    """``a * b + c`` for f32 operands, as an f64 that rounds to the FMA's single-rounded
    f32: the product is exact in f64, the sum rounded to odd (53 >= 24 + 2 bits)."""
    return _round_to_odd_sum(np.float64(a) * np.float64(b), np.float64(c))


@_jit
def _fma64(a, b, c):
    """``a * b + c`` for f64 operands, rounded once (Boldo and Melquiond: the exact product
    and sum as pairs, the low parts added rounded to odd, one final rounding); operands whose
    product is not finite or near the f64 range's ends fall back to ``a * b + c``."""
    a, b, c = np.float64(a), np.float64(b), np.float64(c)
    p = a * b
    if not math.isfinite(p) or not math.isfinite(c) or abs(a) > 1e150 or abs(b) > 1e150 \
            or abs(p) < 1e-290:
        return p + c
    p, p_low = _two_product(a, b)
    s, s_low = _two_sum(c, p)
    return s + _round_to_odd_sum(p_low, s_low)


@_jit
def _ipow(a, e, bits):
    """``a ** e`` for an integer type of ``bits`` bits: ``e``'s low bits read as unsigned,
    square-and-multiply in int64 (the caller wraps to the type: low bits agree)."""
    base, exponent, result = np.int64(a), np.int64(e), np.int64(1)
    for k in range(bits):
        if (exponent >> k) & 1:
            result = result * base
        base = base * base
    return result


@_jit
def _reduce_add(v):
    """Lanes added in order, left to right."""
    s = v[0]
    for k in range(1, v.size):
        s = s + v[k]
    return s


@_jit
def _reduce_min(v):
    s = v[0]
    for k in range(1, v.size):
        if not s < v[k]:  # a NaN lane wins like select(s < v, s, v)
            s = v[k]
    return s


@_jit
def _reduce_max(v):
    s = v[0]
    for k in range(1, v.size):
        if not s > v[k]:
            s = v[k]
    return s


@_jit
def _wrap32(s):
    """int64 ``s`` modulo 2**32, as a signed i32."""
    return np.int32((s + 2147483648) % 4294967296 - 2147483648)


@_jit
def _dot_pairs(acc, a, b):
    """acc[j] + a[2j]*b[2j] + a[2j+1]*b[2j+1], wrapped to i32 (vpmaddwd + vpaddd)."""
    out = np.empty(acc.size, np.int32)
    for j in range(acc.size):
        s = np.int64(acc[j])
        for k in range(2 * j, 2 * j + 2):
            s += np.int64(a[k]) * np.int64(b[k])
        out[j] = _wrap32(s)
    return out


@_jit
def _dot_quad(acc, a, b):
    """acc[j] + sum_{k<4} a[4j+k]*b[4j+k], wrapped to i32 (vpdpbusd)."""
    out = np.empty(acc.size, np.int32)
    for j in range(acc.size):
        s = np.int64(acc[j])
        for k in range(4 * j, 4 * j + 4):
            s += np.int64(a[k]) * np.int64(b[k])
        out[j] = _wrap32(s)
    return out


@_jit
def _dot_saturating(acc, a, b):
    """acc[j] + sat16(pair 2j) + sat16(pair 2j+1) (vpmaddubsw, vpmaddwd by ones, vpaddd)."""
    out = np.empty(acc.size, np.int32)
    for j in range(acc.size):
        s = np.int64(acc[j])
        for pair in range(2 * j, 2 * j + 2):
            p = (np.int64(a[2 * pair]) * np.int64(b[2 * pair])
                 + np.int64(a[2 * pair + 1]) * np.int64(b[2 * pair + 1]))
            s += min(max(p, -32768), 32767)
        out[j] = _wrap32(s)
    return out
