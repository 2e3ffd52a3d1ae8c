"""Ahead-of-time export (issue 6): export time and library size: a benchmark, not a test.

    python bench/bench_export.py [--image 224] [--targets native x86-64-v3] [--threads 1]

1. Builds (or reuses) the NNCF INT8 ResNet-18 IR of ``bench_profile.py`` under
   ``bench/out/models/resnet18_int8_<image>/`` and counts its int8 weight bytes (the i8/u8
   constants of the IR).
2. For each target, exports it with ``lpjit.export`` into ``bench/out/export/<target>/``,
   timing the whole call and each pipeline step (``progress`` callback).
3. Reports export seconds, ``.so`` size, the constants linked into it, the rest (code, C
   runtime, ELF overhead), the ratio to the int8 weight bytes (the issue's goal: <= 10 s and
   <= 1.2 x int8 weights + code), the ``NEEDED`` libraries, and checks that the library
   loads and agrees with ``lpjit.compile`` on one random input (max abs difference; exact for
   ``native``).  Writes ``bench/out/bench_export.json``.

The machine is shared: run it when it is otherwise idle; export time is mostly LLVM.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_profile import OUT, build

import lpjit
from lpjit.graph import Constant


def int8_weight_bytes(xml: Path) -> int:
    """Bytes of the i8/u8 constants of the IR (the quantized weights as stored)."""
    graph = lpjit.read_ir(xml)
    return sum(int(n.data.nbytes) for n in graph.nodes
               if isinstance(n, Constant) and n.element_type.name in ("i8", "u8"))


def export_once(xml: Path, target: str, threads: int | None) -> dict:
    """Export ``xml`` for ``target``: timings, sizes, dependencies."""
    steps: dict[str, float] = {}

    def progress(name: str, index: int, record) -> None:
        if record is not None:
            steps[name] = round(record.seconds, 3)

    out = OUT / "export" / target
    start = time.perf_counter()
    done = lpjit.export(xml, out, name="resnet18_int8", target=target, threads=threads,
                        progress=progress)
    seconds = time.perf_counter() - start
    constants = done.manifest["constant_bytes"]
    return {"target": target, "threads": threads, "export_s": round(seconds, 2),
            "steps_s": steps, "so_bytes": done.library_bytes, "constant_bytes": constants,
            "other_bytes": done.library_bytes - constants, "needed": list(done.needed),
            "required_cpu_features": len(done.manifest["required_cpu_features"]),
            "library": str(done.library)}


def agreement(xml: Path, library: str, threads: int | None) -> float:
    """Max abs difference between the library and the JIT on one seeded random input."""
    loaded = lpjit.load_library(library)
    compiled = lpjit.compile(xml, threads=threads)
    x = np.random.default_rng(0).uniform(-1, 1, loaded.inputs[0].shape).astype(np.float32)
    return float(np.max(np.abs(loaded(x)[0] - compiled(x)[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--targets", nargs="+", default=["native", "x86-64-v3"])
    parser.add_argument("--threads", type=int, default=None,
                        help="export threads (default: parallel, OpenMP team at run time)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the comparison with lpjit.compile (saves a compile)")
    parser.add_argument("--out", type=Path, default=OUT / "bench_export.json")
    args = parser.parse_args()

    xml = build(args.image)
    int8_bytes = int8_weight_bytes(xml)
    print(f"ResNet-18 INT8 {args.image}x{args.image} ({xml}): int8 weights {int8_bytes} B")
    results = []
    for target in args.targets:
        result = export_once(xml, target, args.threads)
        result["so_over_int8_weights"] = round(result["so_bytes"] / int8_bytes, 3)
        if not args.no_check:
            result["max_abs_diff_vs_jit"] = agreement(xml, result["library"], args.threads)
        results.append(result)
        print(f"{target:>10}: export {result['export_s']:6.2f} s, .so {result['so_bytes']:>10} B"
              f" = constants {result['constant_bytes']} + other {result['other_bytes']}"
              f" ({result['so_over_int8_weights']:.2f} x int8 weights); NEEDED "
              f"{', '.join(result['needed'])}")
        slowest = sorted(result["steps_s"].items(), key=lambda item: -item[1])[:4]
        print(" " * 12 + "slowest steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in slowest))
        if "max_abs_diff_vs_jit" in result:
            print(" " * 12 + f"max |library - jit| = {result['max_abs_diff_vs_jit']:.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": "resnet18_int8", "image": args.image,
                                    "int8_weight_bytes": int8_bytes, "results": results,
                                    "machine": platform.processor() or platform.machine(),
                                    "lpjit": lpjit.__version__}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
