"""Expression emitters: the loop-IR expression of each elementwise graph op.

``EMITTERS[cls](node, args)`` returns the expression of ``node``'s output element given the
expressions of its input elements (all of one lane count; the caller broadcasts).  These are
the building blocks of every fused epilogue and of stand-alone elementwise kernels, so they
follow the reference executor's float32 order of operations exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from lowering import builder as lb
from lowering.loop_ir import (
    Broadcast,
    Buffer,
    Cast,
    Expr,
    FloatImm,
    Load,
    Select,
    as_expr,
    f32,
    f64,
    from_dtype,
    i1,
    i32,
    i64,
    u8,
    value_type,
)
from lowering.quant_forms import ConstantRange, LevelValues, constant_range, level_values
from lowering.vector_math import gelu_erf
from lpjit.errors import LoweringError
from lpjit.graph import Node, Shape
from lpjit.ops import activations as act
from lpjit.ops import core, lowp
from lpjit.ops import elementwise as ew
from lpjit.ops.quantize import FakeQuantize

Emitter = Callable[[Node, Sequence[Expr]], Expr]
EMITTERS: dict[type[Node], Emitter] = {}


def emitter(*classes: type[Node]) -> Callable[[Emitter], Emitter]:
    def decorate(fn: Emitter) -> Emitter:
        for cls in classes:
            EMITTERS[cls] = fn
        return fn

    return decorate


def is_elementwise(node: Node) -> bool:
    """True when ``node`` is computed element by element (has an emitter)."""
    return type(node) in EMITTERS and _emittable(node)


def _emittable(node: Node) -> bool:
    return all(v.dtype.name != "f64" for v in node.inputs)


def operand_shape(node: Node, port: int) -> Shape:
    """The shape input ``port`` of ``node`` is read as before numpy broadcasting to the output:
    its own, except PReLU's per-channel slope ``[C]``, read as ``[1, C, 1, ...]``."""
    if isinstance(node, act.PRelu) and port == 1:
        return node.slope_shape()
    return node.inputs[port].shape


def emit(node: Node, args: Sequence[Expr]) -> Expr:
    """The expression of ``node``'s output element."""
    fn = EMITTERS.get(type(node))
    if fn is None:
        raise LoweringError(f"{node.kind} has no elementwise emitter", node.origin)
    return fn(node, args)


def imm(value: float, like: Expr) -> Expr:
    """A constant of ``like``'s type (element and lanes)."""
    return as_expr(value, like.type)


def f32imm(value: float, like: Expr) -> Expr:
    return as_expr(float(np.float32(value)), f32.with_lanes(like.type.lanes))


def is_nan(x: Expr) -> Expr:
    return lb.compare("ne", x, x)


def np_maximum(a: Expr, b: Expr) -> Expr:
    """numpy's ``maximum``: ``(a > b or isnan(a)) ? a : b`` on floats (NaN from either side
    wins; of two zeros the second, ``maximum(-0., 0.) = 0.``, as numpy's vmaxps-based loops),
    ``max`` on integers."""
    if not a.type.is_float:
        return lb.max_(a, b)
    return Select(lb.binary("or", lb.gt(a, b), is_nan(a)), a, b)


def np_minimum(a: Expr, b: Expr) -> Expr:
    """numpy's ``minimum``: ``(a < b or isnan(a)) ? a : b`` on floats."""
    if not a.type.is_float:
        return lb.min_(a, b)
    return Select(lb.binary("or", lb.lt(a, b), is_nan(a)), a, b)


# -- arithmetic ----------------------------------------------------------------------------

_BINARY_OPS = {ew.Add: "add", ew.Subtract: "sub", ew.Multiply: "mul"}


@emitter(*_BINARY_OPS)
def _binary(node: Node, args: Sequence[Expr]) -> Expr:
    return lb.binary(_BINARY_OPS[type(node)], args[0], args[1])


@emitter(ew.Maximum, ew.Minimum)
def _max_min(node: Node, args: Sequence[Expr]) -> Expr:
    return (np_maximum if isinstance(node, ew.Maximum) else np_minimum)(args[0], args[1])


@emitter(ew.Divide)
def _divide(node: ew.Divide, args: Sequence[Expr]) -> Expr:
    """Float: ``a / b``.  Integer: truncating, or flooring with ``python_division``; never
    traps: ``b == 0`` gives 0 (numpy's ``floor_divide``; the reference's truncating form is
    undefined there) and ``b == -1`` gives ``-a``, wrapping (``MIN / -1``)."""
    a, b = args
    if a.type.is_float:
        return lb.binary("div", a, b)
    op = "floordiv" if node.python_division else "div"
    zero = lb.eq(b, 0)
    if not a.type.is_signed:
        return Select(zero, imm(0, a), lb.binary(op, a, Select(zero, imm(1, b), b)))
    minus_one = lb.eq(b, -1)
    divisor = Select(lb.binary("or", zero, minus_one), imm(1, b), b)
    quotient = Select(minus_one, lb.binary("sub", imm(0, a), a), lb.binary(op, a, divisor))
    return Select(zero, imm(0, a), quotient)


@emitter(ew.SquaredDifference)
def _squared_difference(node: Node, args: Sequence[Expr]) -> Expr:
    d = lb.binary("sub", args[0], args[1])
    return lb.binary("mul", d, d)


@emitter(ew.Power)
def _power(node: Node, args: Sequence[Expr]) -> Expr:
    """libm ``pow`` (floats) or exact wrapping integer power (negative integer exponents are
    an error in numpy: undefined here); a constant exponent 1 or 2 is ``x`` or ``x * x``."""
    x, exponent = args
    constant = _constant_value(exponent)
    if constant == 1:
        return x
    if constant == 2:
        return lb.binary("mul", x, x)
    return lb.call("pow", x, exponent)


def _constant_value(e: Expr) -> float | None:
    """The value of ``e`` when it reads a constant buffer holding one value everywhere."""
    if isinstance(e, Broadcast):
        e = e.value
    if isinstance(e, FloatImm):
        return e.value
    if not isinstance(e, Load) or e.buffer.root.role != "constant":
        return None
    data = _buffer_data(e.buffer)
    if data is None or data.size == 0 or not (data == data.flat[0]).all():
        return None
    return float(data.flat[0])


def _buffer_data(buffer: Buffer) -> np.ndarray | None:
    """The data a view of a constant reads (``None`` when it is not all of its root's)."""
    root = buffer.root
    if root.data is None or buffer.numel != root.numel or buffer.root_offset:
        return None
    return root.data


_COMPARE_OPS = {ew.Equal: "eq", ew.NotEqual: "ne", ew.Greater: "gt", ew.GreaterEqual: "ge",
                ew.Less: "lt", ew.LessEqual: "le"}


@emitter(*_COMPARE_OPS)
def _compare(node: Node, args: Sequence[Expr]) -> Expr:
    return lb.compare(_COMPARE_OPS[type(node)], args[0], args[1])


@emitter(ew.LogicalAnd, ew.LogicalOr)
def _logical(node: Node, args: Sequence[Expr]) -> Expr:
    a, b = (lb.compare("ne", x, 0) if x.type.elem != i1 else x for x in args)
    return lb.binary("and" if isinstance(node, ew.LogicalAnd) else "or", a, b)


@emitter(ew.Select)
def _select(node: Node, args: Sequence[Expr]) -> Expr:
    cond, then, other = args
    if cond.type.elem != i1:
        cond = lb.compare("ne", cond, 0)
    return Select(cond, then, other)


@emitter(core.Convert)
def _convert(node: Node, args: Sequence[Expr]) -> Expr:
    """Convert per OpenVINO: float -> int truncates toward zero and wraps (no saturation)."""
    (x,) = args
    target = node.destination_type
    if target.kind == "b":
        return lb.compare("ne", x, imm(0, x))
    dst = value_type(from_dtype(target))
    src = x.type.elem
    if src == dst:
        return x
    if dst.is_float:
        return Cast(x, dst, "exact" if src.bits < 24 or src.is_float else "nearest")
    if src.is_float:
        # The reference truncates in float64, maps NaN to 0 and converts to i64 on x86, where
        # a value outside [-2^63, 2^63) becomes INT64_MIN; then the low bits are kept.
        inside = lb.binary("and", lb.ge(x, imm(-2.0**63, x)), lb.lt(x, imm(2.0**63, x)))
        wide = Cast(Select(inside, x, imm(0.0, x)), i64, "trunc")
        wide = Select(inside, wide, imm(-2**63, wide))
        wide = Select(is_nan(x), imm(0, wide), wide)
        return wide if dst == i64 else Cast(wide, dst, "wrap")
    if src == i1:
        return Cast(x, dst, "exact")
    widen = dst.bits > src.bits and (dst.is_signed or not src.is_signed)
    return Cast(x, dst, "exact" if widen else "wrap")


# -- activations ---------------------------------------------------------------------------

def _sigmoid(x: Expr) -> Expr:
    one = imm(1.0, x)
    return lb.binary("div", one, lb.binary("add", one, lb.call("exp", lb.binary("sub", imm(0.0, x), x))))


@emitter(act.Relu)
def _relu(node: Node, args: Sequence[Expr]) -> Expr:
    (x,) = args
    return np_maximum(x, imm(0, x))


@emitter(act.Sigmoid)
def _sigmoid_op(node: Node, args: Sequence[Expr]) -> Expr:
    return _sigmoid(args[0])


_UNARY_CALLS = {act.Tanh: "tanh", act.Exp: "exp", act.Log: "log", act.Erf: "erf",
                act.Sqrt: "sqrt", act.Floor: "floor", act.Ceiling: "ceil", act.Abs: "abs"}


@emitter(*_UNARY_CALLS)
def _unary_call(node: Node, args: Sequence[Expr]) -> Expr:
    (x,) = args
    func = _UNARY_CALLS[type(node)]
    if not x.type.is_float and (func in ("floor", "ceil") or not x.type.is_signed):
        return x        # rounding an integer, |unsigned|
    return lb.call(func, x)


@emitter(act.Negative)
def _negative(node: Node, args: Sequence[Expr]) -> Expr:
    """``-0.0 - x`` on floats (exact negation: ``-(+0) = -0``), ``0 - x`` (wrapping) on
    integers."""
    (x,) = args
    return lb.binary("sub", imm(-0.0 if x.type.is_float else 0, x), x)


@emitter(act.Clamp)
def _clamp(node: act.Clamp, args: Sequence[Expr]) -> Expr:
    """``minimum(maximum(x, min), max)``, bounds rounded to f32, or to ``ceil(min)`` and
    ``floor(max)`` clipped to the range of an integer type."""
    (x,) = args
    if x.type.is_float:
        low, high = f32imm(node.min, x), f32imm(node.max, x)
    else:
        t = x.type.elem
        low = imm(min(max(math.ceil(node.min), t.min), t.max), x)
        high = imm(min(max(math.floor(node.max), t.min), t.max), x)
    return np_minimum(np_maximum(x, low), high)


def _hsigmoid(x: Expr) -> Expr:
    """``minimum(maximum(x + 3, 0), 6) / 6``."""
    r6 = np_minimum(np_maximum(lb.binary("add", x, imm(3.0, x)), imm(0.0, x)), imm(6.0, x))
    return lb.binary("div", r6, imm(6.0, x))


@emitter(act.HSwish)
def _hswish(node: Node, args: Sequence[Expr]) -> Expr:
    return lb.binary("mul", args[0], _hsigmoid(args[0]))


@emitter(act.HSigmoid)
def _hsigmoid_op(node: Node, args: Sequence[Expr]) -> Expr:
    return _hsigmoid(args[0])


def _log1p(t: Expr) -> Expr:
    """``log(1 + t)`` accurate for tiny ``t`` (Kahan: ``u = 1 + t``; ``t`` when ``u`` rounds
    to 1, else ``log(u) * t / (u - 1)``).  ``t`` and ``u`` are shared subexpressions, which
    LLVM and numba evaluate once."""
    one = imm(1.0, t)
    u = lb.binary("add", one, t)
    ratio = lb.binary("div", lb.binary("mul", lb.call("log", u), t), lb.binary("sub", u, one))
    return Select(lb.eq(u, one), t, ratio)


def _softplus(x: Expr) -> Expr:
    """``max(x, 0) + log1p(exp(-|x|))``: the reference's ``logaddexp(0, x)``, which never
    overflows."""
    t = lb.call("exp", lb.binary("sub", imm(0.0, x), lb.call("abs", x)))
    return lb.binary("add", np_maximum(x, imm(0.0, x)), _log1p(t))


@emitter(act.SoftPlus)
def _softplus_op(node: Node, args: Sequence[Expr]) -> Expr:
    return _softplus(args[0])


@emitter(act.Mish)
def _mish(node: Node, args: Sequence[Expr]) -> Expr:
    (x,) = args
    return lb.binary("mul", x, lb.call("tanh", _softplus(x)))


def _in_f64(formula: Callable[[Expr], Expr], x: Expr) -> Expr:
    """``formula`` evaluated in float64 and rounded once to f32, as the reference does."""
    return Cast(formula(Cast(x, f64, "exact")), f32, "nearest")


def _gelu_tanh(x: Expr) -> Expr:
    """``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))``."""
    cube = lb.binary("mul", lb.binary("mul", x, x), x)
    inner = lb.binary("mul", imm(math.sqrt(2.0 / math.pi), x),
                      lb.binary("add", x, lb.binary("mul", imm(0.044715, x), cube)))
    return lb.binary("mul", lb.binary("mul", imm(0.5, x), x),
                     lb.binary("add", imm(1.0, x), lb.call("tanh", inner)))


@emitter(act.GeluV2)
def _gelu2(node: Node, args: Sequence[Expr]) -> Expr:
    """The erf form in float32 lanes (``vector_math.gelu_erf``, within 10 ulp of the
    reference's float64 result)."""
    return gelu_erf(args[0])


@emitter(act.GeluV7)
def _gelu7(node: act.GeluV7, args: Sequence[Expr]) -> Expr:
    """``tanh``: in float64, rounded once (as the reference); ``erf``: as Gelu-2."""
    if node.approximation_mode == "tanh":
        return _in_f64(_gelu_tanh, args[0])
    return gelu_erf(args[0])


@emitter(act.Swish)
def _swish(node: Node, args: Sequence[Expr]) -> Expr:
    x = args[0]
    beta_x = lb.binary("mul", args[1], x) if len(args) > 1 else x
    return lb.binary("mul", x, _sigmoid(beta_x))


@emitter(act.PRelu)
def _prelu(node: Node, args: Sequence[Expr]) -> Expr:
    x, slope = args
    return Select(lb.lt(x, imm(0, x)), lb.binary("mul", x, slope), x)


# -- FakeQuantize --------------------------------------------------------------------------

@emitter(FakeQuantize)
def _fake_quantize(node: FakeQuantize, args: Sequence[Expr]) -> Expr:
    """FakeQuantize in float32, in the reference's order (``lpjit.reference.quantize``):

    1. ``t = (x - il) / (ih - il) * (L-1)``; 2. ``q = round_half_even(t)``;
    3. ``y = q / (L-1) * (oh - ol) + ol``; 4. ``x > max(il, ih)`` -> ``oh``;
    5. ``x <= min(il, ih)`` -> ``ol`` (step 5 wins over step 4).  No fast-math: the division
    must not become a reciprocal multiply, or results move across rounding ties.  Constant
    per-tensor ranges take the shorter form of ``_fake_quantize_constant``.
    """
    x, il, ih, ol, oh = args
    short = _fake_quantize_constant(node, x, il, ih, ol, oh)
    if short is not None:
        return short
    steps = imm(float(node.levels - 1), x)
    t = lb.binary("mul", lb.binary("div", lb.binary("sub", x, il), lb.binary("sub", ih, il)),
                  steps)
    q = lb.call("round_half_even", t)
    y = lb.binary("add", lb.binary("mul", lb.binary("div", q, steps), lb.binary("sub", oh, ol)),
                  ol)
    y = Select(lb.gt(x, _fmax(il, ih)), oh, y)
    return Select(lb.le(x, _fmin(il, ih)), ol, y)


def _fake_quantize_constant(node: FakeQuantize, x: Expr, il: Expr, ih: Expr, ol: Expr,
                            oh: Expr) -> Expr | None:
    """FakeQuantize with constant per-tensor ranges (``lowering.quant_forms``): the level
    ``q`` clamped to ``[0, L-1]`` replaces the input-range selects (``min(L-1, max(0, t))``
    keeps a NaN ``t``, so NaN still gives NaN); the output selects remain only where the
    formula's value of level 0 / ``L-1`` is not ``ol`` / ``oh`` bit for bit."""
    rng = constant_range(_constant_value(il), _constant_value(ih))
    values = level_values(_constant_value(ol), _constant_value(oh), node.levels)
    if rng is None or values is None or x.type.elem != f32:
        return None
    steps = imm(float(node.levels - 1), x)
    q = _level_of(x, rng, steps)
    q = lb.min_(steps, lb.max_(imm(0.0, x), q))
    y = _level_value(lb.binary("div", q, steps), values, x, signed_zero=True)
    if values.high_value is not None:      # the top level is two-valued: x > ih gives oh
        y = Select(lb.gt(x, imm(rng.high, x)), imm(values.high_value, x), y)
    if values.low_value is not None:
        y = Select(lb.le(x, imm(rng.low, x)), imm(values.low_value, x), y)
    return y


def _level_of(x: Expr, rng: ConstantRange, steps: Expr) -> Expr:
    """``round_half_even((x - il) / (ih - il) * (L-1))`` with the constants folded."""
    shifted = x if rng.low == 0.0 else lb.binary("sub", x, imm(rng.low, x))
    t = lb.binary("mul", lb.binary("div", shifted, imm(rng.width, x)), steps)
    return lb.call("round_half_even", t)


def _level_value(fraction: Expr, values: LevelValues, like: Expr,
                 signed_zero: bool = False) -> Expr:
    """``fraction * (oh - ol) + ol`` with the constants folded; ``+ 0.0`` is dropped when the
    product cannot be ``-0.0`` (a ``fraction`` that may be ``-0.0``, ``signed_zero``, keeps it:
    the clamp ``max(0, -0.0)`` returns ``-0.0``)."""
    scaled = lb.binary("mul", fraction, imm(values.width, like))
    if (values.low == 0.0 and not np.signbit(values.low) and values.width > 0
            and not signed_zero):
        return scaled
    return lb.binary("add", scaled, imm(values.low, like))


@emitter(lowp.Quantize)
def _quantize(node: lowp.Quantize, args: Sequence[Expr]) -> Expr:
    """The FakeQuantize level index as u8, in the reference's f32 order
    (``lpjit.reference.lowp.level_index``):

    1. ``t = (x - il) / (ih - il) * (L-1)``; 2. ``q = round_half_even(t)``;
    3. ``x > max(il, ih)`` -> ``L-1``; 4. ``x <= min(il, ih)`` -> 0 (wins over 3);
    5. clip to ``[0, L-1]`` (``max`` first: NaN, which fails every comparison, becomes 0);
       the integral value converts exactly.
    With constant per-tensor ranges steps 3-4 follow from step 5 (``lowering.quant_forms``).
    """
    x, il, ih = args
    steps = imm(float(node.levels - 1), x)
    rng = constant_range(_constant_value(il), _constant_value(ih))
    if rng is not None and x.type.elem == f32:
        q = _level_of(x, rng, steps)
    else:
        t = lb.binary("mul", lb.binary("div", lb.binary("sub", x, il),
                                       lb.binary("sub", ih, il)), steps)
        q = Select(lb.gt(x, _fmax(il, ih)), steps, lb.call("round_half_even", t))
        q = Select(lb.le(x, _fmin(il, ih)), imm(0.0, x), q)
    q = lb.min_(lb.max_(q, imm(0.0, x)), steps)
    return Cast(q, u8, "trunc")


@emitter(lowp.Dequantize)
def _dequantize(node: lowp.Dequantize, args: Sequence[Expr]) -> Expr:
    """The float value of level index ``q`` (``lpjit.reference.lowp.dequantize``):
    1. ``y = f32(q) / (L-1) * (oh - ol) + ol``; 2. ``q == L-1`` -> ``oh``; ``q == 0`` ->
    ``ol`` (constant ranges: only where the formula does not already give it)."""
    q, ol, oh = args
    value = Cast(q, ol.type.elem, "exact")
    steps = imm(float(node.levels - 1), value)
    values = level_values(_constant_value(ol), _constant_value(oh), node.levels)
    if values is not None and value.type.elem == f32:
        y = _level_value(lb.binary("div", value, steps), values, value)
        if values.high_value is not None:
            y = Select(lb.eq(q, imm(node.levels - 1, q)), imm(values.high_value, value), y)
        if values.low_value is not None:
            y = Select(lb.eq(q, imm(0, q)), imm(values.low_value, value), y)
        return y
    y = lb.binary("add", lb.binary("mul", lb.binary("div", value, steps),
                                   lb.binary("sub", oh, ol)), ol)
    y = Select(lb.eq(q, imm(node.levels - 1, q)), oh, y)
    return Select(lb.eq(q, imm(0, q)), ol, y)


def _fmax(a: Expr, b: Expr) -> Expr:
    """``np.maximum`` (a NaN range bound gives NaN, which no ``x`` compares above)."""
    return np_maximum(a, b) if not _same_imm(a, b) else a


def _fmin(a: Expr, b: Expr) -> Expr:
    """``np.minimum`` (a NaN range bound gives NaN, which no ``x`` compares below)."""
    return np_minimum(a, b) if not _same_imm(a, b) else a


def _same_imm(a: Expr, b: Expr) -> bool:
    return isinstance(a, FloatImm) and isinstance(b, FloatImm) and a.value == b.value


__all__ = ["EMITTERS", "emit", "emitter", "i32", "is_elementwise", "operand_shape"]
