"""Target-specific microkernel operations, as loop-IR expressions with documented semantics.

A schedule (never the code generator) chooses one of these for an integer dot product.  Each
is a pure expression ``acc' = op(acc, a, b)`` on vectors, so the printer, the verifier and the
numba executor see it like any other node.  Lane layouts (``N`` = lanes of ``acc``, i32):

===================== ============ ============ ==================================================
op                    a            b            acc'[j]
===================== ============ ============ ==================================================
``DotI8Pairs``        u8/i8/i16x2N i8/i16 x2N   acc[j] + a[2j]*b[2j] + a[2j+1]*b[2j+1]  (exact)
``DotU8I8Quad``       u8 x4N       i8 x4N       acc[j] + sum_{k<4} a[4j+k]*b[4j+k]       (exact)
``DotU8I8Saturating`` u8 x4N       i8 x4N       acc[j] + sat16(p[2j]) + sat16(p[2j+1]), with
                                                p[i] = a[2i]*b[2i] + a[2i+1]*b[2i+1]
===================== ============ ============ ==================================================

All sums wrap modulo 2**32 like i32 adds.  ``DotI8Pairs`` is AVX2 ``vpmaddwd`` on widened
16-bit values; ``DotU8I8Quad`` is VNNI ``vpdpbusd``; ``DotU8I8Saturating`` is the
``vpmaddubsw`` + ``vpmaddwd(1)`` sequence oneDNN uses on AVX2, which saturates a pair at
+-32767 (255*127*2 = 64770 becomes 32767): it may only be chosen when the compiler has proved
that no pair can leave [-32768, 32767], and it records that proof in ``justification``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from lowering.loop_ir import Expr, Type, VectorType, i8, i16, i32, u8


@attrs.frozen(eq=False, repr=False)
class Microkernel(Expr):
    """``acc' = op(acc, a, b)``: an i32 vector accumulator updated from narrow inputs."""

    acc: Expr
    a: Expr
    b: Expr

    mnemonic: ClassVar[str] = ""
    group: ClassVar[int] = 1            # input lanes per accumulator lane
    a_types: ClassVar[tuple] = ()
    b_types: ClassVar[tuple] = ()

    def infer_type(self) -> Type:
        return self.acc.type

    def type_errors(self) -> list[str]:
        """What is wrong with the operand types (empty when well typed)."""
        acc, a, b = self.acc.type, self.a.type, self.b.type
        problems = []
        if not (isinstance(acc, VectorType) and acc.elem == i32):
            problems.append(f"accumulator must be an i32 vector, got {acc}")
        lanes = acc.lanes * self.group
        if a.elem not in self.a_types or a.lanes != lanes:
            allowed = "/".join(t.name for t in self.a_types)
            problems.append(f"operand a must be {allowed}x{lanes}, got {a}")
        if b.elem not in self.b_types or b.lanes != lanes:
            allowed = "/".join(t.name for t in self.b_types)
            problems.append(f"operand b must be {allowed}x{lanes}, got {b}")
        return problems


@attrs.frozen(eq=False, repr=False)
class DotI8Pairs(Microkernel):
    """Exact pair dot step: ``acc[j] += a[2j]*b[2j] + a[2j+1]*b[2j+1]`` (``vpmaddwd``)."""

    mnemonic: ClassVar[str] = "dot_i8_pairs"
    group: ClassVar[int] = 2
    a_types: ClassVar[tuple] = (u8, i8, i16)
    b_types: ClassVar[tuple] = (i8, i16)


@attrs.frozen(eq=False, repr=False)
class DotU8I8Quad(Microkernel):
    """Exact quad dot step: ``acc[j] += sum_k a[4j+k]*b[4j+k]`` (VNNI ``vpdpbusd``)."""

    mnemonic: ClassVar[str] = "dot_u8i8_quad"
    group: ClassVar[int] = 4
    a_types: ClassVar[tuple] = (u8,)
    b_types: ClassVar[tuple] = (i8,)


@attrs.frozen(eq=False, repr=False)
class DotU8I8Saturating(Microkernel):
    """Saturating quad dot step (``vpmaddubsw`` then ``vpmaddwd`` by ones); see module doc.

    ``justification`` states why no pair can saturate (e.g. "weights in [-63, 63]"); it is
    printed with the node and must not be empty.
    """

    justification: str = ""

    mnemonic: ClassVar[str] = "dot_u8i8_saturating"
    group: ClassVar[int] = 4
    a_types: ClassVar[tuple] = (u8,)
    b_types: ClassVar[tuple] = (i8,)

    def type_errors(self) -> list[str]:
        problems = super().type_errors()
        if not self.justification.strip():
            problems.append("a saturating dot step needs a justification (the proof that no "
                            "pair of products leaves [-32768, 32767])")
        return problems


MICROKERNELS: tuple[type[Microkernel], ...] = (DotI8Pairs, DotU8I8Quad, DotU8I8Saturating)
