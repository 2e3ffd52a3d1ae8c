"""LLVM emitters for loop-IR operators, kept as op -> emitter tables.

Each emitter takes an ``OpContext`` (builder, module, fast-math flags, target features) and
already-emitted LLVM operands.  Semantics follow ``lowering.loop_ir`` exactly: integer
``div`` truncates, ``floordiv``/``mod`` floor, ``min``/``max`` are compare + select, casts use
their named mode, ``round_even_sat`` is ``llvm.roundeven`` then ``llvm.fpto[su]i.sat``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from llvmlite import ir

from lowering.loop_ir import ScalarType, Type, VectorType
from lpjit.errors import CodegenError

I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
PTR = ir.PointerType()


def llvm_type(t: Type) -> ir.Type:
    """The LLVM value type of loop-IR type ``t`` (f16 only as a storage type)."""
    if isinstance(t, VectorType):
        return ir.VectorType(llvm_type(t.elem), t.lanes)
    if t.is_float:
        return {16: ir.HalfType(), 32: ir.FloatType(), 64: ir.DoubleType()}[t.bits]
    return ir.IntType(t.bits)


def storage_type(t: ScalarType) -> ir.Type:
    """The LLVM type of one element in memory (i1 is stored as a byte)."""
    return I8 if t.is_bool else llvm_type(t)


def mangle(t: ir.Type) -> str:
    """Intrinsic name suffix of ``t``: ``f32``, ``v8f32``, ``i32``, ``v16i8``."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{mangle(t.element)}"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    return {ir.HalfType: "f16", ir.FloatType: "f32", ir.DoubleType: "f64"}[type(t)]


@attrs.frozen
class OpContext:
    """What an emitter needs besides its operands."""

    builder: ir.IRBuilder
    module: ir.Module
    fast_math: tuple[str, ...] = ()
    features: frozenset[str] = frozenset()

    def intrinsic(self, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
        """Declare (once) and return the function ``name`` of type ``ret(args)``."""
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(self.module, ir.FunctionType(ret, list(args)), name)

    def call(self, name: str, ret: ir.Type, *args: ir.Value) -> ir.Value:
        fn = self.intrinsic(name, ret, [a.type for a in args])
        return self.builder.call(fn, list(args))

    def overloaded(self, base: str, *args: ir.Value) -> ir.Value:
        """Call ``llvm.<base>.<type>`` with the result type of its first argument."""
        t = args[0].type
        return self.call(f"llvm.{base}.{mangle(t)}", t, *args)

    def fast(self, value: ir.Instruction) -> ir.Value:
        value.flags.extend(self.fast_math)
        return value


def constant(t: ir.Type, value: float) -> ir.Constant:
    """``value`` of type ``t``, splat across lanes for a vector type."""
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(t.element, value)] * t.count)
    return ir.Constant(t, value)


# -- binary operators ----------------------------------------------------------------------------

def _float_mod(c: OpContext, a: ir.Value, b: ir.Value) -> ir.Value:
    """Python's float modulo: ``frem`` moved to the sign of the divisor."""
    bld, zero = c.builder, constant(a.type, 0.0)
    r = c.fast(bld.frem(a, b))
    wrong_sign = bld.and_(bld.fcmp_unordered("!=", r, zero),
                          bld.xor(bld.fcmp_ordered("<", r, zero), bld.fcmp_ordered("<", b, zero)))
    return bld.select(wrong_sign, c.fast(bld.fadd(r, b)), r)


def _signed_floor(c: OpContext, a: ir.Value, b: ir.Value, want_mod: bool) -> ir.Value:
    """Floor division/modulo from truncating ``sdiv``/``srem``; just those when the builder
    knows ``a >= 0`` and ``b > 0`` (and ``a`` itself or 0 when also ``a < b``)."""
    bld, zero = c.builder, constant(a.type, 0)
    known = _nonnegative_by_positive(bld, a, b)
    if known is not None:
        if known:
            return a if want_mod else zero
        return bld.srem(a, b) if want_mod else bld.sdiv(a, b)
    r = bld.srem(a, b)
    adjust = bld.and_(bld.icmp_signed("!=", r, zero),
                      bld.icmp_signed("<", bld.xor(r, b), zero))
    if want_mod:
        return bld.select(adjust, bld.add(r, b), r)
    q = bld.sdiv(a, b)
    return bld.select(adjust, bld.sub(q, constant(a.type, 1)), q)


def _nonnegative_by_positive(bld: ir.IRBuilder, a: ir.Value, b: ir.Value) -> bool | None:
    """For scalar integers on a builder that tracks ranges (``value_numbering``): None
    unless ``a >= 0`` and ``b`` is a constant ``> 0``; else whether ``a < b`` too."""
    range_of = getattr(bld, "range_of", None)
    if range_of is None or type(a.type) is not ir.IntType:
        return None
    divisor, span = range_of(b), range_of(a)
    if divisor is None or span is None or divisor[0] != divisor[1] or divisor[0] <= 0 \
            or span[0] < 0:
        return None
    return span[1] < divisor[0]


Emitter = Callable[[OpContext, ir.Value, ir.Value], ir.Value]

FLOAT_BINARY: dict[str, Emitter] = {
    "add": lambda c, a, b: c.fast(c.builder.fadd(a, b)),
    "sub": lambda c, a, b: c.fast(c.builder.fsub(a, b)),
    "mul": lambda c, a, b: c.fast(c.builder.fmul(a, b)),
    "div": lambda c, a, b: c.fast(c.builder.fdiv(a, b)),
    "floordiv": lambda c, a, b: c.overloaded("floor", c.fast(c.builder.fdiv(a, b))),
    "mod": _float_mod,
    "min": lambda c, a, b: c.builder.select(c.builder.fcmp_ordered("<", a, b), a, b),
    "max": lambda c, a, b: c.builder.select(c.builder.fcmp_ordered(">", a, b), a, b),
}

_COMMON_INT: dict[str, Emitter] = {
    "add": lambda c, a, b: c.builder.add(a, b),
    "sub": lambda c, a, b: c.builder.sub(a, b),
    "mul": lambda c, a, b: c.builder.mul(a, b),
    "and": lambda c, a, b: c.builder.and_(a, b),
    "or": lambda c, a, b: c.builder.or_(a, b),
    "xor": lambda c, a, b: c.builder.xor(a, b),
    "shl": lambda c, a, b: c.builder.shl(a, b),
}

SIGNED_BINARY: dict[str, Emitter] = {
    **_COMMON_INT,
    "div": lambda c, a, b: c.builder.sdiv(a, b),
    "floordiv": lambda c, a, b: _signed_floor(c, a, b, want_mod=False),
    "mod": lambda c, a, b: _signed_floor(c, a, b, want_mod=True),
    "min": lambda c, a, b: c.builder.select(c.builder.icmp_signed("<", a, b), a, b),
    "max": lambda c, a, b: c.builder.select(c.builder.icmp_signed(">", a, b), a, b),
    "shr": lambda c, a, b: c.builder.ashr(a, b),
    "add_sat": lambda c, a, b: c.overloaded("sadd.sat", a, b),
    "sub_sat": lambda c, a, b: c.overloaded("ssub.sat", a, b),
}

UNSIGNED_BINARY: dict[str, Emitter] = {
    **_COMMON_INT,
    "div": lambda c, a, b: c.builder.udiv(a, b),
    "floordiv": lambda c, a, b: c.builder.udiv(a, b),
    "mod": lambda c, a, b: c.builder.urem(a, b),
    "min": lambda c, a, b: c.builder.select(c.builder.icmp_unsigned("<", a, b), a, b),
    "max": lambda c, a, b: c.builder.select(c.builder.icmp_unsigned(">", a, b), a, b),
    "shr": lambda c, a, b: c.builder.lshr(a, b),
    "add_sat": lambda c, a, b: c.overloaded("uadd.sat", a, b),
    "sub_sat": lambda c, a, b: c.overloaded("usub.sat", a, b),
}


def binary_table(t: ScalarType) -> dict[str, Emitter]:
    """The emitter table for element type ``t`` (i1 uses the unsigned table)."""
    if t.is_float:
        return FLOAT_BINARY
    return SIGNED_BINARY if t.kind == "i" else UNSIGNED_BINARY


COMPARE_SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def emit_compare(c: OpContext, op: str, t: ScalarType, a: ir.Value, b: ir.Value) -> ir.Value:
    """Lane-wise comparison; float ``ne`` is unordered (true for NaN), the others ordered."""
    symbol = COMPARE_SYMBOLS[op]
    if t.is_float:
        if op == "ne":
            return c.builder.fcmp_unordered(symbol, a, b)
        return c.builder.fcmp_ordered(symbol, a, b)
    if t.kind == "i":
        return c.builder.icmp_signed(symbol, a, b)
    return c.builder.icmp_unsigned(symbol, a, b)


# -- casts ----------------------------------------------------------------------------------------

def emit_cast(c: OpContext, value: ir.Value, source: ScalarType, target: ScalarType,
              mode: str, target_type: ir.Type) -> ir.Value:
    """Convert ``value`` from ``source`` to ``target`` with the named ``mode``."""
    bld = c.builder
    if source.is_float and target.is_float:
        if target.bits == source.bits:
            return value
        grow = target.bits > source.bits
        return bld.fpext(value, target_type) if grow else bld.fptrunc(value, target_type)
    if source.is_float:
        if mode == "round_even_sat":
            rounded = c.overloaded("roundeven", value)
            kind = "fptosi" if target.kind == "i" else "fptoui"
            return c.call(f"llvm.{kind}.sat.{mangle(target_type)}.{mangle(value.type)}",
                          target_type, rounded)
        return (bld.fptosi if target.kind == "i" else bld.fptoui)(value, target_type)
    if target.is_float:
        return (bld.sitofp if source.kind == "i" else bld.uitofp)(value, target_type)
    if target.bits == source.bits:
        return value
    if target.bits < source.bits:
        return bld.trunc(value, target_type)
    return (bld.sext if source.kind == "i" else bld.zext)(value, target_type)


# -- math functions -------------------------------------------------------------------------------

def _erf(c: OpContext, x: ir.Value) -> ir.Value:
    """``erf`` through libm's double ``erf``, lane by lane (as the numba executor does)."""
    bld, double = c.builder, ir.DoubleType()
    fn = c.intrinsic("erf", double, [double])

    def one(v: ir.Value) -> ir.Value:
        wide = v if v.type == double else bld.fpext(v, double)
        r = bld.call(fn, [wide])
        return r if v.type == double else bld.fptrunc(r, v.type)

    if not isinstance(x.type, ir.VectorType):
        return one(x)
    out = ir.Constant(x.type, ir.Undefined)
    for lane in range(x.type.count):
        index = ir.Constant(I32, lane)
        out = bld.insert_element(out, one(bld.extract_element(x, index)), index)
    return out


def _abs(c: OpContext, x: ir.Value) -> ir.Value:
    if isinstance(getattr(x.type, "element", x.type), ir.IntType):
        return c.call(f"llvm.abs.{mangle(x.type)}", x.type, x, ir.Constant(I1, 0))
    return c.overloaded("fabs", x)


def _pow(c: OpContext, a: ir.Value, b: ir.Value) -> ir.Value:
    """Float: ``llvm.pow`` (libm ``pow``).  Integer: square-and-multiply over every bit of
    ``b`` (read as unsigned), unrolled and branch-free, wrapping like the type."""
    element = getattr(a.type, "element", a.type)
    if not isinstance(element, ir.IntType):
        return c.overloaded("pow", a, b)
    bld = c.builder
    result, base = constant(a.type, 1), a
    for k in range(element.width):
        bit = bld.and_(bld.lshr(b, constant(b.type, k)), constant(b.type, 1))
        taken = bld.icmp_unsigned("!=", bit, constant(b.type, 0))
        result = bld.select(taken, bld.mul(result, base), result)
        if k + 1 < element.width:
            base = bld.mul(base, base)
    return result


MATH: dict[str, Callable[..., ir.Value]] = {
    "exp": lambda c, x: c.overloaded("exp", x),
    "log": lambda c, x: c.overloaded("log", x),
    "sqrt": lambda c, x: c.overloaded("sqrt", x),
    "tanh": lambda c, x: c.overloaded("tanh", x),
    "erf": _erf,
    "floor": lambda c, x: c.overloaded("floor", x),
    "ceil": lambda c, x: c.overloaded("ceil", x),
    "round_half_even": lambda c, x: c.overloaded("roundeven", x),
    "abs": _abs,
    "fma": lambda c, a, b, d: c.overloaded("fma", a, b, d),
    "pow": _pow,
}


def emit_math(c: OpContext, func: str, args: Sequence[ir.Value]) -> ir.Value:
    emitter = MATH.get(func)
    if emitter is None:
        raise CodegenError(f"no LLVM emitter for math function '{func}'")
    return emitter(c, *args)
