"""The speed benchmark (issue 5): lpjit vs OpenVINO, int8 and fp32, on the same IR files.

    python -m bench.run                          # every model, 1 and 2 threads
    python -m bench.run --models resnet18,mlp --threads 1 --rounds 31
    python -m bench.run --quick --models tiny_cnn --threads 1     # a smoke run

1. Builds (or reuses) the benchmark IRs (``bench/catalog.py``) under ``--models-dir``.
2. Measures the machine's peaks with tiny llvmlite kernels (``bench/peaks.py``).
3. For each model and thread count compiles four contenders: lpjit int8 (the INT8 IR,
   ``lpjit.compile(xml, threads=n, low_precision=True)``), lpjit fp32 (the fp32 IR,
   ``low_precision=False``), OpenVINO int8 (the INT8 IR, ``INFERENCE_NUM_THREADS: n``, default
   low-precision transformations) and OpenVINO fp32 (the fp32 IR, also
   ``INFERENCE_PRECISION_HINT: f32``), each timed cold (lpjit into an emptied compile cache).
   A contender that fails to compile or run is reported with its error; the rest go on.
4. Times the four interleaved (``bench/measure.py``): medians, p10/p90, the ratio lpjit /
   OpenVINO (< 1: lpjit is faster), GOP/s from the graph's MACs and the fraction of the peak
   on as many cores (int8 against the best exact int8 peak kernel, VNNI included; fp32
   against FMA), and the relative L2 distance between lpjit's and OpenVINO's outputs.  The
   peak kernels run as two more contenders of the same interleaved rounds ("peak int8",
   "peak fp32"): the fraction divides the cell's median by the peak kernel's median measured
   beside it, under the same load (``peak_fraction``); the fraction of the best run at the
   start (step 2), in a quiet moment or not, is kept as ``peak_fraction_best``.
5. Compiles every lpjit cell again in a new process, from the compile cache (the cached
   compile time), then prints the tables and writes ``--out`` (JSON).

Benchmarks measure; they never assert a speed.  The machine is shared: run this when it is
otherwise idle, and trust ratios measured side by side more than times.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import catalog, peaks, report
from bench.measure import Settings, Timing, describe_error, interleaved

OUT = ROOT / "bench" / "out"
PRECISIONS = ("int8", "fp32")
RUNTIMES = ("lpjit", "openvino")


@attrs.frozen
class Contender:
    """One compiled cell: how to run it, its first output, compile seconds, or the error."""

    run: Callable[[], object] | None
    output: np.ndarray | None
    compile_seconds: float
    error: str = ""
    info: dict = attrs.field(factory=dict)


def compile_lpjit(xml: Path, precision: str, threads: int, inputs: list[np.ndarray],
                  cache_dir: Path) -> Contender:
    """``lpjit.compile`` (cold: the cell's key is not in the emptied cache), one call."""
    import lpjit

    start = time.perf_counter()
    try:
        compiled = lpjit.compile(xml, threads=threads, low_precision=precision == "int8",
                                 cache=cache_dir)
        seconds = time.perf_counter() - start
        output = np.asarray(compiled(*inputs)[0])
    except Exception as error:  # noqa: BLE001 - the cell reports it; the run goes on
        return Contender(None, None, time.perf_counter() - start, describe_error(error))
    info = {"from_cache": compiled.from_cache, "target": compiled.target,
            "integer_layers": len(compiled.precision_report().integer_layers()),
            "compile_steps_s": {k: round(v, 3) for k, v in compiled.timings().items()}}
    return Contender(lambda: compiled(*inputs), output, seconds, info=info)


def compile_openvino(xml: Path, precision: str, threads: int, inputs: list[np.ndarray],
                     int8_f32: bool = False) -> Contender:
    """The OpenVINO CPU plugin on the same file (fp32, and int8 with ``int8_f32``: precision
    hint f32), one call."""
    import openvino as ov

    config: dict = {"INFERENCE_NUM_THREADS": threads}
    if precision == "fp32" or int8_f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    start = time.perf_counter()
    try:
        model = ov.Core().compile_model(str(xml), "CPU", config)
        seconds = time.perf_counter() - start
        request = model.create_infer_request()
        output = np.array(request.infer(inputs)[0])
    except Exception as error:  # noqa: BLE001
        return Contender(None, None, time.perf_counter() - start, describe_error(error))
    hint = model.get_property("INFERENCE_PRECISION_HINT")
    info = {"inference_precision": hint.to_string() if hasattr(hint, "to_string") else str(hint)}
    return Contender(lambda: request.infer(inputs), output, seconds, info=info)


def measure_model(built: catalog.BuiltModel, threads: int, settings: Settings,
                  args: argparse.Namespace, peak_of: Callable[[str, int], float],
                  beside: Mapping[str, peaks.PeakRunner]) -> list[dict]:
    """The rows (one per precision) of one model at one thread count; ``beside``: the peak
    kernel of each precision, timed in the same rounds."""
    inputs = built.random_inputs()
    cells: dict[tuple[str, str], Contender] = {}
    for precision in PRECISIONS:
        xml = built.xml(precision)
        cells["lpjit", precision] = compile_lpjit(xml, precision, threads, inputs,
                                                  args.cache_dir)
        if not args.no_openvino:
            cells["openvino", precision] = compile_openvino(xml, precision, threads, inputs,
                                                            args.ov_int8_f32)
    runnable = {f"{runtime} {precision}": cell.run for (runtime, precision), cell in
                cells.items() if cell.run is not None}
    for precision, runner in beside.items():
        runnable[f"peak {precision}"] = functools.partial(runner.run, threads)
    timings = interleaved(runnable, settings)
    rows = []
    for precision in PRECISIONS:
        row = {"model": built.name, "threads": threads, "precision": precision,
               "macs": built.macs, "xml": str(built.xml(precision))}
        peak = peak_beside(beside.get(precision), timings.get(f"peak {precision}"), threads)
        if peak:
            row["peak_beside"] = {"kernel": beside[precision].kernel.name,
                                  "gops": round(peak, 2)}
        for runtime in RUNTIMES:
            if (runtime, precision) in cells:
                cell = cells[runtime, precision]
                timing = timings.get(f"{runtime} {precision}", Timing(error=cell.error))
                row[runtime] = _cell_json(cell, timing, built.macs, peak,
                                          peak_of(precision, threads))
        row.update(_comparison(cells, precision))
        rows.append(row)
    return rows


def peak_beside(runner: peaks.PeakRunner | None, timing: Timing | None,
                threads: int) -> float:
    """GOP/s of the peak kernel from its median run in the interleaved rounds (0 if none)."""
    if runner is None or timing is None or not timing.ok:
        return 0.0
    return threads * runner.ops / timing.median / 1e9


def _cell_json(cell: Contender, timing: Timing, macs: int, peak: float,
               best_peak: float) -> dict:
    entry = {"compile_s": round(cell.compile_seconds, 3), **timing.to_json(), **cell.info}
    if timing.ok:
        gops = 2 * macs / timing.median / 1e9
        entry.update(gops=round(gops, 2),
                     peak_fraction=round(gops / peak, 4) if peak else None,
                     peak_fraction_best=round(gops / best_peak, 4) if best_peak else None)
    return entry


def _comparison(cells: dict[tuple[str, str], Contender], precision: str) -> dict:
    """lpjit / OpenVINO ratio of the medians, and the outputs' relative L2 distance."""
    ours, theirs = cells.get(("lpjit", precision)), cells.get(("openvino", precision))
    if ours is None or theirs is None or ours.output is None or theirs.output is None:
        return {}
    a, b = ours.output.astype(np.float64), theirs.output.astype(np.float64)
    distance = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)) \
        if a.shape == b.shape else float("nan")
    return {"relative_l2_lpjit_vs_openvino": distance}


def add_ratios(rows: list[dict]) -> None:
    """``ratio`` = lpjit median / OpenVINO median, where both ran."""
    for row in rows:
        lp, ov_ = row.get("lpjit", {}), row.get("openvino", {})
        if "median_ms" in lp and "median_ms" in ov_:
            row["ratio"] = lp["median_ms"] / ov_["median_ms"]


PROBE = """
import json, sys, time
start = time.perf_counter()
import lpjit, lpjit.api
imported = time.perf_counter() - start
results = []
for xml, threads, low_precision in json.loads(sys.stdin.read()):
    start = time.perf_counter()
    try:
        compiled = lpjit.compile(xml, threads=threads, low_precision=low_precision,
                                 cache=sys.argv[1])
        results.append({"seconds": time.perf_counter() - start,
                        "from_cache": compiled.from_cache})
    except Exception as error:
        results.append({"error": f"{type(error).__name__}: {error}"})
print(json.dumps({"import_s": imported, "results": results}))
"""


def probe_cached_compiles(rows: list[dict], cache_dir: Path, attempts: int = 3) -> float | None:
    """Compile every lpjit cell that compiled again, in a new process, from the cache; adds
    ``compile_cached_s`` and ``cache_hit`` to the rows.  A miss means lpjit's sources changed
    since the cold compile (another edit on a shared machine: the key includes them); the
    miss stored the code for the new sources, so the cell is probed again in a newer process.
    Returns the new process's import time."""
    pending = [row for row in rows if "compile_steps_s" in row.get("lpjit", {})]
    import_seconds = None
    for _ in range(attempts):
        if not pending:
            break
        found = _probe(pending, cache_dir)
        if found is None:
            return import_seconds
        import_seconds = found["import_s"]
        for row, result in zip(pending, found["results"]):
            if "error" in result:
                row["lpjit"]["compile_cached_error"] = result["error"]
            else:
                row["lpjit"].update(compile_cached_s=round(result["seconds"], 3),
                                    cache_hit=result["from_cache"])
        pending = [row for row in pending if row["lpjit"].get("cache_hit") is False]
    return import_seconds


def _probe(cells: list[dict], cache_dir: Path) -> dict | None:
    jobs = [(row["xml"], row["threads"], row["precision"] == "int8") for row in cells]
    done = subprocess.run([sys.executable, "-c", PROBE, str(cache_dir)], input=json.dumps(jobs),
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        print(f"cached-compile probe failed: {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout.splitlines()[-1])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(catalog.DEFAULT_MODELS),
                        help=f"comma-separated, from: {', '.join(catalog.MODELS)} "
                             "(default: all but tiny_cnn)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (1,2)")
    parser.add_argument("--quick", action="store_true",
                        help="few short samples and short peak runs: a smoke run, not numbers")
    parser.add_argument("--rounds", type=int, default=None,
                        help="samples per contender (default 15; --quick 3)")
    parser.add_argument("--no-openvino", action="store_true",
                        help="time lpjit only (OpenVINO and NNCF still build the IRs)")
    parser.add_argument("--ov-int8-f32", action="store_true",
                        help="OpenVINO int8 with INFERENCE_PRECISION_HINT f32 too (default: the "
                             "plugin's choice for the layers left in float, bf16 on CPUs "
                             "with AVX512-BF16 or AMX)")
    parser.add_argument("--int8-weights", choices=("compressed", "fq"), default="compressed",
                        help="INT8 weights as NNCF stores them (i8 constants + scales, the "
                             "default) or as FakeQuantize on float weights")
    parser.add_argument("--models-dir", type=Path, default=OUT / "models")
    parser.add_argument("--cache-dir", type=Path, default=OUT / "cache",
                        help="lpjit compile cache of the run (emptied first: cold compiles)")
    parser.add_argument("--out", type=Path, default=OUT / "bench_run.json")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.replace(" ", ",").split(",") if m]
    unknown = [m for m in args.models if m not in catalog.MODELS]
    if unknown:
        parser.error(f"unknown models {', '.join(unknown)}; choose from "
                     f"{', '.join(catalog.MODELS)}")
    try:
        args.threads = tuple(int(t) for t in args.threads.replace(" ", ",").split(",") if t)
    except ValueError:
        parser.error(f"--threads {args.threads!r}: expected comma-separated integers")
    if not args.threads or min(args.threads) < 1:
        parser.error("--threads needs positive integers")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns the JSON document it writes."""
    args = parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    if args.rounds:
        settings = attrs.evolve(settings, rounds=args.rounds)
    import lpjit

    lpjit.clear_cache(args.cache_dir)
    built = [catalog.build(name, args.models_dir, args.int8_weights) for name in args.models]
    measured = peaks.measure_peaks(args.threads, seconds=0.05 if args.quick else 0.5)
    report.print_peaks(measured, args.threads)
    beside = {precision: peaks.PeakRunner.compile(peaks.KERNEL_BY_NAME[name],
                                                  measured[name].lanes)
              for precision, name in report.best_peak_kernels(measured).items()}
    rows: list[dict] = []
    for threads in args.threads:
        for model in built:
            print(f"measuring {model.name}, {threads} thread(s) ...", flush=True)
            rows += measure_model(model, threads, settings, args,
                                  report.peak_lookup(measured), beside)
    add_ratios(rows)
    import_seconds = probe_cached_compiles(rows, args.cache_dir)
    document = {"host": _host(), "settings": {**attrs.asdict(settings),
                                              "int8_weights": args.int8_weights,
                                              "openvino_int8_f32": args.ov_int8_f32},
                "peaks": [p.to_json() for p in measured.values()],
                "probe_import_s": import_seconds, "results": rows,
                "summary": report.summary(rows)}
    report.print_results(rows, document["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return document


def _host() -> dict:
    import openvino as ov

    import lpjit
    from lowering.target import Target

    host = Target.host()
    return {"cpu": host.cpu, "vector_bits": host.vector_bits, "vnni": host.has_vnni,
            "cores": os.cpu_count(), "machine": platform.machine(),
            "openvino": ov.__version__, "lpjit": lpjit.__version__,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


if __name__ == "__main__":
    main()
