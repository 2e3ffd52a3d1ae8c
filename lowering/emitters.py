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
from lowering.loop_ir import (Cast, Expr, FloatImm, Select, as_expr, f32, from_dtype, i1, i32,
                              i64, value_type)
from lpjit.errors import LoweringError
from lpjit.graph import Node
from lpjit.ops import activations as act
from lpjit.ops import core, elementwise as ew
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
    # Integer division and power have no loop-IR form yet: they run as their own kernels
    # through the generic path only when their dtype is float.
    if isinstance(node, (ew.Divide, ew.Power)) and not node.output_types[0].dtype.is_float:
        return False
    return all(v.dtype.name != "f64" for v in node.inputs)


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


# -- arithmetic ----------------------------------------------------------------------------

_BINARY_OPS = {ew.Add: "add", ew.Subtract: "sub", ew.Multiply: "mul", ew.Maximum: "max",
               ew.Minimum: "min", ew.Divide: "div"}


@emitter(*_BINARY_OPS)
def _binary(node: Node, args: Sequence[Expr]) -> Expr:
    a, b = args
    op = _BINARY_OPS[type(node)]
    if op in ("max", "min") and a.type.is_float:
        # numpy/OpenVINO propagate NaN from either side; LLVM's select form would not.
        cmp = lb.gt(a, b) if op == "max" else lb.lt(a, b)
        chosen = Select(cmp, a, b)
        return Select(lb.compare("ne", a, a), a, Select(lb.compare("ne", b, b), b, chosen))
    return lb.binary(op, a, b)


@emitter(ew.SquaredDifference)
def _squared_difference(node: Node, args: Sequence[Expr]) -> Expr:
    d = lb.binary("sub", args[0], args[1])
    return lb.binary("mul", d, d)


@emitter(ew.Power)
def _power(node: Node, args: Sequence[Expr]) -> Expr:
    return lb.call("pow", args[0], args[1])


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
        # Clamp into i64 range (NaN -> 0) so the truncation is defined, then wrap.
        clean = Select(lb.compare("ne", x, x), imm(0.0, x), x)
        clean = lb.max_(lb.min_(clean, imm(9.2e18, x)), imm(-9.2e18, x))
        wide = Cast(clean, i64, "trunc")
        return Cast(wide, dst, "wrap")
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
    return Select(lb.gt(x, imm(0, x)), x, imm(0, x)) if x.type.is_float else lb.max_(x, 0)


@emitter(act.Sigmoid)
def _sigmoid_op(node: Node, args: Sequence[Expr]) -> Expr:
    return _sigmoid(args[0])


_UNARY_CALLS = {act.Tanh: "tanh", act.Exp: "exp", act.Log: "log", act.Erf: "erf",
                act.Sqrt: "sqrt", act.Floor: "floor", act.Ceiling: "ceil", act.Abs: "abs"}


@emitter(*_UNARY_CALLS)
def _unary_call(node: Node, args: Sequence[Expr]) -> Expr:
    (x,) = args
    func = _UNARY_CALLS[type(node)]
    if not x.type.is_float and func in ("floor", "ceil"):
        return x
    return lb.call(func, x)


@emitter(act.Negative)
def _negative(node: Node, args: Sequence[Expr]) -> Expr:
    (x,) = args
    return lb.binary("sub", imm(0, x), x)


@emitter(act.Clamp)
def _clamp(node: act.Clamp, args: Sequence[Expr]) -> Expr:
    (x,) = args
    low, high = node.min, node.max
    if not x.type.is_float:
        low, high = math.ceil(low), math.floor(high)
    return lb.min_(lb.max_(x, imm(low, x)), imm(high, x))


@emitter(act.HSwish)
def _hswish(node: Node, args: Sequence[Expr]) -> Expr:
    (x,) = args
    r6 = lb.min_(lb.max_(lb.binary("add", x, imm(3.0, x)), imm(0.0, x)), imm(6.0, x))
    return lb.binary("div", lb.binary("mul", x, r6), imm(6.0, x))


@emitter(act.HSigmoid)
def _hsigmoid(node: Node, args: Sequence[Expr]) -> Expr:
    (x,) = args
    r6 = lb.min_(lb.max_(lb.binary("add", x, imm(3.0, x)), imm(0.0, x)), imm(6.0, x))
    return lb.binary("div", r6, imm(6.0, x))


def _softplus(x: Expr) -> Expr:
    return lb.call("log", lb.binary("add", lb.call("exp", x), imm(1.0, x)))


@emitter(act.SoftPlus)
def _softplus_op(node: Node, args: Sequence[Expr]) -> Expr:
    return _softplus(args[0])


@emitter(act.Mish)
def _mish(node: Node, args: Sequence[Expr]) -> Expr:
    (x,) = args
    return lb.binary("mul", x, lb.call("tanh", _softplus(x)))


def _gelu_erf(x: Expr) -> Expr:
    half = imm(0.5, x)
    inner = lb.call("erf", lb.binary("mul", x, imm(1.0 / math.sqrt(2.0), x)))
    return lb.binary("mul", lb.binary("mul", half, x), lb.binary("add", imm(1.0, x), inner))


def _gelu_tanh(x: Expr) -> Expr:
    cube = lb.binary("mul", lb.binary("mul", x, x), x)
    inner = lb.binary("mul", imm(math.sqrt(2.0 / math.pi), x),
                      lb.binary("add", x, lb.binary("mul", imm(0.044715, x), cube)))
    return lb.binary("mul", lb.binary("mul", imm(0.5, x), x),
                     lb.binary("add", imm(1.0, x), lb.call("tanh", inner)))


@emitter(act.GeluV2)
def _gelu2(node: Node, args: Sequence[Expr]) -> Expr:
    return _gelu_erf(args[0])


@emitter(act.GeluV7)
def _gelu7(node: act.GeluV7, args: Sequence[Expr]) -> Expr:
    return _gelu_tanh(args[0]) if node.approximation_mode == "tanh" else _gelu_erf(args[0])


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
    must not become a reciprocal multiply, or results move across rounding ties.
    """
    x, il, ih, ol, oh = args
    steps = imm(float(node.levels - 1), x)
    t = lb.binary("mul", lb.binary("div", lb.binary("sub", x, il), lb.binary("sub", ih, il)),
                  steps)
    q = lb.call("round_half_even", t)
    y = lb.binary("add", lb.binary("mul", lb.binary("div", q, steps), lb.binary("sub", oh, ol)),
                  ol)
    y = Select(lb.gt(x, _fmax(il, ih)), oh, y)
    return Select(lb.le(x, _fmin(il, ih)), ol, y)


def _fmax(a: Expr, b: Expr) -> Expr:
    return Select(lb.gt(a, b), a, b) if not _same_imm(a, b) else a


def _fmin(a: Expr, b: Expr) -> Expr:
    return Select(lb.lt(a, b), a, b) if not _same_imm(a, b) else a


def _same_imm(a: Expr, b: Expr) -> bool:
    return isinstance(a, FloatImm) and isinstance(b, FloatImm) and a.value == b.value


__all__ = ["EMITTERS", "emit", "emitter", "is_elementwise", "i32"]
