"""JIT engine and code libraries: targets, IR/assembly/object output, calling, constants."""

from __future__ import annotations

import re

import llvmlite.binding as llvm
import numpy as np
import pytest

from lowering import builder as lb
from lowering import examples
from lowering.builder import KernelBuilder
from lowering.codegen_llvm import lower_kernels_to_llvm
from lowering.loop_ir import f32, i32, vectorized
from lpjit.errors import CodegenError, InputError
from runtime.jit import CodeLibrary, CPUCodegen, JitEngine, JitLibrary, TargetSpec

RNG = np.random.default_rng(41)


@pytest.fixture(scope="module")
def engine() -> JitEngine:
    return JitEngine()


def test_host_target_reports_cpu_name_and_features(engine):
    host = TargetSpec.host()
    assert host.cpu == llvm.get_host_cpu_name() and host.is_host
    assert {"avx2", "fma"} <= host.feature_set
    assert engine.codegen_options().features == host.feature_set
    assert TargetSpec.for_cpu("icelake-server").feature_set >= {"avx512vnni", "avx512bw"}
    assert "avx512f" not in TargetSpec.for_cpu("znver3").feature_set


@pytest.mark.parametrize("make", [
    lambda: examples.scale_bias_relu(13),
    lambda: examples.matmul_f32(5, 21, 3, RNG.standard_normal((3, 21)), RNG.standard_normal(21)),
    lambda: examples.matmul_u8i8(3, 13, 7, RNG.integers(-128, 128, (7, 13)), "pairs"),
    lambda: examples.requantize_u8(3, 11, RNG.uniform(0.1, 1, 11)),
])
def test_every_emitted_module_is_reparsed_and_verified_by_llvm(make, engine):
    """The text llvmlite prints parses back and passes LLVM's verifier."""
    kernel = make()
    lowered = lower_kernels_to_llvm([kernel], engine.codegen_options())
    module = llvm.parse_assembly(str(lowered.ir_module))
    module.verify()
    assert module.get_function(kernel.name) is not None


def test_library_exposes_ir_assembly_and_object_code(engine):
    library = engine.compile_kernels([examples.scale_bias_relu(16)])
    assert isinstance(library, JitLibrary)
    assert 'define void @"scale_bias_relu"(ptr noalias %"x"' in library.unoptimized_ir
    assert "define void @scale_bias_relu" in library.llvm_ir()
    assert "scale_bias_relu:" in library.assembly()
    assert library.object_code()[:4] == b"\x7fELF"


def test_a_foreign_cpu_compiles_for_inspection_only():
    library = CPUCodegen(TargetSpec.for_cpu("skylake-avx512")).compile_kernels(
        [examples.scale_bias_relu(16)])
    assert type(library) is CodeLibrary
    assert not hasattr(library, "get_function")


def test_kernel_function_checks_its_arguments(engine):
    function = engine.compile_kernels([examples.scale_bias_relu(8)]).get_function(
        "scale_bias_relu")
    x = np.ones(8, np.float32)
    with pytest.raises(InputError, match=r"kernel 'scale_bias_relu': expects 4 arguments "
                       r"\(x, bias, y, scale\), got 3"):
        function(x, x, x)
    with pytest.raises(InputError, match="buffer 'bias' expects dtype float32, got float64"):
        function(x, np.ones(8), x.copy(), 1.0)
    with pytest.raises(InputError, match=r"buffer 'y' expects shape \(8,\), got \(9,\)"):
        function(x, x, np.ones(9, np.float32), 1.0)
    with pytest.raises(InputError, match="buffer 'x' needs a C-contiguous array"):
        function(np.ones(16, np.float32)[::2], x, x.copy(), 1.0)
    with pytest.raises(CodegenError, match="module has no kernel 'nope'"):
        engine.compile_kernels([examples.scale_bias_relu(8)]).get_function("nope")


def test_aligned_buffers_refuse_misaligned_arrays(engine):
    b = KernelBuilder("aligned")
    x = b.input("x", f32, (8,), alignment=64)
    y = b.output("y", f32, (8,))
    with b.for_range(8, kind=vectorized(8)) as i:
        b.store(y, i, x[i] + 1.0)
    function = engine.compile_kernels([b.build()]).get_function("aligned")
    raw = np.zeros(40, np.float32)
    offset = (-raw.ctypes.data % 64) // 4
    aligned, misaligned = raw[offset:offset + 8], raw[offset + 1:offset + 9]
    out = np.zeros(8, np.float32)
    function(aligned, out)
    np.testing.assert_array_equal(out, 1.0)
    with pytest.raises(InputError, match="buffer 'x' must be 64-byte aligned"):
        function(misaligned, out)


def test_large_constants_bound_by_symbol_equal_embedded_ones(engine):
    """Weights above the embedding limit become external symbols bound to the numpy data."""
    weights = RNG.standard_normal((7, 24)).astype(np.float32)
    kernel = examples.matmul_f32(5, 24, 7, weights)
    a = RNG.standard_normal((5, 7)).astype(np.float32)
    results = []
    for limit in (1 << 20, 0):
        library = engine.compile_kernels([kernel], embed_constants_up_to=limit)
        symbols = library.lowered.symbols
        assert bool(symbols) == (limit == 0)
        out = np.zeros((5, 24), np.float32)
        library.get_function("matmul_f32")(a, out)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], a @ weights, rtol=1e-5, atol=1e-5)


def test_large_scratch_buffers_live_on_the_heap(engine):
    """A 1 MiB scratch buffer is allocated with aligned_alloc and freed."""
    n = 1 << 18
    b = KernelBuilder("big_scratch")
    x = b.input("x", i32, (n,))
    y = b.output("y", i32, (n,))
    tmp = b.allocate("tmp", i32, (n,))
    with b.for_range(n, kind=vectorized(8)) as i:
        b.store(tmp, i, x[i] * 3)
    with b.for_range(n, kind=vectorized(8)) as i:
        b.store(y, i, tmp[n - 1 - i] + lb.cast(lb.broadcast(1, 1, i32), i32))
    library = engine.compile_kernels([b.build()])
    assert "aligned_alloc" in library.unoptimized_ir
    x_data = RNG.integers(-1000, 1000, n, dtype=np.int32)
    out = np.zeros(n, np.int32)
    library.get_function("big_scratch")(x_data, out)
    np.testing.assert_array_equal(out, x_data[::-1] * 3 + 1)


def test_fast_math_flags_only_where_the_kernel_allows_them(engine):
    """No flags by default; a kernel listing ``contract`` gets it on its float arithmetic."""
    def kernel(flags):
        b = KernelBuilder("fm", fast_math=flags)
        x = b.input("x", f32, (8,))
        y = b.output("y", f32, (8,))
        with b.for_range(8, kind=vectorized(8)) as i:
            b.store(y, i, x[i] * 3.0 + 1.0)
        return b.build()

    plain = str(lower_kernels_to_llvm([kernel(())], engine.codegen_options()).ir_module)
    contracted = str(lower_kernels_to_llvm([kernel(("contract",))],
                                           engine.codegen_options()).ir_module)
    assert "fmul <8 x float>" in plain and "contract" not in plain
    assert "fmul contract <8 x float>" in contracted
    assert "fadd contract <8 x float>" in contracted


def test_raw_llvm_modules_compile_and_expose_addresses(engine):
    """``add_module`` takes any llvmlite module; its functions are reachable by address."""
    import ctypes

    from llvmlite import ir

    module = ir.Module("raw")
    i64 = ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(i64, [i64, i64]), "muladd7")
    builder = ir.IRBuilder(fn.append_basic_block())
    builder.ret(builder.add(builder.mul(*fn.args), ir.Constant(i64, 7)))
    library = engine.add_module(module)
    muladd = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)(
        library.function_address("muladd7"))
    assert muladd(6, 7) == 49
    with pytest.raises(CodegenError, match="get_function needs a library built from loop-IR"):
        library.get_function("muladd7")
    with pytest.raises(CodegenError, match="LLVM rejected the generated module"):
        engine.add_module("define i32 @broken() { ret i64 0 }")


def test_machine_code_emission_skips_the_post_ra_list_scheduler():
    """``LLVM_OPTIONS`` turns the post-RA list scheduler off (znver CPUs enable it): the pass
    returns at once, its time is a small fraction of instruction selection's (running, about
    a third).  Both times come from LLVM's pass timers: load on the machine can stretch
    either, so the best of three emissions counts."""
    codegen = CPUCodegen(TargetSpec.for_cpu("znver4"))
    library = codegen.compile_kernels([examples.matmul_f32(
        5, 21, 3, RNG.standard_normal((3, 21)), RNG.standard_normal(21))])
    ratios = []
    for _ in range(3):          # the best of three: a busy machine can stall either pass
        llvm.set_time_passes(True)
        try:
            codegen.target_machine.emit_object(library.module)
        finally:
            report = llvm.report_and_reset_timings()
            llvm.set_time_passes(False)
        seconds: dict[str, float] = {}          # wall clock, summed over pass instances
        for line in report.splitlines():
            if ")  " in line:
                name = re.sub(r" #\d+$", "", line.split(")  ")[-1].strip())
                seconds[name] = seconds.get(name, 0.0) + float(
                    line.split(")  ")[-2].split()[0])
        selection = seconds.get("X86 DAG->DAG Instruction Selection", 0.0)
        if selection > 0:       # a pass that took no time at all is left out of the report
            ratios.append(seconds.get("Post RA top-down list latency scheduler", 0.0)
                          / selection)
    assert ratios and min(ratios) * 10 < 1, ratios


def test_a_loop_the_schedule_left_rolled_stays_rolled(engine):
    """LLVM's unroller is off: a serial loop of four steps keeps one copy of its body."""
    b = KernelBuilder("rolled")
    x = b.input("x", f32, (4, 8))
    y = b.output("y", f32, (8,))
    with b.for_range(8, kind=vectorized(8), name="c") as c:
        acc = b.local(lb.broadcast(0.0, 1, f32), "acc")
        with b.for_range(4, name="k") as k:
            b.assign(acc, acc * 0.5 + x[k, c])
        b.store(y, c, acc)
    library = engine.compile_kernels([b.build()])
    assert library.llvm_ir().count("fmul <8 x float>") == 1
    data = RNG.standard_normal((4, 8)).astype(np.float32)
    out = np.zeros(8, np.float32)
    library.get_function("rolled")(data, out)
    expected = np.zeros(8, np.float32)
    for row in data:
        expected = expected * np.float32(0.5) + row
    np.testing.assert_array_equal(out, expected)
