"""Quantize / Dequantize / FakeQuantize with per-tensor constant ranges: the reference's
arithmetic with its constants folded and its provably redundant selects dropped.

The reference (``lpjit.reference.lowp``, ``lpjit.reference.quantize``) computes, per element,
``t = (x - il) / (ih - il) * (L-1)``, ``q = round_half_even(t)`` and the value
``q / (L-1) * (oh - ol) + ol``, plus range selects (``x > max(il, ih)``, ``x <= min(il, ih)``,
``q == 0``, ``q == L-1``).  When the ranges are per-tensor constants with ``il < ih`` (finite,
``ih - il`` finite) the selects follow from a clamp of ``q`` to ``[0, L-1]``:

- every float32 operation is correctly rounded and so monotone, hence ``x <= il`` gives
  ``x - il <= 0``, ``t <= 0`` and a clamped ``q = 0``; ``x > ih`` gives ``x - il >= ih - il``,
  ``t >= L-1`` and a clamped ``q = L-1``; inside the range ``0 <= t <= (L-1)(1+eps)`` rounds into
  ``[0, L-1]``, so the clamp changes nothing there;
- so a level index needs no select at all, and a value needs one only where the formula's value
  of level 0 or ``L-1`` is not bit-identical to ``ol`` / ``oh`` (``LevelValues`` says which).

The divisions stay: replacing them by reciprocal multiplications moves results across rounding
ties (no exhaustive check passes for typical ranges).  Tests compare the forms with the reference
on every level and on the exact thresholds of the level function.
"""

from __future__ import annotations

import attrs
import numpy as np

F32 = np.float32


@attrs.frozen
class ConstantRange:
    """A per-tensor range ``[low, high]`` with ``low < high``, both finite, and its width
    ``high - low`` (rounded to float32, finite)."""

    low: float
    high: float
    width: float


def constant_range(low: float | None, high: float | None) -> ConstantRange | None:
    """The ``ConstantRange`` of two constants, or ``None`` when the shortcut does not apply
    (a non-constant bound, ``low >= high``, a NaN or infinite bound or width)."""
    if low is None or high is None:
        return None
    lo, hi = F32(low), F32(high)
    with np.errstate(over="ignore", invalid="ignore"):
        width = F32(hi - lo)
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(width) and lo < hi):
        return None
    return ConstantRange(float(lo), float(hi), float(width))


@attrs.frozen
class LevelValues:
    """The value of a level as the formula ``q / (L-1) * (oh - ol) + ol`` gives it, and the
    levels whose wanted value differs from the formula's bit pattern: ``low_value`` /
    ``high_value`` are ``None`` when level 0 / ``L-1`` needs no select."""

    low: float
    width: float            # oh - ol in float32
    low_value: float | None
    high_value: float | None


def level_values(output_low: float | None, output_high: float | None, levels: int,
                 low_target: float | None = None,
                 high_target: float | None = None) -> LevelValues | None:
    """``LevelValues`` for constant ``output_low``/``output_high`` (finite, any order): level 0
    must give ``low_target`` (default ``output_low``) and level ``L-1`` ``high_target``
    (default ``output_high``); ``None`` when a bound is not constant or the width overflows."""
    if output_low is None or output_high is None:
        return None
    ol, oh = F32(output_low), F32(output_high)
    with np.errstate(over="ignore", invalid="ignore"):
        width = F32(oh - ol)
    if not (np.isfinite(ol) and np.isfinite(oh) and np.isfinite(width)):
        return None
    values = formula_values(float(ol), float(oh), levels)
    lo_t = F32(ol if low_target is None else low_target)
    hi_t = F32(oh if high_target is None else high_target)
    return LevelValues(float(ol), float(width),
                       None if _same_bits(values[0], lo_t) else float(lo_t),
                       None if _same_bits(values[-1], hi_t) else float(hi_t))


def formula_values(output_low: float, output_high: float, levels: int) -> np.ndarray:
    """``q / (L-1) * (oh - ol) + ol`` for every level ``q`` (float32, in this order)."""
    ol, oh = F32(output_low), F32(output_high)
    with np.errstate(over="ignore", invalid="ignore"):
        return (np.arange(levels, dtype=F32) / F32(levels - 1) * (oh - ol) + ol).astype(F32)


def _same_bits(a, b) -> bool:
    return bool(np.asarray(a, F32).view(np.int32) == np.asarray(b, F32).view(np.int32))


__all__ = ["ConstantRange", "LevelValues", "constant_range", "formula_values", "level_values"]
