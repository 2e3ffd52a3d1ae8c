"""Kernels identical up to constants: grouping, and the shared body they compile to.

Rule: two kernels share a body exactly when their loop IR is the same tree after numbering
variables and buffers (names and constant data ignored; everything else about a buffer,
every immediate, bit for bit, and the binding structure of variables kept).
"""

from __future__ import annotations

import numpy as np
import pytest

from lowering.builder import KernelBuilder
from lowering.codegen_llvm import lower_kernels_to_llvm
from lowering.kernel_fingerprint import group_identical_kernels
from lowering.loop_ir import IntImm, Kernel, Let, Store, Var, f32, vectorized
from runtime.jit import JitEngine

RNG = np.random.default_rng(7)


def scale_shift(name: str, scale: np.ndarray, shift: float = 1.0, width: int = 8,
                layer: str = "a", alignment: int = 64) -> Kernel:
    """``y[i] = x[i] * scale[i] + shift`` over 24 elements, buffers named after ``layer``."""
    b = KernelBuilder(name)
    x = b.input(f"{layer}_x", f32, (24,))
    y = b.output(f"{layer}_y", f32, (24,))
    weights = KernelBuilder.constant(f"{layer}_scale", scale.astype(np.float32), alignment)
    with b.for_range(24, kind=vectorized(width), name=f"{layer}_i") as i:
        b.store(y, i, x[i] * weights[i] + shift)
    return b.build()


def names(groups) -> list[list[str]]:
    return [[k.name for k in g.kernels] for g in groups]


def test_kernels_differing_only_in_names_and_constant_data_form_one_group():
    first = scale_shift("k1", RNG.standard_normal(24), layer="a")
    second = scale_shift("k2", RNG.standard_normal(24), layer="b")
    groups = group_identical_kernels([first, second])
    assert names(groups) == [["k1", "k2"]]
    (group,) = groups
    assert [c.name for c in group.constants[0]] == ["a_scale"]
    assert [c.name for c in group.constants[1]] == ["b_scale"]


@pytest.mark.parametrize("other", [
    lambda: scale_shift("k2", RNG.standard_normal(24), shift=0.0, width=4),   # schedule
    lambda: scale_shift("k2", RNG.standard_normal(24), shift=0.0, alignment=32),
])
def test_any_structural_difference_separates_kernels(other):
    base = scale_shift("k0", RNG.standard_normal(24), shift=0.0)
    first = scale_shift("k1", RNG.standard_normal(24), shift=0.0)
    groups = group_identical_kernels([base, first, other()])
    assert ["k2"] in names(groups) and ["k0", "k1"] in names(groups)


@pytest.mark.parametrize(("shifts", "varying"), [
    ((1.0, 1.0), ()), ((1.0, 2.0), (0,)), ((0.0, -0.0), (0,)),
])
def test_float_immediates_are_compared_by_bits_and_only_differing_slots_vary(shifts, varying):
    kernels = [scale_shift(f"k{n}", RNG.standard_normal(24), shift=s)
               for n, s in enumerate(shifts)]
    (group,) = group_identical_kernels(kernels)
    assert group.varying == varying
    assert [imm.value for imm, in group.immediates] == list(shifts)


def test_variable_identity_is_part_of_the_structure():
    """``let t = x[0] in y[0] = t + t`` differs from two lets of the same value used once
    each, although both print alike up to names."""
    def kernel(name: str, same: bool) -> Kernel:
        b = KernelBuilder(name)
        x, y = b.input("x", f32, (1,)), b.output("y", f32, (1,))
        t = Var("t", f32)
        u = t if same else Var("t", f32)
        body = Store(y, (IntImm(0),), t + u)
        inner = body if same else Let(u, x[0], body)
        return Kernel(name, tuple(b.params), Let(t, x[0], inner))

    groups = group_identical_kernels([kernel("a", True), kernel("b", False),
                                      kernel("c", True)])
    assert names(groups) == [["a", "c"], ["b"]]


def test_shared_kernels_compile_to_one_body_and_each_reads_its_own_constants():
    """Three same-shaped kernels: one ``.shared`` function in the IR, three entry points
    with their own names, each computing with its own weights."""
    scales = [RNG.standard_normal(24) for _ in range(3)]
    kernels = [scale_shift(f"k{n}", s, layer=f"l{n}") for n, s in enumerate(scales)]
    lowered = lower_kernels_to_llvm(kernels, JitEngine().codegen_options())
    text = str(lowered.ir_module)
    assert text.count('define internal void @"k0.shared"(') == 1
    assert "k1.shared" not in text and "k2.shared" not in text
    library = JitEngine().add_module(lowered)
    x = RNG.standard_normal(24).astype(np.float32)
    for n, scale in enumerate(scales):
        y = np.zeros(24, np.float32)
        library.get_function(f"k{n}")(x, y, threads=1)
        np.testing.assert_allclose(y, x * scale.astype(np.float32) + 1.0, rtol=1e-6)


def test_a_shared_body_takes_the_differing_immediates_as_arguments():
    """Kernels differing in their shift immediate share one body taking it as a float
    argument: each still adds its own shift."""
    shifts = (1.0, 2.5, -3.0)
    scales = [RNG.standard_normal(24) for _ in shifts]
    kernels = [scale_shift(f"k{n}", s, shift=t, layer=f"l{n}")
               for n, (s, t) in enumerate(zip(scales, shifts))]
    lowered = lower_kernels_to_llvm(kernels, JitEngine().codegen_options())
    text = str(lowered.ir_module)
    assert text.count('define internal void @"k0.shared"(') == 1
    assert 'float %"immediate0"' in text
    library = JitEngine().add_module(lowered)
    x = RNG.standard_normal(24).astype(np.float32)
    for n, (scale, shift) in enumerate(zip(scales, shifts)):
        y = np.zeros(24, np.float32)
        library.get_function(f"k{n}")(x, y, threads=1)
        np.testing.assert_allclose(y, x * scale.astype(np.float32) + np.float32(shift),
                                   rtol=1e-6)


def test_sharing_can_be_turned_off():
    kernels = [scale_shift(f"k{n}", RNG.standard_normal(24), layer=f"l{n}") for n in range(2)]
    text = str(lower_kernels_to_llvm(kernels, JitEngine().codegen_options(share_kernels=False))
               .ir_module)
    assert ".shared" not in text
