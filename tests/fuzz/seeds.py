"""The fuzz corpus: small valid IRs saved by OpenVINO (and NNCF) that the mutators start from.

Each seed is a tiny model (tensors of a few hundred elements, at most ~120 layers) so that a
mutated case reads and runs in milliseconds.  Together the seeds use every op family lpjit
reads: convolutions and pools, every activation, elementwise and comparison ops, shape
subgraphs and data movement, normalizations and reductions, Interpolate, attention,
FakeQuantize with compressed i8/u8/u4 weights (NNCF), f16-compressed constants, IR v10, plus
the IRs bundled in ``lpjit/examples``.

``build_corpus()`` saves every model with ``ov.save_model`` (or the v10 serializer) and returns
the files' bytes; building needs OpenVINO and NNCF, mutating and reading the seeds does not.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import (
    opset1,
    opset2,
    opset3,
    opset4,
    opset5,
    opset6,
    opset7,
    opset8,
    opset10,
    opset11,
    opset13,
)

from fuzz.mutations import Seed

EXAMPLES = Path(__file__).resolve().parents[2] / "lpjit" / "examples"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _f32(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def _i64(values: object) -> ov.Node:
    return opset1.constant(np.array(values, np.int64))


def _model(outputs: list[ov.Node], params: list[ov.Node], name: str) -> ov.Model:
    return ov.Model([opset1.result(o) for o in outputs], params, name)


def _param(shape: list[int], dtype: type = np.float32, name: str = "x") -> ov.Node:
    p = opset1.parameter(shape, dtype, name=name)
    p.output(0).set_names({name})
    return p


def cnn(seed: int = 0) -> ov.Model:
    """Convolution, depthwise GroupConvolution, bias Add, ReLU, Clamp, MaxPool-8, AvgPool,
    ReduceMean, Reshape, MatMul and SoftMax-8 on a 1x3x8x8 image."""
    rng = _rng(seed)
    x = _param([1, 3, 8, 8])
    y = opset1.convolution(x, opset1.constant(_f32(rng, 4, 3, 3, 3)), [1, 1], [1, 1], [1, 1],
                           [1, 1])
    y = opset1.relu(opset1.add(y, opset1.constant(_f32(rng, 1, 4, 1, 1))))
    y = opset1.group_convolution(y, opset1.constant(_f32(rng, 4, 1, 1, 3, 3)), [2, 2],
                                 [1, 1], [1, 1], [1, 1])
    y = opset1.clamp(y, 0.0, 6.0)
    y = opset8.max_pool(y, [1, 1], [1, 1], [0, 0], [0, 0], [2, 2], "floor", "same_upper").output(0)
    y = opset1.avg_pool(y, [1, 1], [1, 1], [1, 1], [3, 3], False)
    y = opset1.reduce_mean(y, _i64([2, 3]), True)
    y = opset1.reshape(y, _i64([1, -1]), False)
    y = opset1.matmul(y, opset1.constant(_f32(rng, 5, 4)), False, True)
    return _model([opset8.softmax(y, -1)], [x], "cnn")


def activations(seed: int = 1) -> ov.Model:
    """Every unary activation plus the binary elementwise ops, concatenated."""
    rng = _rng(seed)
    x = _param([2, 5])
    c = opset1.constant(_f32(rng, 2, 5) + 1.5)
    positive = opset1.add(opset1.abs(x), opset1.constant(np.float32(0.5)))
    branches = [
        opset1.sigmoid(x), opset1.tanh(x), opset1.exp(x), opset1.log(positive), opset1.erf(x),
        opset1.sqrt(positive), opset1.negative(x), opset1.floor(x), opset1.ceiling(x),
        opset7.gelu(x, "tanh"), opset2.gelu(x),
        opset4.swish(x), opset4.hswish(x), opset5.hsigmoid(x), opset4.mish(x),
        opset4.softplus(x), opset1.prelu(x, opset1.constant(np.float32([0.25]))),
        opset5.log_softmax(x, 1), opset1.softmax(x, 0), opset1.power(positive, c),
        opset1.divide(x, c), opset1.squared_difference(x, c), opset1.maximum(x, c),
        opset1.minimum(x, c), opset1.subtract(x, c), opset1.multiply(x, c),
    ]
    return _model([opset1.concat(branches, 0)], [x], "activations")


def shapes(seed: int = 2) -> ov.Model:
    """A ShapeOf -> Gather -> Concat -> Reshape subgraph and the data-movement ops."""
    rng = _rng(seed)
    x = _param([2, 3, 4])
    dims = opset3.shape_of(x, "i64")
    target = opset1.concat([opset8.gather(dims, _i64([2]), _i64(0)), _i64([-1])], 0)
    y = opset1.reshape(x, target, False)                                    # [4, 6]
    y = opset1.transpose(y, _i64([1, 0]))                                   # [6, 4]
    y = opset1.unsqueeze(y, _i64([0]))                                      # [1, 6, 4]
    a, b = opset1.split(y, _i64(1), 2).outputs()                            # [1, 3, 4] x 2
    c = opset1.variadic_split(y, _i64(2), _i64([1, 3])).output(1)           # [1, 6, 3]
    s = opset1.strided_slice(c, _i64([0, 1, 0]), _i64([1, 4, 3]), _i64([1, 1, 1]),
                             [0, 0, 0], [0, 0, 0])                          # [1, 3, 3]
    t = opset8.slice(a, _i64([0]), _i64([3]), _i64([1]), _i64([2]))         # [1, 3, 3]
    u = opset1.squeeze(opset1.add(s, t), _i64([0]))                         # [3, 3]
    v = opset3.broadcast(opset1.constant(_f32(rng, 3, 1)), _i64([3, 3]))
    w = opset1.tile(opset1.add(u, v), _i64([2, 1]))                        # [6, 3]
    p = opset1.pad(w, _i64([1, 0]), _i64([1, 1]), "constant",
                   opset1.constant(np.float32(0.5)))                         # [8, 4]
    q = opset1.reshape(p, _i64([1, 8, 2, 2]), False)
    q = opset1.depth_to_space(q, "blocks_first", 2)                         # [1, 2, 4, 4]
    q = opset3.shuffle_channels(q, 1, 2)
    g = opset7.gather(b, _i64([[0, 2], [1, 1]]), _i64(1))                    # [1, 2, 2, 4]
    return _model([q, g], [x], "shapes")


def norms(seed: int = 3) -> ov.Model:
    """MVN-6, NormalizeL2, BatchNormInference-5, every Reduce op and Interpolate-4/11."""
    rng = _rng(seed)
    x = _param([1, 2, 3, 4])
    y = opset6.mvn(x, _i64([2, 3]), True, 1e-5, "inside_sqrt")
    y = opset1.normalize_l2(y, _i64([1]), 1e-6, "add")
    y = opset5.batch_norm_inference(y, opset1.constant(_f32(rng, 2)),
                                    opset1.constant(_f32(rng, 2)),
                                    opset1.constant(_f32(rng, 2)),
                                    opset1.constant(np.abs(_f32(rng, 2)) + 0.5), 1e-5)
    reduced = [opset1.reduce_sum(y, _i64([3]), True), opset1.reduce_max(y, _i64([3]), True),
               opset1.reduce_min(y, _i64([3]), True), opset1.reduce_prod(y, _i64([3]), True),
               opset4.reduce_l2(y, _i64([-1]), True)]
    z = opset1.concat(reduced, 3)                                           # [1, 2, 3, 5]
    i4 = opset10.interpolate(z, _i64([6, 10]), opset1.constant(np.float32([2.0, 2.0])),
                             "linear", "scales", axes=_i64([2, 3]))
    i11 = opset11.interpolate(z, opset1.constant(np.float32([1.0, 1.5])), "nearest", "scales",
                              axes=_i64([2, 3]), nearest_mode="round_prefer_floor")
    return _model([i4, i11], [x], "norms")


def logic(seed: int = 4) -> ov.Model:
    """Comparisons, logical ops, Select and Convert on f32 and i32 inputs."""
    rng = _rng(seed)
    x = _param([3, 4])
    n = _param([3, 4], np.int32, "n")
    c = opset1.constant(_f32(rng, 1, 4))
    mask = opset1.logical_and(opset1.greater(x, c),
                              opset1.not_equal(n, opset1.constant(np.int32(3))))
    mask = opset1.logical_or(mask, opset1.less_equal(x, opset1.constant(np.float32(-0.5))))
    chosen = opset1.select(mask, x, opset1.convert(n, "f32"))
    flags = opset1.convert(opset1.equal(n, opset1.constant(np.int32(2))), "f32")
    return _model([chosen, flags, opset1.convert(opset1.greater_equal(x, c), "i32")], [x, n],
                  "logic")


def attention() -> ov.Model:
    """ScaledDotProductAttention-13 with a boolean mask and an explicit scale."""
    q, k, v = (_param([1, 2, 4, 8], name=n) for n in "qkv")
    mask = _param([4, 4], np.bool_, "mask")
    y = opset13.scaled_dot_product_attention(q, k, v, mask, opset1.constant(np.float32(0.3)))
    return _model([y], [q, k, v, mask], "attention")


def fake_quantize(seed: int = 6) -> ov.Model:
    """FakeQuantize on an activation and on f32 weights; i8 weights Convert -> Multiply."""
    rng = _rng(seed)
    x = _param([1, 4, 5])
    fq = opset1.fake_quantize(x, opset1.constant(np.float32(-1.0)),
                              opset1.constant(np.float32(1.0)),
                              opset1.constant(np.float32(-1.0)),
                              opset1.constant(np.float32(1.0)), 256)
    w = opset1.fake_quantize(opset1.constant(_f32(rng, 3, 5)),
                             opset1.constant(np.float32([[-0.9], [-0.8], [-0.7]])),
                             opset1.constant(np.float32([[0.9], [0.8], [0.7]])),
                             opset1.constant(np.float32([[-0.9], [-0.8], [-0.7]])),
                             opset1.constant(np.float32([[0.9], [0.8], [0.7]])), 255)
    y = opset1.matmul(fq, w, False, True)
    q = opset1.constant(rng.integers(-127, 128, (2, 3)).astype(np.int8))
    scale = opset1.constant(np.float32([[0.01], [0.02]]))
    w8 = opset1.multiply(opset1.convert(q, "f32"), scale)
    return _model([opset1.matmul(y, w8, False, True)], [x], "fake_quantize")


def packed_constants(seed: int = 7) -> ov.Model:
    """u4, i4 and u1 constants (Const -> Convert) and f16/bf16 ones, added to the input."""
    rng = _rng(seed)
    x = _param([2, 3])
    terms = []
    for element_type, values in ((ov.Type.u4, rng.integers(0, 16, 6)),
                                 (ov.Type.i4, rng.integers(-8, 8, 6)),
                                 (ov.Type.u1, rng.integers(0, 2, 6))):
        const = ov.op.Constant(element_type, ov.Shape([2, 3]), values.tolist())
        terms.append(opset1.convert(const, "f32"))
    for element_type in (ov.Type.f16, ov.Type.bf16):
        const = ov.op.Constant(element_type, ov.Shape([2, 3]), _f32(rng, 6).tolist())
        terms.append(opset1.convert(const, "f32"))
    y = x
    for term in terms:
        y = opset1.add(y, term)
    return _model([y], [x], "packed_constants")


def constant_folding(seed: int = 8) -> ov.Model:
    """Integer subgraphs on Consts that the reader folds (or must refuse to fold) while it
    builds the graph: pools, Tile, Pad, Gather, ReduceSum and Concat of i32/i64 constants."""
    rng = _rng(seed)
    x = _param([1, 1, 3, 3])
    c = opset1.constant(rng.integers(-9, 10, (1, 1, 5, 5)).astype(np.int32))
    pooled = opset1.max_pool(c, [1, 1], [0, 0], [0, 0], [3, 3], "floor", "valid")  # [1,1,3,3]
    tiled = opset1.tile(opset1.constant(np.int32([[1, 2, 3]])), _i64([3, 1]))     # [3, 3]
    padded = opset1.pad(opset1.constant(np.int32([[4]])), _i64([1, 1]), _i64([1, 1]),
                        "edge")                                                      # [3, 3]
    total = opset1.add(opset1.add(tiled, padded), opset1.reshape(pooled, _i64([3, 3]), False))
    row = opset8.gather(opset1.constant(np.int64([3, 1, 4, 1, 5])), _i64([0, 2, 4]), _i64(0))
    scale = opset1.reduce_sum(opset1.concat([row, _i64([2])], 0), _i64([0]), False)
    y = opset1.multiply(opset1.convert(total, "f32"),
                        opset1.convert(scale, "f32"))                                 # [3, 3]
    return _model([opset1.add(x, y)], [x], "constant_folding")


def _nncf_models() -> list[tuple[str, ov.Model]]:
    """An NNCF INT8 ResNet-like CNN and an NNCF INT4 group-wise weight-compressed MLP."""
    import nncf
    from models import builders, nncf_models

    nncf.set_log_level(logging.ERROR)
    int8 = nncf_models.quantize(builders.resnet_like((4, 8), image=8, classes=3), samples=2)
    int4 = nncf_models.compress_weights(builders.mlp((16, 8, 4)),
                                        nncf.CompressWeightsMode.INT4_ASYM, group_size=8)
    return [("nncf_int8_resnet", int8), ("nncf_int4_mlp", int4)]


BUILDERS: tuple[Callable[[], ov.Model], ...] = (cnn, activations, shapes, norms, logic,
                                                 attention, fake_quantize, packed_constants,
                                                 constant_folding)


def _saved(name: str, model: ov.Model, directory: Path, *, compress_to_fp16: bool = False,
           version: int = 11) -> Seed:
    import oracle

    xml = oracle.save(model, directory / name, compress_to_fp16=compress_to_fp16,
                      version=version)
    return Seed(name, xml.read_bytes(), xml.with_suffix(".bin").read_bytes())


def build_corpus(*, nncf: bool = True) -> list[Seed]:
    """Every seed IR, built and saved by OpenVINO (and NNCF unless ``nncf=False``)."""
    seeds: list[Seed] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for build in BUILDERS:
            seeds.append(_saved(build.__name__, build(), directory))
        seeds.append(_saved("cnn_fp16", cnn(), directory, compress_to_fp16=True))
        seeds.append(_saved("shapes_v10", shapes(), directory, version=10))
        if nncf:
            for name, model in _nncf_models():
                seeds.append(_saved(name, model, directory))
    for xml in sorted(EXAMPLES.glob("*.xml")):
        seeds.append(Seed(f"example_{xml.stem}", xml.read_bytes(),
                          xml.with_suffix(".bin").read_bytes()))
    return seeds
