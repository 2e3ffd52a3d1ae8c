"""The machine's arithmetic peaks, measured with tiny llvmlite kernels (benchmarks only).

Each kernel is a loop of ``chains`` independent accumulator chains held in vector registers
(no memory traffic), one multiply-accumulate step per chain per iteration, so it runs at the
throughput of its instructions:

==============  ===========================================================  ============
name            one step of one chain                                        MACs / step
==============  ===========================================================  ============
``fp32_fma``    ``acc = fma(acc, a, b)`` (``vfmadd``)                         lanes
``int8_exact``  ``acc += vpmaddwd(acc as i16, b)``: exact 16-bit products      2 x lanes
``int8_sat``    ``acc += vpmaddwd(vpmaddubsw(acc as u8, b), 1)``: u8 x s8,     4 x lanes
                pairs saturated to 16 bits (what AVX2 runtimes use)
``int8_vnni``   ``acc = vpdpbusd(acc, acc as u8, b)`` (VNNI hosts only)        4 x lanes
==============  ===========================================================  ============

``lanes`` counts 32-bit lanes of the host's widest vector (8 on AVX2, 16 on AVX-512).  The
multiplicand comes from the accumulator itself so that LLVM cannot hoist the product out of
the loop; the sums wrap harmlessly.  Every kernel's assembly is checked: the instruction is
there, on the expected registers, at least ``chains`` times (on a VNNI host LLVM fuses
``vpmaddwd`` + ``vpaddd`` into ``vpdpwssd``: the same exact 16-bit products).  An op counts 2
per MAC (one multiply, one add), the convention of GOP/s figures.  A peak on ``threads``
cores runs one kernel per core at once (ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import re
import threading
import time
from collections.abc import Callable

import attrs
import numpy as np
from llvmlite import ir

I8, I16, I32, I64, F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64), \
    ir.FloatType()
CHAINS = 12

PeakStep = Callable[[ir.IRBuilder, ir.Module, ir.Value, int], ir.Value]


def _intrinsic(module: ir.Module, name: str, result: ir.Type, *args: ir.Type) -> ir.Function:
    try:
        return module.get_global(name)
    except KeyError:
        return ir.Function(module, ir.FunctionType(result, args), name)


def _fma_step(b: ir.IRBuilder, module: ir.Module, acc: ir.Value, lanes: int) -> ir.Value:
    vector = ir.VectorType(F32, lanes)
    fma = _intrinsic(module, f"llvm.fma.v{lanes}f32", vector, vector, vector, vector)
    scale = ir.Constant(vector, [0.999] * lanes)
    shift = ir.Constant(vector, [1e-3] * lanes)
    return b.call(fma, [acc, scale, shift])


_PMADDWD = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}
_PMADDUBSW = {8: "llvm.x86.avx2.pmadd.ub.sw", 16: "llvm.x86.avx512.pmaddubs.w.512"}
_VPDPBUSD = {8: "llvm.x86.avx512.vpdpbusd.256", 16: "llvm.x86.avx512.vpdpbusd.512"}


def _pmaddwd(b: ir.IRBuilder, module: ir.Module, x: ir.Value, y: ir.Value,
             lanes: int) -> ir.Value:
    i16s, i32s = ir.VectorType(I16, 2 * lanes), ir.VectorType(I32, lanes)
    return b.call(_intrinsic(module, _PMADDWD[lanes], i32s, i16s, i16s), [x, y])


def _exact_step(b: ir.IRBuilder, module: ir.Module, acc: ir.Value, lanes: int) -> ir.Value:
    i16s = ir.VectorType(I16, 2 * lanes)
    weights = ir.Constant(i16s, [(-1) ** k * (37 + k) for k in range(2 * lanes)])
    return b.add(acc, _pmaddwd(b, module, b.bitcast(acc, i16s), weights, lanes))


def _saturating_step(b: ir.IRBuilder, module: ir.Module, acc: ir.Value,
                     lanes: int) -> ir.Value:
    i8s, i16s = ir.VectorType(I8, 4 * lanes), ir.VectorType(I16, 2 * lanes)
    pmaddubsw = _intrinsic(module, _PMADDUBSW[lanes], i16s, i8s, i8s)
    weights = ir.Constant(i8s, [(-1) ** k * (17 + k % 64) for k in range(4 * lanes)])
    pairs = b.call(pmaddubsw, [b.bitcast(acc, i8s), weights])
    return b.add(acc, _pmaddwd(b, module, pairs, ir.Constant(i16s, [1] * (2 * lanes)), lanes))


def _vnni_step(b: ir.IRBuilder, module: ir.Module, acc: ir.Value, lanes: int) -> ir.Value:
    i8s, i32s = ir.VectorType(I8, 4 * lanes), ir.VectorType(I32, lanes)
    vpdpbusd = _intrinsic(module, _VPDPBUSD[lanes], i32s, i32s, i8s, i8s)
    weights = ir.Constant(i8s, [(-1) ** k * (17 + k % 64) for k in range(4 * lanes)])
    return b.call(vpdpbusd, [acc, b.bitcast(acc, i8s), weights])


@attrs.frozen
class PeakKernel:
    """One peak kernel: its step, accumulator element type, MACs per step per 32-bit lane,
    the instruction the assembly must show, and the CPU features it needs."""

    name: str
    step: PeakStep
    element: ir.Type
    macs_per_lane: int
    instruction: str
    needs: frozenset[str]


KERNELS: tuple[PeakKernel, ...] = (
    PeakKernel("fp32_fma", _fma_step, F32, 1, "vfmadd", frozenset({"fma"})),
    PeakKernel("int8_exact", _exact_step, I32, 2, "vpmaddwd|vpdpwssd", frozenset({"avx2"})),
    PeakKernel("int8_sat", _saturating_step, I32, 4, "vpmaddubsw", frozenset({"avx2"})),
    PeakKernel("int8_vnni", _vnni_step, I32, 4, "vpdpbusd",
               frozenset({"avx512vnni", "avx512vl"})),
)


def build_module(kernel: PeakKernel, lanes: int, chains: int = CHAINS) -> ir.Module:
    """``void <name>(ptr state, i64 steps)``: ``chains`` accumulators loaded from ``state``,
    ``steps`` iterations of the kernel's step on each, stored back."""
    module = ir.Module(kernel.name)
    vector = ir.VectorType(kernel.element, lanes)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType(), I64]),
                     kernel.name)
    state, steps = fn.args
    entry, body, done = (fn.append_basic_block(n) for n in ("entry", "body", "done"))
    b = ir.IRBuilder(entry)
    slots = [b.gep(state, [ir.Constant(I64, k)], source_etype=vector) for k in range(chains)]
    initial = [b.load(slot, typ=vector, align=4) for slot in slots]
    b.branch(body)
    b.position_at_end(body)
    index = b.phi(I64)
    index.add_incoming(ir.Constant(I64, 0), entry)
    accs = []
    for value in initial:
        phi = b.phi(vector)
        phi.add_incoming(value, entry)
        accs.append(phi)
    updated = [kernel.step(b, module, acc, lanes) for acc in accs]
    following = b.add(index, ir.Constant(I64, 1))
    index.add_incoming(following, body)
    for phi, value in zip(accs, updated):
        phi.add_incoming(value, body)
    b.cbranch(b.icmp_signed("<", following, steps), body, done)
    b.position_at_end(done)
    for slot, value in zip(slots, updated):
        b.store(value, slot, align=4)
    b.ret_void()
    return module


def check_assembly(text: str, kernel: PeakKernel, lanes: int, chains: int = CHAINS) -> str:
    """'' when the loop uses the kernel's instruction on ``lanes``-wide registers at least
    ``chains`` times; else what is wrong."""
    register = {8: "ymm", 16: "zmm"}[lanes]
    found = re.findall(rf"^\s*(?:{kernel.instruction})\w*\s+.*%{register}", text, re.MULTILINE)
    if len(found) < chains:
        return (f"{kernel.name}: {len(found)} {kernel.instruction} on {register} registers "
                f"in the assembly, expected >= {chains}")
    return ""


@attrs.frozen
class Peak:
    """A measured peak: GOP/s on one core and on ``threads`` cores, and the assembly check."""

    name: str
    lanes: int
    gops_one_core: float
    gops_all: dict[int, float]
    check: str

    def to_json(self) -> dict:
        return {"name": self.name, "vector_bits": self.lanes * 32,
                "gops_one_core": round(self.gops_one_core, 2),
                "gops_threads": {str(k): round(v, 2) for k, v in self.gops_all.items()},
                "assembly_check": self.check or "ok"}


@attrs.frozen(eq=False)
class PeakRunner:
    """One compiled peak kernel: ``run(threads)`` runs it once on ``threads`` cores at once
    (each on its own state) and returns the GOP/s of that run.  ``library`` keeps the code
    alive."""

    kernel: PeakKernel
    lanes: int
    steps: int
    ops: float                      # ops of one run on one core
    function: Callable[[int, int], None]
    check: str
    library: object

    @classmethod
    def compile(cls, kernel: PeakKernel, lanes: int) -> PeakRunner:
        """Compile ``kernel`` for the host, check its assembly, calibrate one run to about
        20 ms."""
        from lpjit.pipeline import jit_engine

        library = jit_engine().add_module(build_module(kernel, lanes))
        check = check_assembly(library.assembly(), kernel, lanes)
        function = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(
            library.function_address(kernel.name))
        steps = _calibrated_steps(function, lanes)
        ops = 2.0 * kernel.macs_per_lane * lanes * CHAINS * steps
        return cls(kernel, lanes, steps, ops, function, check, library)

    def run(self, threads: int) -> float:
        states = [np.ones(CHAINS * self.lanes * 4, np.uint8) for _ in range(threads)]
        workers = [threading.Thread(target=self.function, args=(s.ctypes.data, self.steps))
                   for s in states]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return threads * self.ops / (time.perf_counter() - start) / 1e9


def measure_peak(kernel: PeakKernel, lanes: int, threads: tuple[int, ...] = (1,),
                 seconds: float = 0.2) -> Peak:
    """Compile the kernel for the host, check its assembly, time it on 1 and on each
    ``threads`` count of cores (best of repeated runs)."""
    runner = PeakRunner.compile(kernel, lanes)
    counts = sorted({1, *threads})
    rates = {n: _best_rate(runner, n, seconds) for n in counts}
    return Peak(kernel.name, lanes, rates[1], {n: rates[n] for n in counts}, runner.check)


def _calibrated_steps(run, lanes: int, target: float = 0.02) -> int:
    """Loop iterations for one run of about ``target`` seconds (thread start-up is noise)."""
    state = np.ones(CHAINS * lanes * 4, np.uint8)
    steps = 1 << 14
    while True:
        start = time.perf_counter()
        run(state.ctypes.data, steps)
        elapsed = time.perf_counter() - start
        if elapsed >= target / 4 or steps >= 1 << 30:
            return max(1, int(steps * target / max(elapsed, 1e-9)))
        steps *= 4


def _best_rate(runner: PeakRunner, threads: int, seconds: float) -> float:
    """GOP/s of ``threads`` simultaneous runs, best of those that fit in ``seconds`` (at
    least three)."""
    best, runs, deadline = 0.0, 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline or runs < 3:
        best = max(best, runner.run(threads))
        runs += 1
    return best


KERNEL_BY_NAME = {k.name: k for k in KERNELS}


def measure_peaks(threads: tuple[int, ...] = (1,), seconds: float = 0.2) -> dict[str, Peak]:
    """Every kernel the host can run, at its widest vector width."""
    from lowering.target import Target

    host = Target.host()
    lanes = 16 if {"avx512f", "avx512bw"} <= host.features else 8
    return {k.name: measure_peak(k, lanes, threads, seconds) for k in KERNELS
            if k.needs <= host.features}
