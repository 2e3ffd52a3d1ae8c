"""Programs emitted in parts and optimised on a worker thread while the rest is emitted.

Rule: splitting a program into parts changes when and where LLVM optimises it, never what it
computes: the parts, linked, give the same outputs as the single module, every kernel keeps
its name, and a part LLVM rejects is reported as the single module's error would be.
"""

from __future__ import annotations

import gc
import pickle
import weakref

import attrs
import llvmlite.binding as llvm
import lowp_graphs as lg
import numpy as np
import pytest
import test_checked_ops as checked_ops
import test_entry_point as chain

import lpjit
import lpjit.profiling
from lowering import codegen_llvm
from lowering.builder import KernelBuilder
from lowering.codegen_llvm import lower_kernels_to_llvm
from lowering.loop_ir import f32, vectorized
from lpjit.errors import CodegenError
from runtime.entry_point import ENTRY_POINT, lower_program_to_llvm
from runtime.executable import BufferSpec, Executable
from runtime.jit import CPUCodegen, JitEngine, TargetSpec
from runtime.memory import plan_memory

RNG = np.random.default_rng(5)


def scaled(name: str, n: int, scale: float):
    b = KernelBuilder(name)
    x, y = b.input("x", f32, (n,)), b.output("y", f32, (n,))
    with b.for_range(n, kind=vectorized(8)) as i:
        b.store(y, i, x[i] * scale + float(n))
    return b.build()


def test_kernels_emitted_in_parts_are_all_defined_once_and_declared_in_the_main_module():
    """With one-instruction parts, every kernel group is its own part and is handed to the
    sink as it is built; the main module declares them all and defines none."""
    kernels = [scaled(f"k{n}", 8 + n, 1.5 + n) for n in range(4)]
    received: list[str] = []
    lowered = lower_kernels_to_llvm(kernels, chain.engine().codegen_options(
        part_instructions=1), sink=lambda text, level: received.append(text))
    assert list(lowered.parts) == received and len(received) == 4
    for n, text in enumerate(received):
        llvm.parse_assembly(text).verify()
        assert f'define void @"k{n}"(' in text
    main = str(lowered.ir_module)
    assert all(f'declare void @"k{n}"(' in main for n in range(4))
    assert "define" not in main
    assert all(f'define void @"k{n}"(' in lowered.text() for n in range(4))


def test_parts_handed_on_are_freed_without_the_cyclic_collector(monkeypatch):
    """Once printed and handed to the sink, a part's module is released: reference counting
    frees it (the collector is off here), only the main module stays."""
    created: list[weakref.ref] = []
    new_module = codegen_llvm._new_module

    def recording(name, options):
        module = new_module(name, options)
        created.append(weakref.ref(module))
        return module

    monkeypatch.setattr(codegen_llvm, "_new_module", recording)
    kernels = [scaled(f"k{n}", 8 + n, 1.5 + n) for n in range(3)]
    enabled = gc.isenabled()
    gc.disable()
    try:
        lowered = lower_kernels_to_llvm(kernels, chain.engine().codegen_options(
            part_instructions=1), sink=lambda text, level: None)
        alive = [ref() for ref in created if ref() is not None]
    finally:
        if enabled:
            gc.enable()
    assert len(created) == 4 and alive == [lowered.ir_module]
    assert all(f'define void @"k{n}"(' in lowered.parts[n] for n in range(3))


def compiled_in_parts(program, background: bool | None):
    """``program`` lowered in one-instruction parts, optimised on a worker (``background``),
    here (False), or lowered without a sink as one module (None); its lowered module, library
    and executable."""
    plan = plan_memory(program)
    engine = chain.engine()
    worker = engine.parallel_compiler() if background else None
    sink = None if background is None else worker.submit if worker else \
        lambda text, level: None
    try:
        module = lower_program_to_llvm(program, plan, engine.codegen_options(
            part_instructions=1), sink=sink)
        library = engine.add_module(module.lowered, worker)
    finally:
        if worker is not None:
            worker.close()
    split = Executable(library.function_address(ENTRY_POINT),
                       [BufferSpec.of(b) for b in program.inputs],
                       [BufferSpec.of(b) for b in program.outputs],
                       plan.arena_bytes, 1, owner=library)
    return module.lowered, library, split


@pytest.mark.parametrize("background", [False, True])
def test_a_program_compiled_in_parts_computes_what_the_single_module_does(background):
    """The chain program's seven kernels (three bodies: k1..k5 are one shared kernel) in
    parts, optimised synchronously or on the worker, then linked: same output as the
    one-module compile, bit for bit."""
    program = chain.chain_program()
    lowered, library, split = compiled_in_parts(program, background)
    assert len(lowered.parts) == 3
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    (expected,) = chain.executable(program).run([x])
    (y,) = split.run([x])
    np.testing.assert_array_equal(y, expected)
    for n in range(7):
        assert library.function_address(f"k{n}")


def test_the_worker_reports_the_first_rejected_part_and_skips_the_rest():
    engine = chain.engine()
    worker = engine.parallel_compiler()
    good = str(lower_kernels_to_llvm([scaled("ok", 8, 2.0)], engine.codegen_options())
               .ir_module)
    worker.submit(good)
    worker.submit("define void @broken( {")
    worker.submit(good)
    with pytest.raises(CodegenError, match="^LLVM rejected the generated module"):
        worker.finish()
    worker.close()                            # idempotent


def test_the_workers_return_compiled_parts_in_submission_order():
    """Each part comes back as optimised bitcode defining its kernels, the names it needs
    from elsewhere, and (JIT) its object code."""
    engine = chain.engine()
    workers = engine.parallel_compiler()
    for n in range(3):
        workers.submit(str(lower_kernels_to_llvm([scaled(f"m{n}", 8, 2.0)],
                                                 engine.codegen_options()).ir_module))
    parts = workers.finish()
    defined = [[f.name for f in llvm.parse_bitcode(p.bitcode).functions
                if not f.is_declaration] for p in parts]
    assert defined == [["m0"], ["m1"], ["m2"]]
    assert all(p.object[:4] == b"\x7fELF" for p in parts)


def test_an_ahead_of_time_codegen_links_parts_instead_of_loading_objects():
    """A codegen for another CPU optimises parts in parallel but makes no objects: its
    library is one linked module, as for a program emitted whole."""
    codegen = CPUCodegen(TargetSpec.for_cpu("znver3"))
    workers = codegen.parallel_compiler()
    kernels = [scaled(f"k{n}", 8 + n, 1.5) for n in range(3)]
    lowered = lower_kernels_to_llvm(kernels, codegen.codegen_options(part_instructions=1),
                                    sink=workers.submit)
    library = codegen.add_module(lowered, workers)
    assert library.part_objects == ()
    assert [f.name for f in library.module.functions if not f.is_declaration] == \
        ["k0", "k1", "k2"]
    assert all(f"\nk{n}:" in library.assembly() for n in range(3))


def three_layers():
    """x[2, 48] -> MatMul 48 -> ReLU -> MatMul 48 -> ReLU -> MatMul 32 + x-independent bias."""
    x = lg.parameter((2, 48))
    hidden = lg.relu(lg.matmul(x.output, lg.f32(RNG.standard_normal((48, 48))), name="m1"),
                     name="r1")
    hidden = lg.relu(lg.matmul(hidden, lg.f32(RNG.standard_normal((48, 48))), name="m2"),
                     name="r2")
    out = lg.add(lg.matmul(hidden, lg.f32(RNG.standard_normal((32, 48))), name="m3"),
                 lg.f32(RNG.standard_normal(32)), name="bias")
    return lg.graph([x], out)


@pytest.fixture
def tiny_parts(monkeypatch):
    """``lpjit.compile`` emits every program in one-instruction parts."""
    options = JitEngine.codegen_options
    monkeypatch.setattr(JitEngine, "codegen_options",
                        lambda self, **kw: options(self, **{"part_instructions": 1, **kw}))


def test_a_model_compiled_in_parts_runs_caches_pickles_and_profiles(tiny_parts, tmp_path):
    """End to end through lpjit.compile: parts loaded as several objects give the single
    module's outputs; the cache stores and reloads every object; the model pickles (its
    parts linked into one library) and profiles by step."""
    graph = three_layers()
    x = RNG.uniform(-1, 1, (2, 48)).astype(np.float32)
    whole = lpjit.compile(graph, threads=1, cache=False)
    split = lpjit.compile(graph, threads=1, cache=tmp_path)
    assert len(split.compilation.library.part_objects) >= 2
    np.testing.assert_array_equal(split(x)[0], whole(x)[0])
    again = lpjit.compile(graph, threads=1, cache=tmp_path)
    assert again.from_cache
    assert len(list(again.cache_entry.glob("code.*.o"))) == \
        len(split.compilation.library.part_objects)
    np.testing.assert_array_equal(again(x)[0], whole(x)[0])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(split))(x)[0], whole(x)[0])
    profile = lpjit.profiling.profile_model(split, [x], iterations=3)
    assert len(profile.steps) == len(split.program.steps)
    assert "define" in split.llvm_ir() and "m1" in split.assembly()


def test_kernels_of_each_optimisation_level_fill_parts_of_their_own():
    """Kernels that need only LLVM's cleanup pipeline (``Kernel.optimization``) and those
    that need O3 never share a part: a small program holding both is emitted as one part of
    each, each handed on with its level, and the main module only declares them."""
    kernels = [attrs.evolve(scaled(f"k{n}", 8 + n, 1.5 + n),
                            optimization="cleanup" if n % 2 else "full") for n in range(4)]
    received: list[tuple[str, str]] = []
    lowered = lower_kernels_to_llvm(kernels, chain.engine().codegen_options(),
                                    sink=lambda text, level: received.append((text, level)))
    assert [level for _, level in received] == ["full", "cleanup"]
    assert lowered.part_levels == ("full", "cleanup")
    for text, level in received:
        defined = {n for n in range(4) if f'define void @"k{n}"(' in text}
        assert defined == ({0, 2} if level == "full" else {1, 3})
    assert "define" not in str(lowered.ir_module)


@pytest.mark.parametrize("background", [False, True, None])
def test_a_cleanup_part_computes_what_the_o3_part_does(background):
    """The chain program with every kernel marked "cleanup": optimised by the short pipeline,
    in parts (on the worker or here) or as one module, its output is the O3 compile's, bit
    for bit."""
    program = chain.chain_program()
    program = attrs.evolve(program, steps=[
        attrs.evolve(step, kernel=attrs.evolve(step.kernel, optimization="cleanup"))
        for step in program.steps])
    lowered, _, split = compiled_in_parts(program, background)
    if background is None:
        assert lowered.parts == () and lowered.level == "cleanup"
    else:
        assert lowered.part_levels == ("cleanup",) * 3 and lowered.level == "full"
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    (expected,) = chain.executable(program).run([x])
    np.testing.assert_array_equal(split.run([x])[0], expected)


def test_an_unknown_optimisation_level_is_refused():
    with pytest.raises(ValueError):
        attrs.evolve(scaled("k", 8, 1.0), optimization="O7")
    module = llvm.parse_assembly(str(lower_kernels_to_llvm(
        [scaled("k", 8, 1.0)], chain.engine().codegen_options()).ir_module))
    with pytest.raises(ValueError, match="unknown optimisation level 'O7'"):
        chain.engine().optimize(module, level="O7")


def test_integer_convolutions_and_matrix_products_ask_for_the_cleanup_pipeline():
    """The lowerings whose loop IR is the whole schedule (integer Convolution and MatMul,
    weights or activations) mark their kernels "cleanup"; the depthwise, Quantize and
    compressed-weight float kernels stay "full"."""
    model = lpjit.compile(checked_ops.lowp(), threads=1, cache=False)
    levels = [(step.anchor.name, step.kernel.optimization) for step in model.program.steps]
    assert levels == [("conv", "cleanup"), ("gconv", "full"), ("fq/quantize", "full"),
                      ("matmul", "cleanup"), ("fq_a/quantize", "full"),
                      ("fq_b/quantize", "full"), ("matmul", "cleanup"), ("matmul", "full"),
                      ("cconv", "full")]
