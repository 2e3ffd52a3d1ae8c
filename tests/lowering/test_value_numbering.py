"""NumberingBuilder: constant folding with LLVM's semantics, ranges, numbering, dead code.

The folding rules are checked against LLVM itself: for random operands, what the builder
folds must equal what the same instruction computes when LLVM compiles and runs it.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llvmlite import ir

from lowering.codegen_ops import SIGNED_BINARY, OpContext
from lowering.value_numbering import NumberingBuilder, remove_dead_instructions, scalar_int
from runtime.jit import JitEngine

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
OPS = ("add", "sub", "mul", "sdiv", "srem", "udiv", "urem", "and_", "or_", "xor", "shl",
       "ashr", "lshr")
COMPARES = ("<", "<=", ">", ">=", "==", "!=")


def function(*arg_types: ir.Type, ret: ir.Type = I64) -> tuple[ir.Function, NumberingBuilder]:
    module = ir.Module("t")
    fn = ir.Function(module, ir.FunctionType(ret, list(arg_types)), "f")
    return fn, NumberingBuilder(fn.append_basic_block("entry"))


def instructions(fn: ir.Function) -> list[str]:
    return [i.opname for block in fn.blocks for i in block.instructions]


@pytest.fixture(scope="module")
def engine() -> JitEngine:
    return JitEngine()


@pytest.fixture(scope="module")
def llvm_ops(engine):
    """Each integer operator at widths 8, 32 and 64 compiled by LLVM (operands as i64,
    truncated; the result sign-extended back), plus the comparisons."""
    module = ir.Module("ops")
    names = []
    for width in (8, 32, 64):
        t = ir.IntType(width)
        for op in OPS + tuple(f"icmp{c}{s}" for c in COMPARES for s in "su"):
            name = f"{op}_{width}".replace("<", "lt").replace(">", "gt").replace("=", "eq") \
                .replace("!", "n")
            fn = ir.Function(module, ir.FunctionType(I64, [I64, I64]), name)
            b = ir.IRBuilder(fn.append_basic_block())
            a, c = (b.trunc(x, t) if width < 64 else x for x in fn.args)
            if op.startswith("icmp"):
                method = b.icmp_signed if op[-1] == "s" else b.icmp_unsigned
                b.ret(b.zext(method(op[4:-1], a, c), I64))
            else:
                value = getattr(b, op)(a, c)
                b.ret(b.sext(value, I64) if width < 64 else value)
            names.append((op, width, name))
    library = engine.add_module(module)
    kind = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    return library, {(op, w): kind(library.function_address(n)) for op, w, n in names}


def folded(op: str, width: int, a: int, b: int) -> int | None:
    t = ir.IntType(width)
    _, builder = function()
    if op.startswith("icmp"):
        method = builder.icmp_signed if op[-1] == "s" else builder.icmp_unsigned
        value = method(op[4:-1], ir.Constant(t, a), ir.Constant(t, b))
    else:
        value = getattr(builder, op)(ir.Constant(t, a), ir.Constant(t, b))
    return scalar_int(value)


def wrap(value: int, width: int) -> int:
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(OPS + tuple(f"icmp{c}{s}" for c in COMPARES for s in "su")),
       st.sampled_from((8, 32, 64)), st.integers(-2**63, 2**63 - 1),
       st.integers(-2**63, 2**63 - 1), st.booleans())
def test_folding_agrees_with_llvm(llvm_ops, op, width, a, b, small):
    """Whatever the builder folds equals what LLVM computes for the same operands."""
    a, b = wrap(a, width), wrap(b, width)
    if small:                                # shifts and divisions by small numbers
        b = b % (width + 2) - 1
    result = folded(op, width, a, b)
    if op in ("sdiv", "srem", "udiv", "urem") and b == 0:
        assert result is None                # undefined: left to LLVM
        return
    if op in ("shl", "ashr", "lshr") and not 0 <= b % (1 << width) < width:
        assert result is None
        return
    if op in ("sdiv", "srem") and b == -1 and a == -(1 << (width - 1)):
        assert result is None
        return
    assert result is not None
    expected = llvm_ops[1][(op, width)](a, b)
    if op.startswith("icmp"):
        assert result == expected
    else:
        assert wrap(result, width) == expected


def test_identities_return_the_operand_without_an_instruction():
    """``x+0``, ``x*1``, ``x-0``, ``x|0``, ``x^0`` are ``x``; ``x*0`` and ``x&0`` are 0."""
    fn, b = function(I64)
    x = fn.args[0]
    zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
    for value in (b.add(x, zero), b.add(zero, x), b.mul(x, one), b.sub(x, zero), b.or_(x, zero),
                  b.xor(x, zero), b.sdiv(x, one)):
        assert value is x
    assert scalar_int(b.mul(x, zero)) == 0 and scalar_int(b.and_(x, zero)) == 0
    assert scalar_int(b.srem(x, one)) == 0
    assert instructions(fn) == []


def test_floor_division_of_a_non_negative_index_is_plain_sdiv():
    """With ``i`` in [0, 99], ``i floordiv 7`` and ``i mod 7`` need no sign correction."""
    fn, b = function(I64)
    i = fn.args[0]
    b.assume_range(i, 0, 99)
    context = OpContext(b, fn.module)
    quotient = SIGNED_BINARY["floordiv"](context, i, ir.Constant(I64, 7))
    remainder = SIGNED_BINARY["mod"](context, i, ir.Constant(I64, 7))
    b.ret(b.add(quotient, remainder))
    remove_dead_instructions(fn)
    assert sorted(instructions(fn)) == ["add", "ret", "sdiv", "srem"]
    assert b.range_of(quotient) == (0, 14) and b.range_of(remainder) == (0, 6)


def test_floor_division_below_the_divisor_emits_nothing():
    """With ``i`` in [0, 6], ``i floordiv 7`` is 0 and ``i mod 7`` is ``i``: no instruction
    (nothing emitted and removed again); a negative divisor keeps the correction."""
    fn, b = function(I64)
    i = fn.args[0]
    b.assume_range(i, 0, 6)
    context = OpContext(b, fn.module)
    assert scalar_int(SIGNED_BINARY["floordiv"](context, i, ir.Constant(I64, 7))) == 0
    assert SIGNED_BINARY["mod"](context, i, ir.Constant(I64, 7)) is i
    assert instructions(fn) == []
    SIGNED_BINARY["floordiv"](context, i, ir.Constant(I64, -7))
    assert "select" in instructions(fn)


def test_floor_division_of_an_unknown_value_keeps_the_correction():
    fn, b = function(I64)
    SIGNED_BINARY["floordiv"](OpContext(b, fn.module), fn.args[0], ir.Constant(I64, 7))
    assert "select" in instructions(fn)


def test_comparisons_decided_by_ranges_fold():
    """``i < 100`` is true and ``i > 99`` false for ``i`` in [0, 99]; ``i < 50`` is not
    decided; an i1 comparison is never decided from ranges."""
    fn, b = function(I64, I1)
    i, flag = fn.args
    b.assume_range(i, 0, 99)
    assert scalar_int(b.icmp_signed("<", i, ir.Constant(I64, 100))) == 1
    assert scalar_int(b.icmp_unsigned(">", i, ir.Constant(I64, 99))) == 0
    assert scalar_int(b.icmp_signed("==", i, ir.Constant(I64, 100))) == 0
    assert scalar_int(b.icmp_signed("<", i, ir.Constant(I64, 50))) is None
    assert scalar_int(b.icmp_signed("<", flag, ir.Constant(I1, 0))) is None
    clamped = b.select(b.icmp_signed(">", i, ir.Constant(I64, 0)), i, ir.Constant(I64, 0))
    assert b.range_of(clamped) == (0, 99)


def test_ranges_that_may_overflow_are_dropped():
    fn, b = function(I8)
    x = fn.args[0]
    b.assume_range(x, 0, 100)
    assert b.range_of(b.add(x, ir.Constant(I8, 20))) == (20, 120)
    assert b.range_of(b.add(x, ir.Constant(I8, 50))) is None      # could reach 150 > 127


def test_identical_pure_instructions_are_emitted_once_in_a_dominating_scope():
    """Reuse within a block and inside regions it dominates; never from a block that does
    not dominate (an ``if`` arm), and not after the region that declared it ends."""
    fn, b = function(I64, I1)
    x, cond = fn.args
    first = b.mul(x, ir.Constant(I64, 3))
    assert b.mul(x, ir.Constant(I64, 3)) is first
    with b.if_then(cond):
        inside = b.add(x, ir.Constant(I64, 5))     # undeclared region: nothing reused
        assert b.mul(x, ir.Constant(I64, 3)) is not first
    assert b.add(x, ir.Constant(I64, 5)) is not inside
    again = b.mul(x, ir.Constant(I64, 3))            # the entry block was left: emitted anew
    assert again is not first
    with b.scope():
        b.enter_dominated()
        declared = b.block
        with b.if_then(cond):
            assert b.mul(x, ir.Constant(I64, 3)) is again      # declared to dominate the arm
            in_arm = b.sub(x, ir.Constant(I64, 1))
        assert b.sub(x, ir.Constant(I64, 1)) is not in_arm
        assert declared in b.dominators
    assert b.dominators == []


def test_invariant_loads_are_numbered_and_plain_loads_are_not():
    fn, b = function(ir.PointerType())
    pointer = fn.args[0]
    assert b.invariant_load(pointer, I32, 4) is b.invariant_load(pointer, I32, 4)
    assert b.load(pointer, typ=I32) is not b.load(pointer, typ=I32)


def test_dead_pure_chains_are_removed_and_side_effects_kept():
    fn, b = function(I64, ir.PointerType(), ret=ir.VoidType())
    x, pointer = fn.args
    dead = b.mul(b.add(x, ir.Constant(I64, 1)), ir.Constant(I64, 3))
    assert dead is not None
    b.store(b.sub(x, ir.Constant(I64, 2)), pointer)
    b.ret_void()
    assert remove_dead_instructions(fn) == 2
    assert instructions(fn) == ["sub", "store", "ret void"]


def test_a_numbered_function_runs_like_the_plain_one(engine):
    """``f(i) = (i // 3) * 3 + i % 3`` over a loop-like range: numbered and folded code
    returns ``i`` for every ``i`` in [0, 1000)."""
    fn, b = function(I64)
    i = fn.args[0]
    b.assume_range(i, 0, 999)
    context = OpContext(b, fn.module)
    three = ir.Constant(I64, 3)
    q = SIGNED_BINARY["floordiv"](context, i, three)
    r = SIGNED_BINARY["mod"](context, i, three)
    b.ret(b.add(b.mul(q, three), SIGNED_BINARY["mod"](context, i, three)))
    assert SIGNED_BINARY["mod"](context, i, three) is r
    remove_dead_instructions(fn)
    library = engine.add_module(fn.module)
    run = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(library.function_address("f"))
    values = np.arange(1000)
    assert [run(int(v)) for v in values] == values.tolist()
    assert llvm.parse_assembly(str(fn.module)) is not None
