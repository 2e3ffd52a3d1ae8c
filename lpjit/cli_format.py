"""Text the ``lpjit`` command line prints: profiles, comparisons, precision reports, compile
summaries.  Pure functions from results to strings (the CLI prints them)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from lpjit.compare import Comparison
from lpjit.profiling import ModelProfile


def seconds(value: float) -> str:
    """``12.3 ms``, ``456 us``, ``1.23 s``: three significant figures in a readable unit."""
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} us"


def compile_summary(steps: Iterable[tuple[str, float]], read_seconds: float | None = None
                    ) -> str:
    """``compile 4.98 s (read_ir 0.03 s, fold_constants 1.2 ms, ...)``."""
    steps = list(steps)
    total = sum(s for _, s in steps) + (read_seconds or 0.0)
    parts = ([f"read_ir {seconds(read_seconds)}"] if read_seconds is not None else []) + [
        f"{name} {seconds(value)}" for name, value in steps]
    return f"compile   {seconds(total)} ({', '.join(parts)})"


def profile_header(profile: ModelProfile, precision: str) -> str:
    """Latency, throughput and first inference of a profile."""
    latency = profile.latency
    return "\n".join([
        f"precision {precision}",
        f"first inference {seconds(profile.first_inference)}",
        (f"latency   min {seconds(latency.min)}  median {seconds(latency.median)}  "
         f"p90 {seconds(latency.p90)}  max {seconds(latency.max)}  "
         f"({profile.iterations} iterations, {profile.threads} threads, instrumented)"),
        f"throughput {profile.throughput:.1f} inferences/s (one at a time)"])


def layer_table(profile: ModelProfile) -> str:
    """One row per executed step, in execution order: index, mean time, share, GOP/s, op,
    precision, kernel, layers; then the total."""
    rows = profile.rows()
    op_width = max([len("op"), *(len(r["op"]) for r in rows)])
    precision_width = max([len("precision"), *(len(r["precision"]) for r in rows)])
    kernel_width = max([len("kernel"), *(len(r["kernel"]) for r in rows)])
    lines = [(f"{'#':>3} {'time':>9} {'share':>6} {'GOP/s':>7}  {'op':<{op_width}}  "
              f"{'precision':<{precision_width}}  {'kernel':<{kernel_width}}  layers")]
    for r in rows:
        lines.append(f"{r['index']:>3} {r['time_us']:>7.1f}us {r['share'] * 100:>5.1f}% "
                     f"{r['gops']:>7.2f}  {r['op']:<{op_width}}  "
                     f"{r['precision']:<{precision_width}}  {r['kernel']:<{kernel_width}}  "
                     f"{' + '.join(r['layers'])}")
    total_us = sum(r["time_us"] for r in rows)
    total_ops = sum(r["ops"] for r in rows)
    gops = total_ops / total_us / 1e3 if total_us else 0.0
    lines.append(f"{'':>3} {total_us:>7.1f}us {100.0:>5.1f}% {gops:>7.2f}  total of "
                 f"{len(rows)} steps")
    return "\n".join(lines)


def _number(value: float | None, form: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, form)


def comparison_table(comparison: Comparison) -> str:
    """One row per observed value: levels, max error (abs and in steps), share of elements
    off by at least one step, SQNR; then where the error first grows."""
    head = (f"{'max err':>10} {'steps':>6} {'off>=1':>7} {'SQNR dB':>8}  layer")
    lines = [head]
    for error in comparison.layers:
        off = "-" if error.off_by_step is None else f"{error.off_by_step * 100:.2f}%"
        mark = "  <- error grows here" if error.grows else ""
        kind = " (output)" if error.kind == "output" else ""
        lines.append(f"{error.max_abs_error:>10.3g} {_number(error.max_error_steps, '.2f'):>6} "
                     f"{off:>7} {_number(error.sqnr_db, '.1f'):>8}  {error.layer}{kind}{mark}")
    if comparison.first_growth:
        lines.append(f"error grows first at {comparison.first_growth}: the first FakeQuantize "
                     "off by >= 1 step beyond every FakeQuantize upstream of it")
    else:
        lines.append("no FakeQuantize output is off by a whole step more than its inputs")
    return "\n".join(lines)


def comparison_title(comparison: Comparison, seed: int | None) -> str:
    """What was compared with what."""
    if comparison.mode == "int8":
        what = f"compiled INT8 ({comparison.integer_layers} integer layers)"
    elif comparison.low_precision:
        what = "compiled float (no layer became integer code; see the precision report)"
    else:
        what = "compiled float (--float: FakeQuantize as float arithmetic)"
    inputs = f"random inputs, seed {seed}" if seed is not None else "given inputs"
    return (f"compare   {what} vs the float reference (lpjit.reference, FakeQuantize as-is), "
            f"{inputs}")


def precision_summary(report, limit: int | None = None) -> str:
    """Integer layers, then every FakeQuantize / weight left in float with its reason."""
    integer = report.integer_layers()
    compressed = report.compressed_layers()
    lines = [f"{len(integer)} layers run in integer code"
             + (f", {len(compressed)} with compressed weights" if compressed else "")
             + f"; {len(report.kept_float)} FakeQuantize / weights left in float"]
    for layer in integer + compressed:
        lines.append(f"  {layer.origin.name}: {layer.kind} {layer.precision}")
    kept: Sequence = report.kept_float
    shown = kept if limit is None else kept[:limit]
    for entry in shown:
        lines.append(f"  float: {entry}")
    if len(shown) < len(kept):
        lines.append(f"  ... {len(kept) - len(shown)} more left in float "
                     "(lpjit compile --dump DIR writes them all)")
    return "\n".join(lines)


def describe_graph(graph) -> str:
    """Name, inputs, outputs, op counts (by IR type) and constant bytes by element type."""
    import collections

    from lpjit.graph import Constant, Parameter, Result

    counts = collections.Counter(n.origin.type for n in graph.nodes
                                 if not isinstance(n, (Constant, Parameter, Result)))
    weight_bytes: collections.Counter = collections.Counter()
    for n in graph.nodes:
        if isinstance(n, Constant):
            weight_bytes[n.element_type.name] += (n.output.type.numel * n.element_type.bits
                                                  + 7) // 8
    lines = [f"model   {graph.name}"]
    for p in graph.parameters:
        lines.append(f"input   {p.origin.name}: {p.output.type}")
    for r in graph.results:
        lines.append(f"output  {r.names[0]}: {r.inputs[0].type}")
    lines.append("ops     " + ", ".join(f"{k} x{v}" for k, v in counts.most_common()))
    lines.append("consts  " + ", ".join(f"{k}: {v} B" for k, v in sorted(weight_bytes.items())))
    return "\n".join(lines)
