"""The CPU a program is compiled for: name, features, and what follows for schedules."""

from __future__ import annotations

import functools

import attrs


@attrs.frozen
class Target:
    """An x86-64 CPU as LLVM knows it: ``cpu`` name and feature set (``avx2``, ``fma``, ...)."""

    cpu: str
    features: frozenset[str] = attrs.field(converter=frozenset)

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.features

    @property
    def has_avx2(self) -> bool:
        return "avx2" in self.features

    @property
    def has_fma(self) -> bool:
        return "fma" in self.features

    @property
    def has_vnni(self) -> bool:
        """``vpdpbusd`` on 256-bit (AVX-VNNI) or 512-bit (AVX512-VNNI) registers."""
        return "avx512vnni" in self.features or "avxvnni" in self.features

    @property
    def vector_bits(self) -> int:
        if self.has_avx512:
            return 512
        if self.has_avx2 or "avx" in self.features:
            return 256
        return 128

    @property
    def f32_lanes(self) -> int:
        """f32 lanes of one vector register (8 on AVX2, 16 on AVX-512, 4 on SSE)."""
        return self.vector_bits // 32

    def feature_string(self) -> str:
        """LLVM's ``+avx2,+fma,...`` spelling."""
        return ",".join(f"+{f}" for f in sorted(self.features))

    def describe(self) -> str:
        shown = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avxvnni")
                 if f in self.features]
        return f"{self.cpu} ({', '.join(shown) or 'baseline x86-64'})"

    @staticmethod
    @functools.cache
    def host() -> Target:
        """The machine we run on, as llvmlite reports it."""
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        features = llvm.get_host_cpu_features()
        enabled = frozenset(name for name, on in features.items() if on)
        return Target(llvm.get_host_cpu_name(), enabled)


# Named CPUs whose code can be compiled (not run) anywhere, e.g. to inspect AVX-512 assembly.
SKYLAKE_AVX512 = Target("skylake-avx512", frozenset({
    "sse2", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "bmi", "bmi2",
    "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}))
ICELAKE_SERVER = Target("icelake-server", SKYLAKE_AVX512.features | {"avx512vnni"})
X86_64_V2 = Target("x86-64-v2", frozenset({"sse2", "sse3", "ssse3", "sse4.1", "sse4.2",
                                            "popcnt"}))
