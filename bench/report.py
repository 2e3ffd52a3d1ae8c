"""Tables and summary of ``bench/run.py`` (benchmarks only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from bench.peaks import Peak

EXACT_INT8 = ("int8_exact", "int8_vnni")     # exact products: vpmaddwd / vpdpwssd, vpdpbusd
# The peak kernels a precision is measured against: int8 the best exact one, fp32 FMA.
PEAK_KERNELS = {"int8": EXACT_INT8, "fp32": ("fp32_fma",)}


def best_peak_kernels(measured: Mapping[str, Peak]) -> dict[str, str]:
    """The peak kernel of each precision (of ``PEAK_KERNELS``, the best by its 1-core rate)."""
    out = {}
    for precision, names in PEAK_KERNELS.items():
        present = [n for n in names if n in measured]
        if present:
            out[precision] = max(present, key=lambda n: measured[n].gops_one_core)
    return out


def peak_lookup(measured: Mapping[str, Peak]) -> Callable[[str, int], float]:
    """``peak(precision, threads)`` in GOP/s: int8 against the best exact int8 kernel (VNNI
    when the host has it), fp32 against FMA; 0 when not measured."""

    def peak(precision: str, threads: int) -> float:
        return max((measured[n].gops_all.get(threads, 0.0) for n in PEAK_KERNELS[precision]
                    if n in measured), default=0.0)

    return peak


def print_peaks(measured: Mapping[str, Peak], threads: Sequence[int]) -> None:
    print("machine peaks (tiny llvmlite kernels, GOP/s; 2 ops per MAC):")
    for peak in measured.values():
        per = ", ".join(f"{n} thr {peak.gops_all[n]:.1f}" for n in sorted(peak.gops_all))
        check = "assembly ok" if not peak.check else f"ASSEMBLY CHECK FAILED: {peak.check}"
        print(f"  {peak.name:<11} {peak.lanes * 32}-bit  {per}   ({check})")


def _ms(cell: Mapping) -> str:
    if "median_ms" not in cell:
        return f"{'error':>23}"
    return f"{cell['median_ms']:>8.3f} [{cell['p10_ms']:.3f}-{cell['p90_ms']:.3f}]".rjust(23)


def _gops(cell: Mapping) -> str:
    if "gops" not in cell:
        return f"{'-':>13}"
    fraction = cell.get("peak_fraction")
    share = f"{100 * fraction:>3.0f}%" if fraction is not None else "   -"
    return f"{cell['gops']:>7.1f} {share}"


def _compile(cell: Mapping) -> str:
    cold = f"{cell['compile_s']:.2f}" if "compile_s" in cell else "-"
    cached = f"{cell['compile_cached_s']:.3f}" if "compile_cached_s" in cell else "-"
    return f"{cold:>7}/{cached:<6}"


def print_results(rows: Sequence[dict], summary: Mapping) -> None:
    """The main table, the errors, and the summary."""
    header = (f"{'model':<20}{'thr':>4} {'prec':<5}{'lpjit ms [p10-p90]':>24}"
              f"{'OpenVINO ms [p10-p90]':>24}{'ratio':>7}{'lpjit GOP/s':>14}"
              f"{'OV GOP/s':>14}  {'lpjit compile s':<15}{'rel L2':>8}")
    print()
    print("ratio = lpjit / OpenVINO median latency (< 1: lpjit faster); %: of the peak "
          "kernel's median on as many cores, timed in the same rounds; compile: cold / "
          "cached in a new process")
    print(header)
    print("-" * len(header))
    errors = []
    for row in rows:
        lp, ov = row.get("lpjit", {}), row.get("openvino", {})
        ratio = f"{row['ratio']:>7.2f}" if "ratio" in row else f"{'-':>7}"
        distance = row.get("relative_l2_lpjit_vs_openvino")
        distance = f"{distance:>8.1e}" if distance is not None else f"{'-':>8}"
        print(f"{row['model']:<20}{row['threads']:>4} {row['precision']:<5}{_ms(lp):>24}"
              f"{_ms(ov) if ov else '-':>24}{ratio}{_gops(lp):>14}{_gops(ov) if ov else '-':>14}"
              f"  {_compile(lp):<15}{distance}")
        for runtime, cell in (("lpjit", lp), ("OpenVINO", ov)):
            if "error" in cell:
                errors.append(f"  {runtime} {row['precision']} {row['model']} "
                              f"x{row['threads']}: {cell['error']}")
    if errors:
        print("errors:")
        print("\n".join(errors))
    hints = sorted({r["openvino"]["inference_precision"] for r in rows
                    if "inference_precision" in r.get("openvino", {})
                    and r["precision"] == "int8"})
    if hints:
        print(f"OpenVINO int8: layers left in float run in {', '.join(hints)} "
              "(INFERENCE_PRECISION_HINT; --ov-int8-f32 forces f32)")
    print_summary(summary)


def summary(rows: Sequence[dict]) -> dict:
    """Speed-ups the issue's acceptance reads: int8 over fp32 (same runtime and threads),
    the largest thread count over 1 thread (same runtime and precision)."""
    median = {(r["model"], r["threads"], r["precision"], runtime): r[runtime]["median_ms"]
              for r in rows for runtime in ("lpjit", "openvino")
              if "median_ms" in r.get(runtime, {})}
    int8_over_fp32, threads_over_one = {}, {}
    for (model, threads, precision, runtime), ms in median.items():
        if precision == "int8" and (model, threads, "fp32", runtime) in median:
            key = f"{runtime} {model} x{threads}"
            int8_over_fp32[key] = round(median[model, threads, "fp32", runtime] / ms, 3)
        if threads > 1 and (model, 1, precision, runtime) in median:
            key = f"{runtime} {precision} {model} x{threads}"
            threads_over_one[key] = round(median[model, 1, precision, runtime] / ms, 3)
    return {"int8_speedup_over_fp32": int8_over_fp32,
            "threads_speedup_over_1": threads_over_one}


def print_summary(summary: Mapping) -> None:
    for title, key in (("int8 speed-up over fp32 (fp32 ms / int8 ms)", "int8_speedup_over_fp32"),
                       ("speed-up over 1 thread", "threads_speedup_over_1")):
        if summary.get(key):
            print(f"{title}:")
            for name, value in summary[key].items():
                print(f"  {name:<44}{value:>7.2f}x")
