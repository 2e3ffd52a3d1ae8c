"""x86-64 CPU features: the ISA levels, and where ``cpuid`` reports each feature.

An exported library checks at create time that the CPU has every feature its code was
compiled for, and returns an error code instead of dying of SIGILL.  ``CPUID_BITS`` is that
check as data: for each LLVM feature name, the ``cpuid`` leaf and sub-leaf, the register, the
bit, and the register state the OS must enable (``XCR0``, read with ``xgetbv``) before the
instructions may run:

* ``avx``: XMM and YMM state (XCR0 bits 1-2);
* ``avx512``: also the opmask and upper ZMM state (bits 5-7);
* ``amx``: also the AMX tile state (bits 17-18).

The ISA levels are the x86-64 psABI's, spelled with LLVM's feature names (LLVM 22's
``X86_64V*Features``).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

X86_64_V1 = frozenset({"64bit", "cmov", "cx8", "fxsr", "mmx", "sse", "sse2", "x87"})
X86_64_V2 = X86_64_V1 | {"cx16", "sahf", "crc32", "popcnt", "sse3", "ssse3", "sse4.1",
                         "sse4.2"}
X86_64_V3 = X86_64_V2 | {"avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe",
                         "xsave"}
X86_64_V4 = X86_64_V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "evex512"}

ISA_LEVELS: dict[str, frozenset[str]] = {
    "x86-64": X86_64_V1, "x86-64-v2": X86_64_V2, "x86-64-v3": X86_64_V3,
    "x86-64-v4": X86_64_V4,
}

REGISTERS = ("eax", "ebx", "ecx", "edx")
OS_STATES = {"": 0, "avx": 0x6, "avx512": 0xE6, "amx": 0x60006}


@attrs.frozen
class CpuidBit:
    """Where ``cpuid`` reports a feature, and the XCR0 state the OS must have enabled."""

    leaf: int
    subleaf: int
    register: str
    bit: int
    os_state: str = ""

    @property
    def xcr0_mask(self) -> int:
        """The XCR0 bits that must all be set (0: no OS state needed)."""
        return OS_STATES[self.os_state]


def _bits(leaf: int, subleaf: int, register: str, os_state: str = "",
          **features: int) -> dict[str, CpuidBit]:
    return {name: CpuidBit(leaf, subleaf, register, bit, os_state)
            for name, bit in features.items()}


_EXT = 0x80000001
CPUID_BITS: dict[str, CpuidBit] = {
    **_bits(1, 0, "edx", x87=0, cx8=8, cmov=15, mmx=23, fxsr=24, sse=25, sse2=26),
    **_bits(1, 0, "ecx", sse3=0, pclmul=1, ssse3=9, cx16=13, crc32=20,
            **{"sse4.1": 19, "sse4.2": 20},
            movbe=22, popcnt=23, aes=25, xsave=26, rdrnd=30),
    **_bits(1, 0, "ecx", "avx", fma=12, avx=28, f16c=29),
    **_bits(7, 0, "ebx", fsgsbase=0, bmi=3, bmi2=8, invpcid=10, rdseed=18, adx=19,
            clflushopt=23, clwb=24, sha=29),
    **_bits(7, 0, "ebx", "avx", avx2=5),
    **_bits(7, 0, "ebx", "avx512", avx512f=16, evex512=16, avx512dq=17, avx512ifma=21,
            avx512cd=28, avx512bw=30, avx512vl=31),
    **_bits(7, 0, "ecx", pku=3, waitpkg=5, shstk=7, gfni=8, rdpid=22, movdiri=27,
            movdir64b=28),
    **_bits(7, 0, "ecx", "avx", vaes=9, vpclmulqdq=10),
    **_bits(7, 0, "ecx", "avx512", avx512vbmi=1, avx512vbmi2=6, avx512vnni=11,
            avx512bitalg=12, avx512vpopcntdq=14),
    **_bits(7, 0, "edx", serialize=14),
    **_bits(7, 0, "edx", "avx512", avx512vp2intersect=8, avx512fp16=23),
    **_bits(7, 0, "edx", "amx", **{"amx-bf16": 22, "amx-tile": 24, "amx-int8": 25}),
    **_bits(7, 1, "eax", "avx", avxvnni=4, avxifma=23),
    **_bits(7, 1, "eax", "avx512", avx512bf16=5),
    **_bits(7, 1, "eax", "amx", **{"amx-fp16": 21}),
    **_bits(7, 1, "edx", "avx", avxvnniint8=4, avxneconvert=5),
    **_bits(0xD, 1, "eax", xsaveopt=0, xsavec=1, xsaves=3),
    **_bits(_EXT, 0, "ecx", sahf=0, lzcnt=5, sse4a=6, prfchw=8, mwaitx=29),
    **_bits(_EXT, 0, "ecx", "avx", xop=11, fma4=16),
    **_bits(_EXT, 0, "edx", **{"64bit": 29}),
    **_bits(0x80000008, 0, "ebx", clzero=0, wbnoinvd=9, rdpru=4),
}


def checked_features(features: Iterable[str]) -> tuple[str, ...]:
    """The features among ``features`` that ``cpuid`` can confirm, sorted."""
    return tuple(sorted(f for f in set(features) if f in CPUID_BITS))


def unchecked_features(features: Iterable[str]) -> tuple[str, ...]:
    """The features among ``features`` this table does not know (tuning flags and rarities)."""
    return tuple(sorted(f for f in set(features) if f not in CPUID_BITS))
