"""The benchmark models: seeded float builders, their NNCF INT8 IRs, built once and cached.

Every model is built with the OpenVINO Python API from fixed seeds (the float builders of
``tests/models/builders.py``, the micro ops of ``bench/bench_float.py``, ResNet-18 of
``bench/bench_profile.py``), saved as an fp32 IR, quantized by NNCF (``nncf.quantize`` on seeded
random calibration inputs: FakeQuantize on the activations; the weights quantized too, stored
by NNCF 3.4 as i8 constants with a per-channel scale, or with ``weights="fq"`` as
FakeQuantize on the float weights) and saved as an INT8 IR:

    <directory>/<name>/fp32/model.xml    <directory>/<name>/int8/model.xml    recipe.json

``recipe.json`` records what was built (model, weights form, seeds, OpenVINO and NNCF
versions); a directory whose recipe matches is reused, anything else is rebuilt.
``count_macs`` counts the multiply-accumulates of Convolution, GroupConvolution and MatMul
(also activation x activation) in the fp32 graph, for GOP/s (2 ops per MAC).  Python code that
imports this module may ``import models`` (``tests/models``): the module puts the repository
and ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import openvino as ov
from models import builders
from openvino import opset13 as ops

RECIPE_VERSION = 1
SAMPLES = 3                  # NNCF calibration inputs (seeded uniform [-2, 2])


def mobilenet_v2(image: int = 224, classes: int = 1000, seed: int = 0) -> ov.Model:
    """MobileNetV2 (Sandler et al. 2018): stem conv 3x3/2 (32), the seven inverted-residual
    stages (t, c, n, s) below, conv 1x1 to 1280, global average pool, FC ``classes``."""
    init = builders._Init(seed)
    param = builders._image(1, 3, image)
    x = builders._relu6(builders._conv(param.output(0), init, 32, 3, 2, "stem/conv"),
                        "stem/relu6")
    stages = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))
    for stage, (expansion, width, repeats, stride) in enumerate(stages):
        for block in range(repeats):
            x = _inverted_residual(x, init, width, stride if block == 0 else 1, expansion,
                                   f"stage{stage}/b{block}")
    x = builders._relu6(builders._conv(x, init, 1280, 1, 1, "head/conv"), "head/relu6")
    size = x.get_partial_shape()[2].get_length()
    x = builders._named(ops.avg_pool(x, [1, 1], [0, 0], [0, 0], [size, size], True), "gap")
    return builders._finish(builders._head(x, init, classes, False), param, "mobilenet_v2")


def _inverted_residual(x, init, width: int, stride: int, expansion: int, name: str):
    """The builders' block; with expansion 1 (the first stage) there is no 1x1 expansion."""
    if expansion != 1:
        return builders._inverted_residual(x, init, width, stride, expansion, name)
    y = builders._relu6(builders._depthwise(x, init, stride, f"{name}/dw"), f"{name}/dw_relu6")
    return builders._conv(y, init, width, 1, 1, f"{name}/project")


def resnet18() -> ov.Model:
    from bench.bench_profile import resnet18 as build

    return build(224)


def _micro(name: str) -> Callable[[], ov.Model]:
    def build() -> ov.Model:
        from bench import bench_float

        return bench_float.MODELS[name]()[0]

    return build


@attrs.frozen
class BenchModel:
    """A benchmark model: how to build the float ``ov.Model``, and NNCF options."""

    name: str
    description: str
    build: Callable[[], ov.Model]
    transformer: bool = False

    def quantize(self, model: ov.Model, weights: str) -> ov.Model:
        """The NNCF INT8 model (``weights``: ``compressed`` i8 constants or ``fq``)."""
        import nncf
        from models import nncf_models

        extra = {"model_type": nncf.ModelType.TRANSFORMER} if self.transformer else {}
        return nncf_models.quantize(model, samples=SAMPLES,
                                    compress_weights=weights == "compressed", **extra)


MODELS: dict[str, BenchModel] = {m.name: m for m in (
    BenchModel("resnet18", "ResNet-18, 1x3x224x224", resnet18),
    BenchModel("mobilenet_v2", "MobileNetV2, 1x3x224x224", mobilenet_v2),
    BenchModel("bert2", "BERT-base-like encoder, 2 layers, hidden 768, 12 heads, seq 128",
               lambda: builders.bert_like(layers=2, hidden=768, heads=12, seq=128),
               transformer=True),
    BenchModel("mlp", "MLP 512-1024-1024-10, batch 1",
               lambda: builders.mlp((512, 1024, 1024, 10))),
    BenchModel("conv3x3_64_56", "Convolution 3x3 64->64 on 1x64x56x56", _micro("conv3x3_64_56")),
    BenchModel("matmul_128x768x768", "MatMul 128x768 by 768x768",
               _micro("matmul_128x768x768")),
    BenchModel("depthwise3x3_32_112", "depthwise 3x3 on 1x32x112x112",
               _micro("depthwise3x3_32_112")),
    BenchModel("tiny_cnn", "tiny ResNet-like CNN, 1x3x16x16 (smoke tests)",
               lambda: builders.resnet_like(channels=(8, 16), image=16)),
)}
DEFAULT_MODELS = tuple(name for name in MODELS if name != "tiny_cnn")


@attrs.frozen
class BuiltModel:
    """The IR files of one benchmark model, its multiply-accumulate count and its inputs
    (name, shape; all f32)."""

    name: str
    fp32: Path
    int8: Path
    macs: int
    inputs: tuple[tuple[str, tuple[int, ...]], ...]

    def xml(self, precision: str) -> Path:
        return self.int8 if precision == "int8" else self.fp32

    def random_inputs(self, seed: int = 0) -> list[np.ndarray]:
        """Seeded uniform [-2, 2] inputs, as the calibration data."""
        rng = np.random.default_rng(seed)
        return [rng.uniform(-2, 2, shape).astype(np.float32) for _, shape in self.inputs]


def recipe(model: BenchModel, weights: str) -> dict:
    """What a built directory must have been built from to be reused."""
    import nncf

    return {"version": RECIPE_VERSION, "model": model.name, "int8_weights": weights,
            "calibration_samples": SAMPLES, "seed": 0, "openvino": ov.__version__,
            "nncf": nncf.__version__}


def build(name: str, directory: Path, weights: str = "compressed",
          log: Callable[[str], None] = print) -> BuiltModel:
    """The fp32 and INT8 IRs of model ``name`` under ``directory/name`` (built if absent or
    built from another recipe)."""
    model = MODELS[name]
    home = directory / (name if weights == "compressed" else f"{name}-fqweights")
    fp32, int8, stamp = home / "fp32" / "model.xml", home / "int8" / "model.xml", \
        home / "recipe.json"
    wanted = recipe(model, weights)
    if not (fp32.exists() and int8.exists() and stamp.exists()
            and json.loads(stamp.read_text()) == wanted):
        log(f"building {name} ({model.description}) into {home}")
        float_model = model.build()
        for path in (fp32, int8):
            path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(float_model, fp32, compress_to_fp16=False)
        ov.save_model(model.quantize(float_model, weights), int8, compress_to_fp16=False)
        stamp.write_text(json.dumps(wanted, indent=1) + "\n")
    graph = _read(fp32)
    inputs = tuple((p.origin.name, tuple(p.shape)) for p in graph.parameters)
    return BuiltModel(name, fp32, int8, count_macs(graph), inputs)


def _read(xml: Path):
    import lpjit

    return lpjit.read_ir(xml)


def count_macs(graph) -> int:
    """Multiply-accumulates of every Convolution, GroupConvolution and MatMul of ``graph``
    (an ``lpjit`` Graph)."""
    from lpjit.ops.nn import Convolution, GroupConvolution, MatMul

    total = 0
    for node in graph.nodes:
        if isinstance(node, (Convolution, GroupConvolution)):
            weights = node.input_type(1).shape
            per_output = weights[1:] if isinstance(node, Convolution) else weights[2:]
            total += node.output_types[0].numel * int(np.prod(per_output))
        elif isinstance(node, MatMul):
            a = node.input_type(0).shape
            depth = a[0] if len(a) == 1 else (a[-2] if node.transpose_a else a[-1])
            total += node.output_types[0].numel * depth
    return total
