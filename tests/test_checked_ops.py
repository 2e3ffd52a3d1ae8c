"""The op tests once in checked mode: every lowered op family, compiled with ``checks=True``,
computes bit for bit what the unchecked compile computes, and no bounds check fires.

One small model per family (a representative case per op: the per-op tests in
``tests/lowering`` cover the variants).  ``test_every_lowered_family_is_covered`` fails when a
family is added to ``LOWERINGS`` without a case here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import lowp_graphs as lg
import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import (
    opset1,
    opset3,
    opset4,
    opset5,
    opset6,
    opset8,
    opset10,
    opset11,
    opset12,
    opset13,
)

import lpjit
from lowering.bounds_checks import program_record, sites
from lowering.emitters import is_elementwise
from lowering.lower_graph import LOWERINGS
from lpjit import dtypes
from lpjit.graph import Constant, Graph, Parameter, Result

pytestmark = pytest.mark.oracle

RNG_SEED = 20


def _f32(*shape: int, seed: int = 0, scale: float = 1.0, shift: float = 0.0) -> ov.Node:
    rng = np.random.default_rng(seed)
    return opset1.constant((rng.uniform(-scale, scale, shape) + shift).astype(np.float32))


def _ints(values) -> ov.Node:
    return opset1.constant(np.asarray(values, np.int64))


def _param(*shape: int, name: str = "x", dtype=np.float32) -> ov.Node:
    return opset1.parameter(shape, dtype, name=name)


def _model(outputs, params) -> ov.Model:
    return ov.Model([o if isinstance(o, ov.Output) else o.output(0) for o in outputs], params)


# -- one model per family ----------------------------------------------------------------------

def elementwise() -> ov.Model:
    """Broadcast arithmetic, activations, comparison + select, power, PReLU, Convert, FQ."""
    x, y = _param(2, 3, 17), _param(3, 1, name="y")
    a = opset1.add(x, y)
    b = opset4.mish(opset1.multiply(a, _f32(17, seed=1)))
    c = opset1.select(opset1.greater(a, y), opset1.sigmoid(a), opset1.clamp(b, -0.5, 0.75))
    d = opset1.prelu(opset1.power(opset1.abs(c), _f32(1, seed=2)), _f32(3, seed=3))
    fq = opset1.fake_quantize(d, _f32(1, seed=4), _f32(1, seed=5, shift=4.0),
                              opset1.constant(np.float32(-1)), opset1.constant(np.float32(1)),
                              255)
    return _model([opset1.convert(opset1.multiply(fq, x), "i32"), c], [x, y])


def nn() -> ov.Model:
    """Convolution (padded, strided), depthwise GroupConvolution, MatMul."""
    x = _param(1, 4, 9, 9)
    conv = opset1.convolution(x, _f32(8, 4, 3, 3, seed=1), [1, 1], [1, 1], [1, 1], [1, 1])
    dw = opset1.group_convolution(conv, _f32(8, 1, 1, 3, 3, seed=2), [2, 2], [1, 0], [1, 1],
                                  [1, 1])
    flat = opset1.reshape(dw, _ints([4, -1]), False)
    mm = opset1.matmul(flat, _f32(7, flat.get_output_partial_shape(0)[1].get_length(), seed=3),
                       False, True)
    return _model([mm], [x])


def pooling() -> ov.Model:
    x = _param(1, 3, 11, 10)
    mp = opset8.max_pool(x, [1, 1], [1, 1], [0, 1], [1, 1], [3, 3], "ceil", "explicit",
                         "i32")
    ap = opset1.avg_pool(x, [2, 2], [1, 1], [1, 1], [3, 3], True, "floor")
    return _model([mp.output(0), mp.output(1), ap], [x])


def reductions() -> ov.Model:
    x = _param(2, 5, 7)
    return _model([opset1.reduce_sum(x, _ints([1]), False),
                   opset1.reduce_mean(x, _ints([0, 2]), True),
                   opset1.reduce_max(x, _ints([2]), False),
                   opset1.reduce_prod(x, _ints([0]), False),
                   opset4.reduce_l2(x, _ints([1, 2]), True)], [x])


def normalization() -> ov.Model:
    x = _param(2, 6, 5, 3)
    return _model([opset8.softmax(x, 1), opset5.log_softmax(x, -1),
                   opset6.mvn(x, _ints([2, 3]), True, 1e-5, "inside_sqrt"),
                   opset1.normalize_l2(x, _ints([1]), 1e-6, "add"),
                   opset5.batch_norm_inference(x, _f32(6, seed=1), _f32(6, seed=2),
                                               _f32(6, seed=3), _f32(6, seed=4, shift=2.0), 1e-3)],
                  [x])


def movement() -> ov.Model:
    """Views and copies: transpose, concat, gather, pad, slices, tile, broadcast, splits,
    depth-to-space, shuffle, reshape/squeeze/unsqueeze, shape_of."""
    x = _param(1, 4, 6, 5)
    t = opset1.transpose(x, _ints([0, 2, 3, 1]))
    cat = opset1.concat([t, opset1.multiply(t, t)], 3)
    g = opset8.gather(cat, _ints([[5, 0], [-1, 3]]), _ints(3), 0)
    pad = opset12.pad(x, _ints([0, 1, 0, 2]), _ints([0, 0, 1, 1]), "reflect")
    ss = opset1.strided_slice(pad, _ints([0, 1, 0, 0]), _ints([1, 5, 7, 9]),
                              _ints([1, 2, 1, 3]), [0, 0, 0, 0], [0, 0, 0, 0])
    sl = opset8.slice(x, _ints([3, 5]), _ints([0, -10]), _ints([-1, -2]), _ints([1, 2]))
    tile = opset1.tile(sl, _ints([1, 2, 1, 1]))
    bc = opset3.broadcast(opset1.reduce_sum(x, _ints([2, 3]), True), _ints([2, 4, 3, 5]))
    split = opset1.split(x, _ints(1), 2)
    vsplit = opset1.variadic_split(x, _ints(3), _ints([1, 4]))
    d2s = opset1.depth_to_space(x, "blocks_first", 2)
    sc = opset3.shuffle_channels(x, 1, 2)
    sq = opset1.unsqueeze(opset1.squeeze(x, _ints([0])), _ints([3]))
    shape = opset1.convert(opset3.shape_of(sq, "i64"), "f32")
    return _model([g, ss, tile, bc, split.output(1), vsplit.output(1), d2s, sc, sq, shape],
                  [x])


def interpolate() -> ov.Model:
    """Interpolate-4 linear_onnx by sizes, Interpolate-11 nearest by scales."""
    x = _param(1, 2, 5, 6)
    linear = opset10.interpolate(x, _ints([9, 4]), opset1.constant(np.float32([1, 1])),
                                 mode="linear_onnx", shape_calculation_mode="sizes",
                                 coordinate_transformation_mode="half_pixel", axes=_ints([2, 3]))
    nearest = opset11.interpolate(x, opset1.constant(np.float32([2.0, 1.5])),
                                  mode="nearest", shape_calculation_mode="scales",
                                  axes=_ints([2, 3]), nearest_mode="floor",
                                  coordinate_transformation_mode="asymmetric")
    return _model([linear, nearest], [x])


def attention() -> ov.Model:
    q, k, v = _param(2, 3, 7, 8, name="q"), _param(2, 1, 9, 8, name="k"), _param(2, 3, 9, 4,
                                                                                name="v")
    return _model([opset13.scaled_dot_product_attention(q, k, v, causal=True)], [q, k, v])


OV_FAMILIES: dict[str, Callable[[], ov.Model]] = {
    "elementwise": elementwise, "nn": nn, "pooling": pooling, "reductions": reductions,
    "normalization": normalization, "movement": movement, "interpolate": interpolate,
    "attention": attention,
}


def lowp() -> Graph:
    """Integer Convolution + depthwise GroupConvolution + MatMul (FakeQuantize), an
    activation x activation MatMul, compressed-weight MatMul and Convolution."""
    rng = np.random.default_rng(RNG_SEED)
    x = lg.parameter((1, 4, 7, 7))
    conv = lg.conv(lg.fake_quantize(x.output, -2.0, 2.0),
                   lg.fq_weights(rng.standard_normal((6, 4, 3, 3))))
    dw = lg.group_conv(lg.fake_quantize(lg.relu(conv), 0.0, 4.0),
                       lg.fq_weights(rng.standard_normal((6, 1, 1, 3, 3))), strides=(2, 2))
    rows = lg.reshape(dw, (6, 16))
    q_mm = lg.matmul(lg.fake_quantize(rows, -3.0, 3.0), lg.fq_weights(rng.standard_normal(
        (5, 16))))
    a = lg.fake_quantize(q_mm, -4.0, 4.0, name="fq_a")
    act_mm = lg.matmul(a, lg.fake_quantize(lg.reshape(q_mm, (6, 5)), -4.0, 4.0, name="fq_b"),
                       transpose_b=True)
    q = rng.integers(-8, 8, (7, 6)).astype(np.int8)
    compressed = lg.matmul(act_mm, lg.compressed_weights(q, dtypes.i8, rng.uniform(
        0.01, 0.1, (7, 1)).astype(np.float32)))
    qc = rng.integers(0, 16, (3, 4, 3, 3)).astype(np.uint8)
    cconv = lg.conv(x.output, lg.compressed_weights(qc, dtypes.u8, rng.uniform(
        0.01, 0.1, (3, 1, 1, 1)).astype(np.float32), zero_point=np.uint8(8)), name="cconv")
    return lg.graph([x], compressed, cconv)


# -- compiling -----------------------------------------------------------------------------------

CASES = (*OV_FAMILIES, "lowp", "elementwise_float_fq")


@functools.cache
def _source(name: str, directory: str):
    if name == "lowp":
        return lowp()
    model = OV_FAMILIES["elementwise" if name == "elementwise_float_fq" else name]()
    from pathlib import Path

    return oracle.save(model, Path(directory) / name)


@functools.cache
def compiled(name: str, directory: str, checks: bool) -> lpjit.CompiledModel:
    low_precision = name != "elementwise_float_fq"
    return lpjit.compile(_source(name, directory), threads=2, checks=checks,
                         low_precision=low_precision, cache=False, verify=checks)


@pytest.fixture(scope="module")
def directory(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("checked_ops"))


def inputs_for(model: lpjit.CompiledModel, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-3, 3, info.shape).astype(info.dtype) for info in model.inputs]


@pytest.mark.parametrize("name", CASES)
def test_checked_code_matches_unchecked_code(name: str, directory: str) -> None:
    checked, unchecked = compiled(name, directory, True), compiled(name, directory, False)
    assert program_record(checked.program) is not None
    assert sum(len(sites(step.kernel)) for step in checked.program.steps) > 0
    assert program_record(unchecked.program) is None
    for seed in (RNG_SEED, RNG_SEED + 1):
        arrays = inputs_for(checked, seed)
        for a, b in zip(checked(*arrays), unchecked(*arrays), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def _family(node) -> str | None:
    if isinstance(node, (Parameter, Result, Constant)):
        return None
    lowering = LOWERINGS.get(type(node))
    if lowering is not None:
        return lowering.__module__.rsplit(".", 1)[-1]
    return "elementwise" if is_elementwise(node) else None


def test_every_lowered_family_is_covered(directory: str) -> None:
    expected = {fn.__module__.rsplit(".", 1)[-1] for fn in LOWERINGS.values()} | {"elementwise"}
    covered: dict[str, set[str]] = {}
    for name in CASES:
        for node in compiled(name, directory, True).graph.nodes:
            family = _family(node)
            if family is not None:
                covered.setdefault(family, set()).add(type(node).__name__)
    assert set(covered) == expected, covered
