"""The cost of per-layer profiling (issue 7): a benchmark, not a test.

    python bench/bench_profile.py [--image 224] [--threads 1 2] [--rounds 15]

1. Builds ResNet-18 (stem conv 7x7/2 + max pool 3x3/2, four stages of two basic blocks,
   64-128-256-512 channels, GAP, FC 1000) from the seeded float builders of
   ``tests/models/builders.py``, quantizes it with NNCF (INT8, 3 random calibration
   samples) and saves the IR under ``bench/out/models/resnet18_int8_<image>/``.
2. For each thread count, compiles it once with ``lpjit.compile`` and builds the profiled
   entry point next to it (``lpjit.profiling.profiled_executable``: a clock read around
   every step), then times the plain entry point and the profiled one *interleaved*
   (single calls, the order alternating round by round).
3. Reports the minimum and median latency of both and the overhead ``profiled / plain - 1``
   from each (the issue asks for <= 5%).  On a busy machine the difference drowns in noise,
   so it also measures what the instrumentation adds, natively: the cost of one
   ``clock_gettime`` + store (a loop of a million reads in a JIT-compiled function), and
   the bound ``(steps + 1) * that cost / plain latency``.  Writes
   ``bench/out/bench_profile.json``.

The machine is shared: run it when it is otherwise idle, and trust ratios more than times.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import openvino as ov
from models import builders, nncf_models
from openvino import opset13 as ops

import lpjit
from lpjit.profiling import profiled_executable

OUT = ROOT / "bench" / "out"


def resnet18(image: int = 224, classes: int = 1000, seed: int = 0) -> ov.Model:
    """ResNet-18 (He et al. 2016, torchvision layout) from the test builders' blocks."""
    init = builders._Init(seed)
    param = builders._image(1, 3, image)
    x = builders._relu(builders._conv(param.output(0), init, 64, 7, 2, "stem/conv"),
                       "stem/relu")
    x = builders._named(ops.max_pool(x, [2, 2], [1, 1], [1, 1], [1, 1], [3, 3]),
                        "stem/maxpool")
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = builders._basic_block(x, init, width, stride, f"layer{stage + 1}.{block}")
    axes = builders._const(np.array([2, 3], np.int64), "gap/axes")
    x = builders._named(ops.reduce_mean(x, axes, True), "gap")
    return builders._finish(builders._head(x, init, classes, False), param, "resnet18")


def build(image: int) -> Path:
    """The INT8 ResNet-18 IR (built once, reused by later runs)."""
    xml = OUT / "models" / f"resnet18_int8_{image}" / "model.xml"
    if not xml.exists():
        xml.parent.mkdir(parents=True, exist_ok=True)
        quantized = nncf_models.quantize(resnet18(image), samples=3)
        ov.save_model(quantized, xml, compress_to_fp16=False)
    return xml


def clock_read_ns(reads: int = 1_000_000) -> float:
    """Nanoseconds per ``clock_gettime(CLOCK_MONOTONIC)`` + 64-bit store, as the profiled
    entry point does them: a JIT-compiled loop of ``reads`` reads."""
    import ctypes

    from llvmlite import ir

    from lpjit.pipeline import jit_engine

    i32, i64, ptr = ir.IntType(32), ir.IntType(64), ir.PointerType()
    module = ir.Module("clock_bench")
    clock = ir.Function(module, ir.FunctionType(i32, [i32, ptr]), "clock_gettime")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64, ptr]), "clock_loop")
    count, sink = fn.args
    entry, body, done = (fn.append_basic_block(n) for n in ("entry", "body", "done"))
    builder = ir.IRBuilder(entry)
    now = builder.alloca(ir.LiteralStructType([i64, i64]))
    builder.branch(body)
    builder.position_at_end(body)
    index = builder.phi(i64)
    index.add_incoming(ir.Constant(i64, 0), entry)
    builder.call(clock, [ir.Constant(i32, 1), now])
    builder.store(builder.load(now, typ=i64), sink)
    following = builder.add(index, ir.Constant(i64, 1))
    index.add_incoming(following, body)
    builder.cbranch(builder.icmp_signed("<", following, count), body, done)
    builder.position_at_end(done)
    builder.ret_void()
    library = jit_engine().add_module(module)
    run = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(
        library.function_address("clock_loop"))
    out = np.zeros(1, np.int64)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        run(reads, out.ctypes.data)
        best = min(best, (time.perf_counter() - start) / reads)
    return best * 1e9


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int
                ) -> dict[str, list[float]]:
    """Seconds of single calls of each contender, round-robin (the order alternating)."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for run in contenders.values():
        run()
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            start = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def measure(xml: Path, threads: int, rounds: int, clock_ns: float) -> dict:
    """Plain vs profiled entry point of one compile at ``threads``."""
    started = time.perf_counter()
    compiled = lpjit.compile(xml, threads=threads)
    compile_seconds = time.perf_counter() - started
    profiled = profiled_executable(compiled)
    shape = compiled.inputs[0].shape
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    plain_out = compiled.executable.run([x])
    profiled_out, _ = profiled.run_profiled([x])
    assert all(np.array_equal(a, b) for a, b in zip(plain_out, profiled_out))
    samples = interleaved({"plain": lambda: compiled.executable.run([x]),
                           "profiled": lambda: profiled.run_profiled([x])}, rounds)
    plain, prof = samples["plain"], samples["profiled"]
    steps = len(compiled.program.steps)
    return {"threads": threads, "steps": steps, "compile_s": compile_seconds,
            "plain_min_ms": min(plain) * 1e3, "profiled_min_ms": min(prof) * 1e3,
            "plain_median_ms": statistics.median(plain) * 1e3,
            "profiled_median_ms": statistics.median(prof) * 1e3,
            "overhead_min": min(prof) / min(plain) - 1,
            "overhead_median": statistics.median(prof) / statistics.median(plain) - 1,
            "clock_read_ns": clock_ns,
            "overhead_bound": (steps + 1) * clock_ns * 1e-9 / min(plain)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=int, default=224, help="input resolution (224)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=60,
                        help="single calls of each entry point (60)")
    parser.add_argument("--out", type=Path, default=OUT / "bench_profile.json")
    args = parser.parse_args()
    xml = build(args.image)
    clock_ns = clock_read_ns()
    results = [measure(xml, threads, args.rounds, clock_ns) for threads in args.threads]
    print(f"ResNet-18 INT8 {args.image}x{args.image} ({xml}); one clock read + store: "
          f"{clock_ns:.1f} ns")
    print(f"{'threads':>7} {'steps':>5} {'plain min/median':>20} {'profiled min/median':>20} "
          f"{'overhead min/median':>20} {'bound':>7} {'compile':>8}")
    for r in results:
        print(f"{r['threads']:>7} {r['steps']:>5} "
              f"{r['plain_min_ms']:>8.3f}/{r['plain_median_ms']:<8.3f}ms "
              f"{r['profiled_min_ms']:>8.3f}/{r['profiled_median_ms']:<8.3f}ms "
              f"{r['overhead_min'] * 100:>8.2f}%/{r['overhead_median'] * 100:<7.2f}% "
              f"{r['overhead_bound'] * 100:>6.3f}% {r['compile_s']:>7.1f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": "resnet18_int8", "image": args.image,
                                    "machine": platform.processor() or platform.machine(),
                                    "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
