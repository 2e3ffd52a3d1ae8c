"""Tiny graph builders for the low-precision tests (passes and reference semantics).

Every builder returns a ``Value`` (or a node) with a fresh origin, so tests read like the graph
they describe: ``conv(fake_quantize(x, 0, 6), fq_weights(w))``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from lpjit import dtypes
from lpjit.dtypes import DType
from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Result, Value
from lpjit.ops import activations, nn, shape
from lpjit.ops import elementwise as ew
from lpjit.ops.core import Convert
from lpjit.ops.quantize import FakeQuantize

_ids = itertools.count(1000)


def origin(name: str, type_: str) -> Origin:
    return Origin(str(next(_ids)), name, type_)


def const(values, name: str = "c", element_type: DType | None = None) -> Value:
    return Constant.of(np.asarray(values), origin(name, "Const"), element_type).output


def f32(values) -> Value:
    return const(np.asarray(values, np.float32))


def parameter(shape_: Sequence[int], name: str = "x", dtype: DType = dtypes.f32) -> Parameter:
    return Parameter(origin=origin(name, "Parameter"), inputs=(), tensor_names=((name,),),
                     element_type=dtype, shape=tuple(shape_))


def graph(parameters: Sequence[Parameter], *outputs: Value) -> Graph:
    results = [Result(origin=origin(f"out{i}", "Result"), inputs=(v,))
               for i, v in enumerate(outputs)]
    return Graph("g", parameters, results)


def fake_quantize(x: Value, low, high, levels: int = 256, out_low=None, out_high=None,
                  name: str = "fq") -> Value:
    """FakeQuantize with ``il = low``, ``ih = high`` and (default) ``ol = il``, ``oh = ih``."""
    ranges = [np.asarray(r, np.float32) for r in (low, high, low if out_low is None else out_low,
                                                   high if out_high is None else out_high)]
    node = FakeQuantize(origin=origin(name, "FakeQuantize"),
                        inputs=(x, *(const(r, f"{name}/range") for r in ranges)), levels=levels)
    return node.output


def fq_weights(weights: np.ndarray, levels: int = 255, scale: float = 1.0,
               name: str = "w/fq") -> Value:
    """Symmetric per-output-channel FakeQuantize on a float constant (NNCF's weights):
    ranges ``+-scale * max|w|`` per channel (``scale = 2`` is the overflow fix)."""
    weights = np.asarray(weights, np.float32)
    axes = tuple(range(1, weights.ndim))
    limit = (np.abs(weights).max(axis=axes, keepdims=True) * scale).astype(np.float32)
    return fake_quantize(const(weights, f"{name}/w"), -limit, limit, levels, name=name)


def compressed_weights(q: np.ndarray, storage: DType, scale: np.ndarray,
                       zero_point: np.ndarray | None = None, float_type: DType = dtypes.f32,
                       zero_point_type: DType | None = None, final_shape=None,
                       name: str = "w") -> Value:
    """``Const(storage) -> Convert(float_type) -> [Subtract(Convert(zero point))] ->
    Multiply(scale) -> [Reshape(final_shape)] -> [Convert(f32)]`` (facts 3.1 form 4)."""
    x: Value = Convert(origin=origin(f"{name}/convert", "Convert"),
                       inputs=(const(q, f"{name}/q", storage),),
                       destination_type=float_type).output
    if zero_point is not None:
        zp = const(zero_point, f"{name}/zp", zero_point_type or storage)
        if zp.dtype != float_type:
            zp = Convert(origin=origin(f"{name}/zp/convert", "Convert"), inputs=(zp,),
                         destination_type=float_type).output
        x = ew.Subtract(origin=origin(f"{name}/subtract", "Subtract"), inputs=(x, zp)).output
    s = const(np.asarray(scale, float_type.numpy), f"{name}/scale")
    x = ew.Multiply(origin=origin(f"{name}/multiply", "Multiply"), inputs=(x, s)).output
    if final_shape is not None:
        x = shape.Reshape(origin=origin(f"{name}/reshape", "Reshape"),
                          inputs=(x, const(np.array(final_shape, np.int64))),
                          special_zero=False).output
    if float_type != dtypes.f32:
        x = Convert(origin=origin(f"{name}/to_f32", "Convert"), inputs=(x,),
                    destination_type=dtypes.f32).output
    return x


def conv(x: Value, w: Value, pads=(1, 1), strides=(1, 1), dilations=(1, 1),
         name: str = "conv") -> Value:
    return nn.Convolution(origin=origin(name, "Convolution"), inputs=(x, w), strides=strides,
                          pads_begin=pads, pads_end=pads, dilations=dilations).output


def group_conv(x: Value, w: Value, pads=(1, 1), strides=(1, 1), name: str = "gconv") -> Value:
    return nn.GroupConvolution(origin=origin(name, "GroupConvolution"), inputs=(x, w),
                               strides=strides, pads_begin=pads, pads_end=pads,
                               dilations=(1, 1)).output


def matmul(a: Value, b: Value, transpose_a: bool = False, transpose_b: bool = True,
           name: str = "matmul") -> Value:
    return nn.MatMul(origin=origin(name, "MatMul"), inputs=(a, b), transpose_a=transpose_a,
                     transpose_b=transpose_b).output


def relu(x: Value, name: str = "relu") -> Value:
    return activations.Relu(origin=origin(name, "ReLU"), inputs=(x,)).output


def add(a: Value, b: Value, name: str = "add") -> Value:
    return ew.Add(origin=origin(name, "Add"), inputs=(a, b)).output


def reshape(x: Value, target: Sequence[int], name: str = "reshape") -> Value:
    return shape.Reshape(origin=origin(name, "Reshape"),
                         inputs=(x, const(np.array(target, np.int64))),
                         special_zero=False).output


def max_pool(x: Value, kernel=(2, 2), strides=(2, 2), pads=(0, 0), name: str = "pool") -> Node:
    """MaxPool-8 (two outputs, as NNCF's models have)."""
    return nn.MaxPoolV8(origin=origin(name, "MaxPool"), inputs=(x,), kernel=kernel,
                        strides=strides, pads_begin=pads, pads_end=pads)


def kinds(g: Graph) -> list[str]:
    """Node kinds in topological order, without Constants."""
    return [n.kind for n in g.nodes if not isinstance(n, Constant)]


def structurally_equal(a: Graph, b: Graph) -> bool:
    """Same ops, fields, constants (type and data) and edges from the Results up, ignoring
    origins (memoised, so shared subgraphs are compared once)."""
    memo: dict[tuple[int, int], bool] = {}

    def same(x: Node, y: Node) -> bool:
        key = (id(x), id(y))
        if key not in memo:
            memo[key] = False               # cycles cannot occur; this only breaks recursion
            memo[key] = _same_node(x, y) and all(
                u.index == v.index and same(u.node, v.node)
                for u, v in zip(x.inputs, y.inputs, strict=True))
        return memo[key]

    def _same_node(x: Node, y: Node) -> bool:
        if type(x) is not type(y) or len(x.inputs) != len(y.inputs):
            return False
        if x.output_types != y.output_types:
            return False
        fx, fy = x.attributes(), y.attributes()
        return fx.keys() == fy.keys() and all(_same_field(fx[k], fy[k]) for k in fx)

    return len(a.results) == len(b.results) and all(
        same(r, s) for r, s in zip(a.results, b.results))


def _same_field(x, y) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        x, y = np.asarray(x), np.asarray(y)
        return x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)
    return x == y
