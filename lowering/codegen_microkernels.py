"""LLVM emitters for the microkernel nodes of ``lowering.microkernels``.

Each uses an ``llvm.x86.*`` intrinsic only when the target has the feature and the lane count
matches a register (ymm: 8 x i32, zmm: 16 x i32, xmm: 4 x i32); otherwise it emits portable
vector IR with the same meaning (widen, multiply, add lanes in groups).
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from lowering.codegen_ops import I16, I32, OpContext, constant
from lowering.microkernels import DotI8Pairs, DotU8I8Quad, DotU8I8Saturating, Microkernel


def _vector(element: ir.Type, lanes: int) -> ir.VectorType:
    return ir.VectorType(element, lanes)


def _widen(c: OpContext, v: ir.Value, signed: bool, element: ir.Type) -> ir.Value:
    target = _vector(element, v.type.count)
    if v.type.element == element:
        return v
    return (c.builder.sext if signed else c.builder.zext)(v, target)


def _lanes(c: OpContext, v: ir.Value, start: int, step: int, count: int) -> ir.Value:
    """Lanes ``start, start+step, ...`` (``count`` of them) of ``v``."""
    mask = ir.Constant(_vector(I32, count), [start + step * k for k in range(count)])
    return c.builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), mask)


def _group_sum(c: OpContext, v: ir.Value, group: int) -> ir.Value:
    """Sum of each run of ``group`` adjacent lanes (portable horizontal add)."""
    count = v.type.count // group
    total = _lanes(c, v, 0, group, count)
    for k in range(1, group):
        total = c.builder.add(total, _lanes(c, v, k, group, count))
    return total


_PMADDWD = {4: ("llvm.x86.sse2.pmadd.wd", "sse2"), 8: ("llvm.x86.avx2.pmadd.wd", "avx2"),
            16: ("llvm.x86.avx512.pmaddw.d.512", "avx512bw")}
_PMADDUBSW = {4: ("llvm.x86.ssse3.pmadd.ub.sw.128", "ssse3"),
              8: ("llvm.x86.avx2.pmadd.ub.sw", "avx2"),
              16: ("llvm.x86.avx512.pmaddubs.w.512", "avx512bw")}


def _pmaddwd(c: OpContext, a16: ir.Value, b16: ir.Value) -> ir.Value | None:
    """``vpmaddwd`` when the target has it for this width, else None."""
    lanes = a16.type.count // 2
    name, feature = _PMADDWD.get(lanes, ("", "-"))
    if feature not in c.features:
        return None
    return c.call(name, _vector(I32, lanes), a16, b16)


def emit_dot_i8_pairs(c: OpContext, node: DotI8Pairs, acc: ir.Value, a: ir.Value,
                      b: ir.Value) -> ir.Value:
    """acc + pair sums of 16-bit products: ``vpmaddwd`` + ``vpaddd`` (exact for 8-bit inputs)."""
    a16 = _widen(c, a, node.a.type.elem.kind == "i", I16)
    b16 = _widen(c, b, True, I16)
    pairs = _pmaddwd(c, a16, b16)
    if pairs is None:
        products = c.builder.mul(_widen(c, a16, True, I32), _widen(c, b16, True, I32))
        pairs = _group_sum(c, products, 2)
    return c.builder.add(acc, pairs)


_VPDPBUSD = {4: "llvm.x86.avx512.vpdpbusd.128", 8: "llvm.x86.avx512.vpdpbusd.256",
             16: "llvm.x86.avx512.vpdpbusd.512"}


def _has_vnni(c: OpContext, lanes: int) -> bool:
    if lanes == 16:
        return "avx512vnni" in c.features
    return ({"avx512vnni", "avx512vl"} <= c.features) or "avxvnni" in c.features


def emit_dot_u8i8_quad(c: OpContext, node: DotU8I8Quad, acc: ir.Value, a: ir.Value,
                       b: ir.Value) -> ir.Value:
    """acc + sums of four u8*i8 products: ``vpdpbusd`` with VNNI, exact portable IR without."""
    lanes = acc.type.count
    if lanes in _VPDPBUSD and _has_vnni(c, lanes):
        return c.call(_VPDPBUSD[lanes], acc.type, acc, a, b)
    products = c.builder.mul(_widen(c, a, False, I32), _widen(c, b, True, I32))
    return c.builder.add(acc, _group_sum(c, products, 4))


def emit_dot_u8i8_saturating(c: OpContext, node: DotU8I8Saturating, acc: ir.Value,
                             a: ir.Value, b: ir.Value) -> ir.Value:
    """acc + sat16 pair sums added in pairs: ``vpmaddubsw``, ``vpmaddwd`` by ones, ``vpaddd``."""
    lanes = acc.type.count
    name, feature = _PMADDUBSW.get(lanes, ("", "-"))
    if feature in c.features:
        pairs16 = c.call(name, _vector(I16, 2 * lanes), a, b)
    else:
        products = c.builder.mul(_widen(c, a, False, I32), _widen(c, b, True, I32))
        pairs = _group_sum(c, products, 2)
        low, high = constant(pairs.type, -32768), constant(pairs.type, 32767)
        bld = c.builder
        pairs = bld.select(bld.icmp_signed("<", pairs, low), low, pairs)
        pairs = bld.select(bld.icmp_signed(">", pairs, high), high, pairs)
        pairs16 = bld.trunc(pairs, _vector(I16, 2 * lanes))
    ones = constant(pairs16.type, 1)
    quads = _pmaddwd(c, pairs16, ones)
    if quads is None:
        quads = _group_sum(c, _widen(c, pairs16, True, I32), 2)
    return c.builder.add(acc, quads)


MICROKERNEL_EMITTERS: dict[type[Microkernel], Callable[..., ir.Value]] = {
    DotI8Pairs: emit_dot_i8_pairs,
    DotU8I8Quad: emit_dot_u8i8_quad,
    DotU8I8Saturating: emit_dot_u8i8_saturating,
}
