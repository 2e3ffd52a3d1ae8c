"""Interval analysis of integer expressions: the static range of an index.

``bounds(e, env)`` over-approximates the values ``e`` can take, given an interval for each
variable in ``env`` (loop variables: ``[0, extent-1]``).  Unknown sides are ``-inf``/``+inf``.
Only the operators that appear in affine index arithmetic are modelled precisely; anything
else falls back to the range of its type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import attrs

from lowering.loop_ir import Binary, Broadcast, Cast, Expr, IntImm, Ramp, Select, Shuffle, Var

Bound = int | float      # an int, or +-math.inf


@attrs.frozen
class Interval:
    """The closed range ``[lo, hi]``; either side may be infinite."""

    lo: Bound
    hi: Bound

    @property
    def is_finite(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def union(self, other: Interval) -> Interval:
        return Interval(min(self.lo, other.lo), max(self.hi, other.hi))

    def intersect(self, other: Interval) -> Interval:
        return Interval(max(self.lo, other.lo), min(self.hi, other.hi))

    def __repr__(self) -> str:
        return f"[{self.lo}, {self.hi}]"


UNKNOWN = Interval(-math.inf, math.inf)


def point(value: int) -> Interval:
    return Interval(value, value)


def _mul(x: Bound, y: Bound) -> Bound:
    return 0 if x == 0 or y == 0 else x * y


def _type_range(e: Expr) -> Interval:
    t = e.type.elem
    return UNKNOWN if t.is_float else Interval(t.min, t.max)


def _constant(e: Expr) -> int | None:
    if isinstance(e, IntImm):
        return e.value
    if isinstance(e, Broadcast):
        return _constant(e.value)
    return None


def _add(a: Interval, b: Interval) -> Interval:
    return Interval(a.lo + b.lo, a.hi + b.hi)


def _sub(a: Interval, b: Interval) -> Interval:
    return Interval(a.lo - b.hi, a.hi - b.lo)


def _product(a: Interval, b: Interval) -> Interval:
    corners = [_mul(x, y) for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
    return Interval(min(corners), max(corners))


def _floordiv(a: Interval, c: int) -> Interval:
    lo = a.lo // c if math.isfinite(a.lo) else a.lo
    hi = a.hi // c if math.isfinite(a.hi) else a.hi
    return Interval(lo, hi)


def _binary(e: Binary, env: Mapping[Var, Interval]) -> Interval:
    a, b = bounds(e.a, env), bounds(e.b, env)
    c = _constant(e.b)
    if e.op == "add":
        return _add(a, b)
    if e.op == "sub":
        return _sub(a, b)
    if e.op == "mul":
        return _product(a, b)
    if e.op == "min":
        return Interval(min(a.lo, b.lo), min(a.hi, b.hi))
    if e.op == "max":
        return Interval(max(a.lo, b.lo), max(a.hi, b.hi))
    if e.op in ("floordiv", "div") and c is not None and c > 0 and (e.op == "floordiv"
                                                                    or a.lo >= 0):
        return _floordiv(a, c)
    if e.op == "mod" and c is not None and c > 0:
        return a if 0 <= a.lo and a.hi < c else Interval(0, c - 1)
    if e.op == "shl" and c is not None and c >= 0:
        return _product(a, point(1 << c))
    if e.op == "shr" and c is not None and c >= 0 and a.lo >= 0:
        return _floordiv(a, 1 << c)
    if e.op == "and" and c is not None and c >= 0:
        return Interval(0, c)
    return _type_range(e)


def _cast(e: Cast, env: Mapping[Var, Interval]) -> Interval:
    inner = bounds(e.value, env)
    target = Interval(e.target.min, e.target.max)
    if e.mode in ("exact", "wrap") and e.value.type.elem.is_int and e.target.is_int:
        return inner if target.intersect(inner) == inner else target
    return _type_range(e)


_RULES: dict[type, Callable[[Expr, Mapping[Var, Interval]], Interval]] = {
    IntImm: lambda e, env: point(e.value),
    Var: lambda e, env: env.get(e, _type_range(e)),
    Binary: _binary,
    Cast: _cast,
    Broadcast: lambda e, env: bounds(e.value, env),
    Ramp: lambda e, env: _add(bounds(e.base, env),
                              Interval(min(0, e.stride * (e.lanes - 1)),
                                       max(0, e.stride * (e.lanes - 1)))),
    Select: lambda e, env: bounds(e.t, env).union(bounds(e.f, env)),
}


def bounds(e: Expr, env: Mapping[Var, Interval]) -> Interval:
    """A range containing every value (every lane) of integer expression ``e``.

    Arithmetic wraps: a result the exact interval puts outside ``e``'s type can be anything
    in the type (``i * 2**62 >> 62`` over ``i`` in [0, 3] is -2 at ``i = 2``, not in [0, 3]).
    """
    if isinstance(e, Shuffle):
        result = bounds(e.vectors[0], env)
        for v in e.vectors[1:]:
            result = result.union(bounds(v, env))
        return result
    rule = _RULES.get(type(e))
    if rule is None:
        return _type_range(e)
    result, whole = rule(e, env), _type_range(e)
    fits = whole.lo <= result.lo and result.hi <= whole.hi
    return result if fits or not whole.is_finite else whole
