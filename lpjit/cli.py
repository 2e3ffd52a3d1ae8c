"""The ``lpjit`` command line.

Subcommands:
  demo      profile + precision report + compare on the bundled INT8 example, in one go
  info      summarise an IR file: inputs, outputs, op counts, constant bytes
  profile   compile a model, time it, and show where the time goes layer by layer
  compare   layer-by-layer error of the compiled model against the float reference
  run       run a model on inputs from .npy files and write the outputs to an .npz
  compile   compile a model; ``--dump DIR`` writes every intermediate form
  export    compile a model ahead of time: lib<name>.so, <name>.h (C API), <name>.json
  cache     the on-disk compile cache: ``cache info`` (where, how big), ``cache clear``

Errors are printed as one line (``lpjit: error: ...``) with a non-zero exit code (1: the
model or the inputs, 2: the command line, 3: an internal error); ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from lpjit.cli_progress import CompileProgress
from lpjit.errors import InputError, LpjitError

EXAMPLES = Path(__file__).parent / "examples"
DEMO_MODEL = EXAMPLES / "resnet_tiny_int8.xml"
EXIT_MODEL, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lpjit: error: <what> (see 'lpjit run --help')``."""

    def error(self, message: str) -> NoReturn:
        print(f"lpjit: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


# -- argument types ------------------------------------------------------------------------


def _parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
        if not sep or not name or any(d < 0 for d in shape):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad --shape '{text}'; expected NAME=D0,D1,... with D >= 0, e.g. "
            "input=1,3,224,224") from None
    return name, shape


def _parse_input(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"bad --input '{text}'; expected NAME=file.npy")
    return name, Path(path)


def _positive(kind: type) -> Any:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"'{text}' is not a positive {kind.__name__}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


# -- parser --------------------------------------------------------------------------------

DESCRIPTION = """\
lpjit compiles OpenVINO Low Precision IR (model.xml + model.bin, with FakeQuantize and
compressed weights) to native x86-64 code with llvmlite; quantized Convolution / MatMul
layers run as exact integer code.  Start with `lpjit demo`."""

EPILOG = """\
exit codes: 0 success, 1 bad model or inputs, 2 bad command line, 3 internal error.
Each command has its own --help."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lpjit", description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo_parser(sub)
    _info_parser(sub)
    _profile_parser(sub)
    _compare_parser(sub)
    _run_parser(sub)
    _compile_parser(sub)
    _export_parser(sub)
    _cache_parser(sub)
    return parser


def _command(sub, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=description)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show Python tracebacks on errors")
    return parser


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="path to model.xml (model.bin beside it)")
    parser.add_argument("--shape", type=_parse_shape, action="append", default=[],
                        metavar="NAME=D0,D1,...",
                        help="concrete shape for an input with dynamic dimensions, e.g. "
                             "input=1,3,224,224 (repeatable)")


def _add_compile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive(int), default=None, metavar="N",
                        help=f"threads per inference (default: every core, "
                             f"{os.cpu_count() or 1} here)")
    parser.add_argument("--float", action="store_true",
                        help="run every FakeQuantize as float arithmetic instead of "
                             "compiling quantized layers to integer code")
    parser.add_argument("--progress", action="store_true",
                        help="show compile progress on stderr even when it is not a terminal")


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=_parse_input, action="append", default=[],
                        metavar="NAME=file.npy",
                        help="input NAME from a .npy file (repeatable); inputs not given are "
                             "seeded random numbers")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the random inputs (default 0): floats uniform in "
                             "[-1, 1), integers in [0, 8)")


def _demo_parser(sub) -> None:
    demo = _command(sub, "demo", "profile + precision report + compare on the bundled example",
                    "Compile the bundled INT8 ResNet-like IR, profile it layer by layer, show "
                    "which layers run in integer code, and compare it with the float "
                    "reference: lpjit end to end in one command.")
    demo.add_argument("--model", type=Path, default=DEMO_MODEL,
                      help="IR to use instead of the bundled example")
    demo.add_argument("--threads", type=_positive(int), default=1, metavar="N",
                      help="threads per inference (default 1: the example is small)")
    demo.add_argument("--time", type=_positive(float), default=0.3, metavar="S",
                      help="seconds of timed inferences (default 0.3)")
    demo.add_argument("--progress", action="store_true",
                      help="show compile progress on stderr even when it is not a terminal")


def _info_parser(sub) -> None:
    info = _command(sub, "info", "summarise an IR file",
                    "Inputs, outputs, op counts and constant bytes of an IR, without "
                    "compiling it.")
    _add_model(info)


def _profile_parser(sub) -> None:
    profile = _command(
        sub, "profile", "compile, time and profile a model layer by layer",
        "Compile the model, then time inferences through an instrumented entry point (a "
        "clock read around every step; normal runs do not have it).  Prints compile time, "
        "first-inference time, latency min/median/p90/max, throughput and a table with one "
        "row per executed step: IR layers (a fused group lists its layers), kernel, precision "
        "read -> written (x integer weights), time, share and achieved GOP/s.")
    _add_model(profile)
    _add_compile_options(profile)
    _add_inputs(profile)
    budget = profile.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=_positive(int), metavar="N",
                        help="time exactly N inferences")
    budget.add_argument("--time", type=_positive(float), default=1.0, metavar="S",
                        help="time inferences for S seconds, at least 3 (default 1.0)")
    profile.add_argument("--trace", type=Path, metavar="OUT.json",
                         help="write a Chrome trace-event file (Perfetto, chrome://tracing): "
                              "one span per layer per iteration")
    profile.add_argument("--json", action="store_true",
                         help="print everything as one JSON document instead of text")


def _compare_parser(sub) -> None:
    compare = _command(
        sub, "compare", "per-layer error of the compiled model against the float reference",
        "Compile the model with every FakeQuantize output on an activation exposed, run it "
        "and the float reference (lpjit.reference: FakeQuantize executed as-is) on the same "
        "inputs, and report per layer: max error (absolute and in quantization steps), the "
        "share of elements off by >= 1 step, SQNR in dB; then the first layer whose error "
        "grows beyond its inputs'.")
    _add_model(compare)
    _add_compile_options(compare)
    _add_inputs(compare)
    compare.add_argument("--json", action="store_true",
                         help="print the comparison as JSON instead of text")


def _run_parser(sub) -> None:
    run = _command(sub, "run", "run a model on .npy inputs, write outputs to .npz",
                   "Compile the model and run it once (or run the numpy reference executor "
                   "with --reference); print each output's shape and summary, optionally "
                   "save them.")
    _add_model(run)
    _add_compile_options(run)
    _add_inputs(run)
    run.add_argument("--output", type=Path, metavar="OUT.npz",
                     help="write the outputs, by output name, to this .npz file")
    run.add_argument("--reference", action="store_true",
                     help="run the numpy reference executor (FakeQuantize as-is) instead of "
                          "compiling")


def _compile_parser(sub) -> None:
    comp = _command(
        sub, "compile", "compile a model; --dump writes every intermediate form",
        "Compile the model and print the time of each pipeline step, the memory and "
        "precision summaries.  With --dump DIR, also write the graph after each pass, the "
        "loop IR after lowering and after vectorization, the schedule decisions, the memory "
        "plan, the LLVM IR (as generated and optimised), the assembly, and the precision "
        "report with the reason for every FakeQuantize left in float.")
    _add_model(comp)
    _add_compile_options(comp)
    comp.add_argument("--dump", type=Path, metavar="DIR",
                      help="directory for the intermediate forms (created if needed)")


def _export_parser(sub) -> None:
    export = _command(
        sub, "export", "compile a model into a shared library with a C header",
        "Compile the model ahead of time into OUT/lib<name>.so (the code, the weights and a "
        "small C runtime; it needs only libc/libm, plus libgomp when threaded), the header "
        "OUT/<name>.h and the manifest OUT/<name>.json.  Load it from Python with "
        "lpjit.load_library(OUT).")
    _add_model(export)
    export.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="directory for the library, header and manifest (created)")
    export.add_argument("--name", help="library name, a C identifier (default: the model's)")
    export.add_argument("--target", default="native",
                        help="native (default), x86-64-v2, x86-64-v3 (AVX2), x86-64-v4 "
                             "(AVX-512), or aarch64-linux-gnu (object file and C sources)")
    export.add_argument("--threads", type=_positive(int), default=None, metavar="N",
                        help="1: serial code; N: an OpenMP team of N (default: parallel code, "
                             "the OpenMP default team at run time)")
    export.add_argument("--float", action="store_true",
                        help="run every FakeQuantize as float arithmetic")
    export.add_argument("--progress", action="store_true",
                        help="show compile progress on stderr even when it is not a terminal")


def _cache_parser(sub) -> None:
    cache = _command(
        sub, "cache", "show or clear the on-disk compile cache",
        "lpjit.compile stores the machine code of every model it compiles in a cache "
        "directory ($LPJIT_CACHE_DIR, else $XDG_CACHE_HOME/lpjit, else ~/.cache/lpjit) and "
        "loads it instead of compiling the same IR with the same options again.  "
        "`lpjit run` uses it; profile, compile and compare always compile.")
    cache.add_argument("action", choices=("info", "clear"),
                       help="info: directory, entries and size; clear: remove every entry")
    cache.add_argument("--dir", type=Path, default=None, metavar="DIR",
                       help="the cache directory (default: as lpjit.compile chooses it)")


# -- shared steps --------------------------------------------------------------------------


def _read(model: Path, shapes: Sequence[tuple[str, tuple[int, ...]]] = ()):
    import lpjit

    if not model.is_file():
        raise InputError(f"model file '{model}' does not exist" if not model.exists()
                         else f"'{model}' is not a file; expected a model.xml")
    return lpjit.read_ir(model, shapes=dict(shapes) or None)


def _progress(args: argparse.Namespace, label: str) -> CompileProgress | None:
    if getattr(args, "progress", False) or sys.stderr.isatty():
        return CompileProgress(sys.stderr, label)
    return None


def _compile(graph, args: argparse.Namespace, *, dump_dir: Path | None = None,
             low_precision: bool | None = None, label: str = "compiling",
             cache: bool = False):
    """``lpjit.compile`` with the command's options and a progress display (``cache``: use
    the compile cache; the inspecting commands compile, to time and see every step)."""
    import lpjit

    if low_precision is None:
        low_precision = not getattr(args, "float", False)
    progress = _progress(args, label)
    with progress or contextlib.nullcontext():
        return lpjit.compile(graph, threads=args.threads, low_precision=low_precision,
                             dump_dir=dump_dir, progress=progress, cache=cache)


def _random_inputs(graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for p in graph.parameters:
        t = p.output.type
        if t.dtype.is_float:
            out[p.origin.name] = rng.uniform(-1, 1, t.shape).astype(t.dtype.numpy)
        else:
            out[p.origin.name] = rng.integers(0, 8, t.shape).astype(t.dtype.numpy)
    return out


def _inputs(graph, args: argparse.Namespace) -> list[np.ndarray]:
    """Model inputs in Parameter order: the --input files, seeded random for the rest."""
    inputs = _random_inputs(graph, args.seed)
    for name, path in args.input:
        try:
            parameter = graph.parameter(name)
        except KeyError as e:
            raise InputError(f"--input {name}=...: {e.args[0]}") from None
        if not path.is_file():
            raise InputError(f"input file '{path}' does not exist")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"input file '{path}' is not a .npy array: {e}") from None
        expected = parameter.output.type
        if tuple(array.shape) != tuple(expected.shape):
            raise InputError(f"input '{name}' from '{path}' has shape {list(array.shape)}; "
                             f"the model expects {expected}")
        inputs[parameter.origin.name] = array
    return [inputs[p.origin.name] for p in graph.parameters]


def _seed_of(args: argparse.Namespace) -> int | None:
    return None if args.input else args.seed


def _precision_line(compiled, low_precision: bool) -> str:
    from lpjit.compare import integer_layer_count

    count = integer_layer_count(compiled.graph)
    if count:
        return f"int8: {count} layers in integer code (the rest f32)"
    if not low_precision:
        return "f32 (--float: FakeQuantize runs as float arithmetic)"
    return "f32 (no layer became integer code; `lpjit compile --dump` says why)"


# -- commands ------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from lpjit.cli_format import describe_graph

    print(describe_graph(_read(args.model, args.shape)))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from lpjit import cli_format
    from lpjit.profiling import chrome_trace, profile_model

    start = time.perf_counter()
    graph = _read(args.model, args.shape)
    read_seconds = time.perf_counter() - start
    inputs = _inputs(graph, args)
    compiled = _compile(graph, args)
    profile = profile_model(compiled, inputs, iterations=args.iterations, seconds=args.time)
    if args.trace:
        args.trace.write_text(json.dumps(chrome_trace(profile)))
    if args.json:
        document = profile.to_json()
        document.update(read_s=read_seconds, target=compiled.target,
                        precision=_precision_line(compiled, not args.float),
                        trace=str(args.trace) if args.trace else None)
        print(json.dumps(document, indent=1))
        return 0
    print(f"model     {graph.name} ({args.model})")
    print(f"target    {compiled.target}")
    print(cli_format.compile_summary(compiled.timings().items(), read_seconds))
    print(cli_format.profile_header(profile, _precision_line(compiled, not args.float)))
    print()
    print(cli_format.layer_table(profile))
    if args.trace:
        print(f"\nwrote {args.trace}: {profile.iterations * len(profile.steps)} spans "
              "(open in https://ui.perfetto.dev or chrome://tracing)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from lpjit import cli_format
    from lpjit.compare import compare_model

    graph = _read(args.model, args.shape)
    inputs = _inputs(graph, args)
    progress = _progress(args, "compiling the observed variant")
    with progress or contextlib.nullcontext():
        comparison = compare_model(graph, inputs, low_precision=not args.float,
                                   threads=args.threads, progress=progress)
    if args.json:
        document = comparison.to_json()
        document["seed"] = _seed_of(args)
        print(json.dumps(document, indent=1))
        return 0
    print(cli_format.comparison_title(comparison, _seed_of(args)))
    print(cli_format.comparison_table(comparison))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lpjit import reference
    from lpjit.cli_format import seconds

    graph = _read(args.model, args.shape)
    inputs = _inputs(graph, args)
    if args.reference:
        start = time.perf_counter()
        outputs = reference.run(graph, inputs)
        how = "reference executor (numpy, FakeQuantize as-is)"
    else:
        compiled = _compile(graph, args, cache=True)
        start = time.perf_counter()
        outputs = list(compiled(*inputs))
        how = f"compiled, {_precision_line(compiled, not args.float)}"
    elapsed = time.perf_counter() - start
    named = {r.names[0]: out for r, out in zip(graph.results, outputs)}
    for name, out in named.items():
        summary = (f"  min={out.min():.6g} mean={out.mean():.6g} max={out.max():.6g}"
                   if out.size else "  (empty)")
        print(f"{name}: {out.dtype}{list(out.shape)}{summary}")
    print(f"ran in {seconds(elapsed)}: {how}")
    if args.output:
        np.savez(args.output, **named)
        print(f"wrote {args.output}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from lpjit import cli_format
    from lpjit.dump import write_dump

    start = time.perf_counter()
    graph = _read(args.model, args.shape)
    read_seconds = time.perf_counter() - start
    compiled = _compile(graph, args, dump_dir=args.dump)
    print(f"model     {graph.name} ({args.model})")
    print(f"target    {compiled.target}, threads {compiled.threads}")
    print(cli_format.compile_summary(compiled.timings().items(), read_seconds))
    print(f"code      {len(compiled.program.steps)} steps; {compiled.memory_report()}")
    print(f"precision {_precision_line(compiled, not args.float)}")
    if args.dump:
        files = write_dump(compiled, args.dump, graph)
        print(f"wrote {len(files)} files to {args.dump}:")
        width = max(len(path.name) for path, _ in files)
        for path, what in files:
            print(f"  {path.name:<{width}}  {what}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import lpjit

    graph = _read(args.model, args.shape)
    progress = _progress(args, "exporting")
    with progress or contextlib.nullcontext():
        done = lpjit.export(graph, args.output, name=args.name, target=args.target,
                            threads=args.threads, low_precision=not args.float,
                            progress=progress)
    print(f"model     {graph.name} ({args.model})")
    print(f"target    {done.target.describe()}, threads {done.manifest['threads'] or 'auto'}")
    if done.library is not None:
        print(f"library   {done.library} ({done.library_bytes} bytes, {done.seconds:.1f} s)")
        print(f"needs     {', '.join(done.needed)}")
    else:
        print(f"object    {done.object_file} and C sources; link them with:")
        print(f"          {done.manifest['link']}")
    print(f"header    {done.header}")
    print(f"manifest  {done.manifest_path}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from lpjit.cache import cache_for

    store = cache_for(args.dir if args.dir is not None else True, os.environ)
    if args.action == "clear":
        print(f"removed {store.clear()} entries from {store.directory}")
        return 0
    print(f"directory {store.directory}")
    print(f"entries   {len(store.entries())}, {store.size_bytes() / 2**20:.1f} MiB (limit "
          f"{store.max_bytes / 2**20:.0f} MiB)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lpjit.cli_demo import run_demo

    return run_demo(args)


COMMANDS = {"demo": cmd_demo, "info": cmd_info, "profile": cmd_profile,
            "compare": cmd_compare, "run": cmd_run, "compile": cmd_compile,
            "export": cmd_export, "cache": cmd_cache}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (errors print one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("lpjit: interrupted", file=sys.stderr)
        return 130
    except (LpjitError, OSError) as e:
        if args.debug:
            raise
        _error(str(e))
        return EXIT_MODEL
    except Exception as e:  # a bug: still one line, the traceback on request
        if args.debug:
            raise
        _error(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the "
               "traceback, and please report it)")
        return EXIT_INTERNAL


def _error(message: str) -> None:
    print("lpjit: error: " + " ".join(message.split()), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
