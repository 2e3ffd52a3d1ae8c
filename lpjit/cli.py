"""The ``lpjit`` command line.

Subcommands:
  demo     read the bundled INT8 example IR, show what is in it and run it
  info     summarise an IR file: inputs, outputs, op counts, low-precision content
  run      run an IR on inputs from .npy files and write the outputs to an .npz

Errors are printed as one line (``lpjit: error: ...``) with a non-zero exit code; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lpjit.errors import InputError, LpjitError

EXAMPLES = Path(__file__).parent / "examples"
DEMO_MODEL = EXAMPLES / "resnet_tiny_int8.xml"


def _parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, tuple(int(d) for d in dims.split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad --shape '{text}'; expected NAME=D0,D1,... e.g. input=1,3,224,224") from None


def _parse_input(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(
            f"bad --input '{text}'; expected NAME=file.npy")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpjit", description="JIT compiler for OpenVINO Low Precision IR (x86-64).")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the bundled INT8 example end to end")
    demo.add_argument("--model", type=Path, default=DEMO_MODEL,
                      help="IR to use instead of the bundled example")

    info = sub.add_parser("info", help="summarise an IR file")
    info.add_argument("model", type=Path, help="path to model.xml (model.bin beside it)")
    info.add_argument("--shape", type=_parse_shape, action="append", default=[],
                      help="concrete shape for a dynamic input: NAME=1,3,224,224 (repeatable)")

    run = sub.add_parser("run", help="run an IR on .npy inputs, write outputs to .npz")
    run.add_argument("model", type=Path, help="path to model.xml (model.bin beside it)")
    run.add_argument("--input", type=_parse_input, action="append", default=[],
                     help="NAME=file.npy (repeatable); inputs not given are random (seed 0)")
    run.add_argument("--output", type=Path, help="write outputs to this .npz file")
    run.add_argument("--shape", type=_parse_shape, action="append", default=[],
                     help="concrete shape for a dynamic input: NAME=1,3,224,224 (repeatable)")
    return parser


def _read(model: Path, shapes: Sequence[tuple[str, tuple[int, ...]]] = ()):
    import lpjit

    if not model.exists():
        raise InputError(f"model file '{model}' does not exist")
    return lpjit.read_ir(model, shapes=dict(shapes) or None)


def _describe(graph) -> str:
    from lpjit.graph import Constant, Parameter, Result

    counts = collections.Counter(n.origin.type for n in graph.nodes
                                 if not isinstance(n, (Constant, Parameter, Result)))
    weight_bytes = collections.Counter()
    for n in graph.nodes:
        if isinstance(n, Constant):
            weight_bytes[n.element_type.name] += (n.output.type.numel * n.element_type.bits + 7) // 8
    lines = [f"model   {graph.name}"]
    for p in graph.parameters:
        lines.append(f"input   {p.origin.name}: {p.output.type}")
    for r in graph.results:
        lines.append(f"output  {r.names[0]}: {r.inputs[0].type}")
    lines.append("ops     " + ", ".join(f"{k} x{v}" for k, v in counts.most_common()))
    lines.append("consts  " + ", ".join(f"{k}: {v} B" for k, v in sorted(weight_bytes.items())))
    return "\n".join(lines)


def _random_inputs(graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for p in graph.parameters:
        t = p.output.type
        if t.dtype.is_float:
            out[p.origin.name] = rng.uniform(-1, 1, t.shape).astype(t.dtype.numpy)
        else:
            out[p.origin.name] = rng.integers(0, 8, t.shape).astype(t.dtype.numpy)
    return out


def cmd_info(args: argparse.Namespace) -> int:
    print(_describe(_read(args.model, args.shape)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lpjit import reference

    graph = _read(args.model, args.shape)
    inputs = _random_inputs(graph)
    for name, path in args.input:
        if not path.exists():
            raise InputError(f"input file '{path}' does not exist")
        inputs[graph.parameter(name).origin.name] = np.load(path)
    outputs = reference.run(graph, inputs)
    named = {r.names[0]: out for r, out in zip(graph.results, outputs)}
    for name, out in named.items():
        print(f"{name}: {out.dtype}{list(out.shape)}  mean={out.mean():.6g}")
    if args.output:
        np.savez(args.output, **named)
        print(f"wrote {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lpjit import reference

    start = time.perf_counter()
    graph = _read(args.model)
    read_ms = (time.perf_counter() - start) * 1e3
    print(_describe(graph))
    print(f"read    {read_ms:.1f} ms")
    inputs = _random_inputs(graph)
    start = time.perf_counter()
    outputs = reference.run(graph, inputs)
    ref_ms = (time.perf_counter() - start) * 1e3
    for r, out in zip(graph.results, outputs):
        flat = out.reshape(-1)
        top = np.argsort(flat)[::-1][:5]
        print(f"result  {r.names[0]}: {out.dtype}{list(out.shape)} top-5 indices {top.tolist()}")
    print(f"reference executor (numpy, FakeQuantize as-is): {ref_ms:.1f} ms")
    return 0


COMMANDS = {"demo": cmd_demo, "info": cmd_info, "run": cmd_run}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (LpjitError, KeyError, OSError) as e:
        if args.debug:
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"lpjit: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
