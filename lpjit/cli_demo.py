"""``lpjit demo``: the bundled INT8 example compiled, profiled, explained and checked.

Four short sections: the model, its profile (latency and the per-layer table), the precision
report (which layers run in integer code, which FakeQuantize stay float and why) and the
comparison with the float reference.  If the INT8 compile fails, the demo says so and goes on
with the float compile, so that a new user still sees the rest working.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from lpjit import cli_format
from lpjit.cli import _compile, _precision_line, _progress, _random_inputs, _read
from lpjit.errors import LpjitError

SEED = 0
FLOAT_LIMIT = 4     # FakeQuantize left in float listed by the demo


def _section(title: str) -> None:
    print(f"\n== {title}")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo on ``args.model``; returns the exit code."""
    from lpjit.compare import compare_model
    from lpjit.profiling import profile_model

    start = time.perf_counter()
    graph = _read(args.model)
    inputs = list(_random_inputs(graph, SEED).values())
    print(f"lpjit demo: {args.model}")
    print(cli_format.describe_graph(graph))
    low_precision = True
    try:
        compiled = _compile(graph, args, low_precision=True)
    except LpjitError as error:
        print(f"INT8 compile failed: {' '.join(str(error).split())}")
        print("continuing with the float compile (FakeQuantize as float arithmetic)")
        low_precision = False
        compiled = _compile(graph, args, low_precision=False)

    _section(f"profile (lpjit profile {args.model})")
    profile = profile_model(compiled, inputs, seconds=args.time)
    print(f"target    {compiled.target}")
    print(cli_format.compile_summary(compiled.timings().items()))
    print(cli_format.profile_header(profile, _precision_line(compiled, low_precision)))
    print(cli_format.layer_table(profile))

    _section("precision report (compiled.precision_report())")
    if not low_precision:
        print("(of the float compile: the INT8 compile failed, see above)")
    print(cli_format.precision_summary(compiled.precision_report(), limit=FLOAT_LIMIT))

    _section(f"compare with the float reference (lpjit compare {args.model})")
    progress = _progress(args, "compiling the observed variant")
    with progress or contextlib.nullcontext():
        comparison = compare_model(graph, inputs, low_precision=low_precision,
                                   threads=args.threads, progress=progress)
    print(cli_format.comparison_title(comparison, SEED))
    print(cli_format.comparison_table(comparison))

    print(f"\ndemo done in {time.perf_counter() - start:.1f} s.  Next: lpjit profile MODEL "
          "--trace trace.json; lpjit compare MODEL; lpjit compile MODEL --dump DIR; "
          "lpjit --help")
    return 0
