"""Build the bundled example IRs that ``lpjit demo`` runs (``lpjit/examples/``).

    python tools/make_example.py            # (re)write lpjit/examples/resnet_tiny_*.xml/.bin
    python tools/make_example.py --check    # rebuild in a temporary directory, compare bytes

The example is ``tests/models/builders.resnet_like`` at test size (channels 16/32, 3x32x32
input, 10 classes, SoftMax head), seed 0:

* ``resnet_tiny_fp32``: the float model, f32 weights (``compress_to_fp16=False``);
* ``resnet_tiny_int8``: the same model quantized by NNCF (``nncf.quantize``, defaults: preset
  PERFORMANCE, first-layer overflow fix, i8 weights ``Const(i8) -> Convert -> Multiply``),
  calibrated on 5 seeded uniform random inputs in [-2, 2].

Needs the test extras (``pip install -e '.[test]'``: OpenVINO and NNCF).  Each file is checked
to load and run in OpenVINO before it is reported.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "lpjit" / "examples"
NAMES = ("resnet_tiny_fp32", "resnet_tiny_int8")
MAX_BIN_BYTES = 200_000

sys.path.insert(0, str(ROOT / "tests"))

import numpy as np
import openvino as ov
from models import builders, nncf_models


def build_float() -> ov.Model:
    """The float example network (deterministic: seed 0)."""
    return builders.resnet_like(channels=(16, 32), image=32, classes=10, softmax=True, seed=0)


def write_examples(directory: Path) -> list[Path]:
    """Write both example IRs into ``directory``; returns the .xml paths."""
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = directory / f"{NAMES[0]}.xml"
    ov.save_model(build_float(), fp32, compress_to_fp16=False)
    int8 = directory / f"{NAMES[1]}.xml"
    ov.save_model(nncf_models.quantize(build_float(), samples=5, seed=0), int8,
                  compress_to_fp16=False)
    return [fp32, int8]


def smoke_test(xml: Path) -> str:
    """Run ``xml`` once in OpenVINO (f32); returns a one-line description."""
    core = ov.Core()
    model = core.read_model(str(xml))
    shape = tuple(model.inputs[0].get_shape())
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    probs = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})([x])[0]
    size = xml.with_suffix(".bin").stat().st_size
    if size > MAX_BIN_BYTES:
        raise SystemExit(f"{xml.with_suffix('.bin')} is {size} bytes (> {MAX_BIN_BYTES})")
    return f"{xml.name}: .bin {size} B, output {list(probs.shape)} sum {probs.sum():.4f}"


def check(directory: Path) -> int:
    """Rebuild into a temporary directory; 0 when every file is byte-identical."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_examples(Path(tmp))
        stale = [f"{xml.stem}{suffix}" for xml in fresh for suffix in (".xml", ".bin")
                 if not filecmp.cmp(xml.with_suffix(suffix),
                                    directory / f"{xml.stem}{suffix}", shallow=False)]
    if stale:
        print(f"out of date in {directory}: {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"{directory}: up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=EXAMPLES)
    parser.add_argument("--check", action="store_true",
                        help="rebuild in a temporary directory and compare with --output-dir")
    args = parser.parse_args()
    if args.check:
        return check(args.output_dir)
    for xml in write_examples(args.output_dir):
        print(smoke_test(xml))
    return 0


if __name__ == "__main__":
    sys.exit(main())
