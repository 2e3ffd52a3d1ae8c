"""lpjit fp32 vs OpenVINO fp32 on the float micro ops (issues 3 and 5): a benchmark, not a test.

    python bench/bench_float.py [--threads 1 2] [--rounds 15] [--out bench/out/bench_float.json]

1. Builds the micro models with the OpenVINO Python API (fixed seeds) and saves them as IR
   under ``bench/out/models/``: a 3x3 convolution 64->64 on 1x64x56x56 (pads 1), a MatMul
   128x768 by a constant 768x768, a depthwise 3x3 on 1x32x112x112 (pads 1).
2. Measures this core's fp32 FMA peak with a tiny loop-IR kernel (24 independent vector FMA
   chains, compiled by lpjit's LLVM path).
3. For each model and thread count: compiles it with ``lpjit.compile(xml, threads=N)`` and
   with OpenVINO (``INFERENCE_PRECISION_HINT: f32``, ``INFERENCE_NUM_THREADS: N``), checks
   that both agree, then times them *interleaved* (round after round, the order alternating,
   a 20 ms pause before each batch), each sample the mean of a batch of calls lasting ~20 ms.  Reports medians, the ratio
   lpjit / OpenVINO (< 1: lpjit is faster) of the medians and of the best samples (steadier
   on a loaded machine), GFLOP/s (of the medians) and the fraction of the measured peak.
4. Prints a table and writes everything as JSON.

The machine is shared: run it when it is otherwise idle, and trust ratios more than times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openvino as ov
from openvino import opset13 as ops

import lpjit

OUT = ROOT / "bench" / "out"
# Pause before each batch so that the other contender's worker threads (OpenMP or TBB, which
# spin for a while after a parallel region) have gone to sleep and do not steal a core.
SETTLE = 0.02


# -- models ------------------------------------------------------------------------------------

def conv3x3() -> tuple[ov.Model, float]:
    rng = np.random.default_rng(1)
    x = ops.parameter((1, 64, 56, 56), np.float32, name="x")
    w = ops.constant(rng.uniform(-0.1, 0.1, (64, 64, 3, 3)).astype(np.float32))
    conv = ops.convolution(x, w, (1, 1), (1, 1), (1, 1), (1, 1))
    return ov.Model([conv], [x], "conv3x3_64_56"), 2.0 * 64 * 64 * 9 * 56 * 56


def matmul() -> tuple[ov.Model, float]:
    rng = np.random.default_rng(2)
    a = ops.parameter((128, 768), np.float32, name="a")
    b = ops.constant(rng.uniform(-0.1, 0.1, (768, 768)).astype(np.float32))
    return ov.Model([ops.matmul(a, b, False, False)], [a], "matmul_128x768x768"), \
        2.0 * 128 * 768 * 768


def depthwise() -> tuple[ov.Model, float]:
    rng = np.random.default_rng(3)
    x = ops.parameter((1, 32, 112, 112), np.float32, name="x")
    w = ops.constant(rng.uniform(-0.5, 0.5, (32, 1, 1, 3, 3)).astype(np.float32))
    conv = ops.group_convolution(x, w, (1, 1), (1, 1), (1, 1), (1, 1))
    return ov.Model([conv], [x], "depthwise3x3_32_112"), 2.0 * 32 * 9 * 112 * 112


MODELS: dict[str, Callable[[], tuple[ov.Model, float]]] = {
    "conv3x3_64_56": conv3x3, "matmul_128x768x768": matmul, "depthwise3x3_32_112": depthwise}


def build_models(directory: Path) -> dict[str, tuple[Path, float]]:
    """Save every micro model as IR; returns name -> (xml path, FLOPs per inference)."""
    built = {}
    for name, make in MODELS.items():
        model, flops = make()
        xml = directory / name / "model.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, xml, compress_to_fp16=False)
        built[name] = (xml, flops)
    return built


# -- the machine's peak ------------------------------------------------------------------------

def fma_peak_gflops(seconds: float = 0.3) -> float:
    """fp32 FMA GFLOP/s of one core: 24 independent vector accumulators, no memory traffic."""
    from lowering import builder as lb
    from lowering.loop_ir import f32
    from lowering.target import Target
    from runtime.jit import JitEngine

    lanes, chains, steps = Target.host().f32_lanes, 24, 1 << 16
    b = lb.KernelBuilder("fma_peak")
    out = b.output("out", f32, (chains * lanes,))
    scale, shift = lb.broadcast(0.999, lanes, f32), lb.broadcast(1e-3, lanes, f32)
    accs = [b.local(lb.broadcast(float(k), lanes, f32), "acc") for k in range(chains)]
    with b.for_range(steps, name="step"):
        for acc in accs:
            b.assign(acc, lb.fma(acc, scale, shift))
    for k, acc in enumerate(accs):
        b.vstore(out, (k * lanes,), acc)
    kernel = JitEngine().compile_kernels([b.build()]).get_function("fma_peak")
    memory = np.zeros(chains * lanes, np.float32)
    flops = 2.0 * lanes * chains * steps
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        kernel(memory, threads=1)
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


# -- timing ------------------------------------------------------------------------------------

def batch_size(run: Callable[[], object], target: float = 0.02) -> int:
    """Calls per sample so that a sample lasts about ``target`` seconds."""
    run()
    start = time.perf_counter()
    run()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, int(target / once))


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int
                ) -> dict[str, tuple[float, float]]:
    """(median, best) seconds per call of each contender, sampled round-robin (the order
    alternating between rounds)."""
    sizes = {name: batch_size(run) for name, run in contenders.items()}
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            run, count = contenders[name], sizes[name]
            time.sleep(SETTLE)
            start = time.perf_counter()
            for _ in range(count):
                run()
            samples[name].append((time.perf_counter() - start) / count)
    return {name: (statistics.median(values), min(values)) for name, values in samples.items()}


def measure(name: str, xml: Path, flops: float, threads: int, rounds: int,
            peak: float) -> dict:
    """One model at one thread count: compile both, check agreement, time interleaved."""
    started = time.perf_counter()
    compiled = lpjit.compile(xml, threads=threads)
    compile_seconds = time.perf_counter() - started
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    request = core.compile_model(str(xml), "CPU", config).create_infer_request()
    shape = tuple(request.model_inputs[0].get_shape())
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    ours = np.asarray(compiled(x)[0])
    request.infer([x])
    theirs = request.get_output_tensor(0).data
    error = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
    times = interleaved({"lpjit": lambda: compiled(x), "openvino": lambda: request.infer([x])},
                        rounds)
    (lp, lp_best), (ref, ref_best) = times["lpjit"], times["openvino"]
    return {"model": name, "threads": threads, "lpjit_ms": lp * 1e3, "openvino_ms": ref * 1e3,
            "ratio": lp / ref, "lpjit_best_ms": lp_best * 1e3,
            "openvino_best_ms": ref_best * 1e3, "best_ratio": lp_best / ref_best,
            "lpjit_gflops": flops / lp / 1e9,
            "openvino_gflops": flops / ref / 1e9,
            "lpjit_peak_fraction": flops / lp / 1e9 / (peak * threads),
            "compile_s": compile_seconds, "relative_l2_vs_openvino": error}


def print_table(rows: list[dict], peak: float) -> None:
    print(f"fp32 FMA peak, one core: {peak:.1f} GFLOP/s")
    header = (f"{'model':<22}{'thr':>4}{'lpjit ms':>10}{'ov ms':>10}{'ratio':>8}"
              f"{'best':>7}{'lpjit GF/s':>12}{'ov GF/s':>10}{'%peak':>7}{'compile s':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<22}{r['threads']:>4}{r['lpjit_ms']:>10.3f}{r['openvino_ms']:>10.3f}"
              f"{r['ratio']:>8.2f}{r['best_ratio']:>7.2f}{r['lpjit_gflops']:>12.1f}"
              f"{r['openvino_gflops']:>10.1f}"
              f"{100 * r['lpjit_peak_fraction']:>6.0f}%{r['compile_s']:>11.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=OUT / "bench_float.json")
    args = parser.parse_args(argv)
    built = build_models(OUT / "models")
    peak = fma_peak_gflops()
    rows = [measure(name, *built[name], threads, args.rounds, peak)
            for threads in args.threads for name in args.models]
    print_table(rows, peak)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"host": {"cpu": platform.processor() or platform.machine(),
                       "cores": os.cpu_count(), "openvino": ov.__version__,
                       "fma_peak_gflops_one_core": peak},
              "rounds": args.rounds, "results": rows}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
