"""Recognise quantized weights and fold them into integers plus f32 scales.

The weight input (port 1) of a Convolution, GroupConvolution or MatMul is quantized when it is

* a FakeQuantize of a float constant (facts 3.1 form 3): the integers are the level indices
  ``q``, the scale ``(oh - ol) / (levels - 1)`` and the zero point ``-ol / scale`` (which must
  be an integer to fold), so that ``w = (q - zero_point) * scale``; its ranges must be
  finite with finite, normal steps (``lpjit.reference.lowp.range_problem``); or
* a compressed chain (form 4) ``Const(i8|u8|i4|u4) -> Convert -> [Subtract zero_point] ->
  Multiply(scale) -> [Reshape] -> [Convert]``: the integers are the constant's, the zero
  point and scale the chain's constants, evaluated in f32 on exactly converted values (facts
  3.1 and pitfall 12: OpenVINO's CPU does this f32 math even where the IR says f16).

``match_weights`` returns ``QuantizedWeights`` (values, scale and zero point broadcast in the
port's layout), a ``WeightRejection`` (quantized, but not foldable, with the reason), or
``None`` (plain float weights).  ``integer_weights``/``compressed_weights`` then bring them into
the layout of the op that replaces the consumer and check what that op needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from lpjit import dtypes
from lpjit.dtypes import DType
from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Value
from lpjit.ops import elementwise as ew
from lpjit.ops import lowp, nn
from lpjit.ops.core import Convert
from lpjit.ops.quantize import FakeQuantize
from lpjit.ops.shape import Reshape, Squeeze, Unsqueeze
from lpjit.reference import evaluate_node
from lpjit.reference.lowp import decompress, level_index, range_problem

FAKE_QUANTIZE = "fake_quantize"
COMPRESSED = "compressed"
# How far (in quantization steps) -ol/step may be from an integer for the weight zero point
# to count as that integer: folding then changes each weight by at most this many steps.
ZERO_POINT_TOLERANCE = 1e-5
I8_MIN, I8_MAX = -128, 127
RESHAPES = (Reshape, Squeeze, Unsqueeze)


@attrs.frozen(eq=False)
class QuantizedWeights:
    """``w = (values - zero_point) * scale`` (f32 math), all three in the weight port's shape
    (``scale``/``zero_point`` broadcastable to it).

    ``origin`` is the layer that holds the low-precision values (the FakeQuantize, or the
    integer Constant of a compressed chain); ``storage`` their type (u8 level indices for a
    FakeQuantize).
    """

    values: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    storage: DType
    origin: Origin
    source: str

    def dequantized(self) -> np.ndarray:
        """The float weights these integers stand for (f32, the port's shape)."""
        return decompress(self.values, self.scale, self.zero_point)


@attrs.frozen
class WeightRejection:
    """Quantized weights (at ``origin``) that cannot be folded, and why."""

    origin: Origin
    source: str
    reason: str


@attrs.frozen(eq=False)
class IntegerWeights:
    """Weights of a Q op: i8 values in the op's layout and an f32 scale per output channel."""

    values: np.ndarray
    scale: np.ndarray
    origin: Origin


@attrs.frozen(eq=False)
class CompressedWeights:
    """Weights of a Compressed op: the stored integers (``storage``) in the op's layout, f32
    scales and optional integer zero points per output channel (convolution: ``group_size``
    is the whole reduction) or per ``[N, K / group_size]`` group (MatMul)."""

    values: np.ndarray
    storage: DType
    scale: np.ndarray
    zero_point: np.ndarray | None
    group_size: int
    origin: Origin


WeightMatch = QuantizedWeights | WeightRejection | None


# ------------------------------------------------------------------------------------------
# Constant subgraphs


def constant_subgraph_value(value: Value) -> np.ndarray | None:
    """The reference value of ``value`` if it depends on Constants only, else ``None``."""
    memo: dict[Value, np.ndarray | None] = {}
    stack = [value]
    while stack:
        current = stack[-1]
        if current in memo:
            stack.pop()
            continue
        node = current.node
        if isinstance(node, Parameter):
            memo[current] = None
            stack.pop()
            continue
        pending = [v for v in node.inputs if v not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        arrays = [memo[v] for v in node.inputs]
        if any(a is None for a in arrays):
            memo[current] = None
            continue
        outputs = evaluate_node(node, arrays)  # type: ignore[arg-type]
        for i, array in enumerate(outputs):
            memo[Value(node, i)] = array
    return memo[value]


def is_constant_subgraph(value: Value) -> bool:
    """True when ``value`` depends on Constants only (no Parameter above it)."""
    stack, seen = [value.node], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Parameter):
            return False
        stack.extend(v.node for v in node.inputs)
    return True


# ------------------------------------------------------------------------------------------
# Recognising quantized weights


def match_weights(value: Value) -> WeightMatch:
    """``value``'s quantized weights, a rejection with its reason, or ``None`` (float)."""
    if isinstance(value.node, FakeQuantize):
        return _match_fake_quantize(value.node)
    return _match_compressed(value)


def _match_fake_quantize(node: FakeQuantize) -> WeightMatch:
    """FakeQuantize of a float constant: ``w = (q - zero_point) * step``."""
    arrays = [constant_subgraph_value(v) for v in node.inputs]
    if any(a is None for a in arrays):
        return None
    weights, il, ih, ol, oh = (np.asarray(a, np.float32) for a in arrays)
    levels = node.levels
    if levels > lowp.MAX_LEVELS:
        return WeightRejection(node.origin, FAKE_QUANTIZE,
                               f"levels={levels} exceeds {lowp.MAX_LEVELS}: no 8-bit weights")
    problem = range_problem(il, ih, ol, oh, levels)
    if problem is not None:
        return WeightRejection(node.origin, FAKE_QUANTIZE, problem)
    if np.any(np.isnan(weights)):
        return WeightRejection(node.origin, FAKE_QUANTIZE,
                               "the weights contain NaN (FakeQuantize keeps it; a level "
                               "index cannot)")
    rank = weights.ndim
    ol, oh = (_with_rank(a, rank) for a in np.broadcast_arrays(ol, oh))
    step = (oh.astype(np.float64) - ol) / (levels - 1)
    if np.any(step == 0):
        return WeightRejection(node.origin, FAKE_QUANTIZE,
                               "output range is empty (output_low == output_high)")
    exact_zero_point = -ol.astype(np.float64) / step
    zero_point = np.rint(exact_zero_point)
    distance = float(np.max(np.abs(exact_zero_point - zero_point)))
    if distance > ZERO_POINT_TOLERANCE:
        return WeightRejection(node.origin, FAKE_QUANTIZE,
                               "weights have a fractional zero point (-output_low / step is "
                               f"{distance:.3g} steps from an integer)")
    # Folding moves every weight by |ol + zero_point * step|: within the tolerance of a step,
    # but also of ol itself (a step so large that -ol / step rounds to 0 would turn level 0,
    # the value ol, into 0).
    miss = np.abs(ol + zero_point * step)
    worst = np.unravel_index(np.argmax(miss - ZERO_POINT_TOLERANCE * np.abs(ol)), miss.shape)
    if miss[worst] > ZERO_POINT_TOLERANCE * abs(float(ol[worst])):
        return WeightRejection(node.origin, FAKE_QUANTIZE,
                               f"weights have a zero point that misses output_low "
                               f"{float(ol[worst]):.3g} (-output_low / step = "
                               f"{float(exact_zero_point[worst]):.3g} rounds to "
                               f"{int(zero_point[worst])})")
    values = level_index(weights, il, ih, levels)
    return QuantizedWeights(values, step.astype(np.float32), zero_point.astype(np.int64),
                            dtypes.u8, node.origin, FAKE_QUANTIZE)


def _with_rank(array: np.ndarray, rank: int) -> np.ndarray:
    return array.reshape((1,) * (rank - array.ndim) + array.shape)


def _match_compressed(value: Value) -> WeightMatch:
    """``Const(int) -> Convert -> [Subtract] -> Multiply -> [Reshape] -> [Convert]``."""
    node = value.node
    while _is_float_convert(node) or isinstance(node, RESHAPES):
        node = node.inputs[0].node
    if not isinstance(node, ew.Multiply):
        return None
    for data, scale in (node.inputs, node.inputs[::-1]):
        source = _integer_source(data)
        if source is None:
            continue
        scale_array = constant_subgraph_value(scale)
        if scale_array is None:
            return None
        return _compressed(value, node, source, scale_array)
    return None


def _is_float_convert(node: Node) -> bool:
    return (isinstance(node, Convert) and node.destination_type.is_float
            and node.input_type(0).dtype.is_float)


def _integer_source(value: Value) -> tuple[Constant, Value | None] | None:
    """``Convert(float) <- Const(int)``, optionally behind a Subtract of a zero point."""
    node, zero_point = value.node, None
    if isinstance(node, ew.Subtract):
        node, zero_point = node.inputs[0].node, node.inputs[1]
    if not isinstance(node, Convert) or not node.destination_type.is_float:
        return None
    constant = node.inputs[0].node
    if isinstance(constant, Constant) and constant.element_type.is_integer:
        return constant, zero_point
    return None


def _compressed(port: Value, multiply: Node, source: tuple[Constant, Value | None],
                scale: np.ndarray) -> WeightMatch:
    constant, zero_point_value = source
    shape = multiply.output_types[0].shape
    if constant.shape != shape:
        return None
    values = constant.data.astype(np.int64)
    zero_point = None
    if zero_point_value is not None:
        zero_point_array = constant_subgraph_value(zero_point_value)
        if zero_point_array is None:
            return None
        zero_point_array = zero_point_array.astype(np.float32)
        if np.any(zero_point_array != np.rint(zero_point_array)):
            return WeightRejection(constant.origin, COMPRESSED,
                                   "weights have a fractional zero point")
        zero_point = _with_rank(zero_point_array.astype(np.int64), len(shape))
    scale = _with_rank(scale.astype(np.float32), len(shape))
    if port.shape != shape:             # a Reshape after the Multiply: reshape all three
        scale = np.broadcast_to(scale, shape).reshape(port.shape)
        if zero_point is not None:
            zero_point = np.broadcast_to(zero_point, shape).reshape(port.shape)
        values = values.reshape(port.shape)
    return QuantizedWeights(values, scale, zero_point, constant.element_type, constant.origin,
                            COMPRESSED)


def compressed_weight_constants(graph: Graph) -> list[Constant]:
    """Integer Constants converted to float and then scaled (the data of a compressed chain;
    zero points, which are subtracted, are not included)."""
    found = []
    for node in graph.nodes:
        if not (isinstance(node, Constant) and node.element_type.is_integer):
            continue
        for convert, _ in graph.consumers.get(node.output, ()):
            if isinstance(convert, Convert) and convert.destination_type.is_float and any(
                    isinstance(user, ew.Multiply) or (isinstance(user, ew.Subtract) and port == 0)
                    for user, port in graph.consumers.get(convert.output, ())):
                found.append(node)
                break
    return found


# ------------------------------------------------------------------------------------------
# Folding into the layout of the replacing op


def convolution_layout(node: nn.ConvolutionBase, array: np.ndarray) -> np.ndarray:
    """A weight-shaped (or broadcastable, same rank) array as ``[G, OC/G, IC/G, k...]``."""
    if isinstance(node, nn.GroupConvolution):
        return array
    return array[None]


def matmul_layout(transpose_b: bool, array: np.ndarray) -> np.ndarray:
    """A ``[K, N]`` (or ``[N, K]`` with ``transpose_b``) array as ``[N, K]``."""
    return array if transpose_b else array.T


def per_channel(array: np.ndarray, shape: Sequence[int], channel_axes: int) -> np.ndarray | None:
    """``array`` broadcast to ``shape`` as one value per index of its first ``channel_axes``
    axes (flattened), or ``None`` if it varies along the other axes."""
    full = np.broadcast_to(array, tuple(shape))
    flat = full.reshape(int(np.prod(shape[:channel_axes])), -1)
    first = flat[:, :1]
    return first[:, 0].copy() if np.array_equal(flat, np.broadcast_to(first, flat.shape)) else None


def integer_weights(weights: QuantizedWeights, values: np.ndarray, scale: np.ndarray,
                    zero_point: np.ndarray | None, channel_axes: int
                    ) -> IntegerWeights | str:
    """i8 ``values - zero_point`` and a per-output-channel f32 scale, or the reason why not.

    ``values``/``scale``/``zero_point`` are already in the op's layout, whose first
    ``channel_axes`` axes are the output channels.
    """
    per_oc_scale = per_channel(scale, values.shape, channel_axes)
    if per_oc_scale is None:
        return "weight scales vary along the reduction axes (per-group scales)"
    folded = values
    if zero_point is not None:
        per_oc_zero_point = per_channel(zero_point, values.shape, channel_axes)
        if per_oc_zero_point is None:
            return "weight zero points vary along the reduction axes"
        channel_shape = (*values.shape[:channel_axes], *(1,) * (values.ndim - channel_axes))
        folded = values - per_oc_zero_point.reshape(channel_shape)
    low, high = int(folded.min(initial=0)), int(folded.max(initial=0))
    if low < I8_MIN or high > I8_MAX:
        return (f"weights have a zero point: values minus zero point span [{low}, {high}], "
                "which does not fit i8")
    reduce = tuple(range(channel_axes, folded.ndim))
    if lowp.accumulator_bound(folded, reduce) > lowp.ACCUMULATOR_LIMIT:
        return "the i32 accumulator could overflow (reduction too long for 8-bit products)"
    return IntegerWeights(folded.astype(np.int8), per_oc_scale.astype(np.float32),
                          weights.origin)


def integer_convolution_weights(weights: QuantizedWeights, node: nn.ConvolutionBase
                                ) -> IntegerWeights | str:
    """Weights of a QConvolution replacing ``node``: i8 ``[G, OC/G, IC/G, k...]``, ``[OC]``."""
    zero_point = None if weights.zero_point is None else convolution_layout(
        node, weights.zero_point)
    return integer_weights(weights, convolution_layout(node, weights.values),
                           convolution_layout(node, weights.scale), zero_point, 2)


def integer_matmul_weights(weights: QuantizedWeights, transpose_b: bool
                           ) -> IntegerWeights | str:
    """Weights of a QMatMul: i8 ``[N, K]`` and ``[N]`` scales (2-D weights only)."""
    if weights.values.ndim != 2:
        return f"weights have rank {weights.values.ndim}; integer MatMul needs 2-D weights"
    zero_point = None if weights.zero_point is None else matmul_layout(
        transpose_b, weights.zero_point)
    return integer_weights(weights, matmul_layout(transpose_b, weights.values),
                           matmul_layout(transpose_b, weights.scale), zero_point, 1)


def _storage_values(weights: QuantizedWeights, values: np.ndarray) -> np.ndarray:
    return values.astype(weights.storage.numpy)


def _zero_point_storage(weights: QuantizedWeights, zero_point: np.ndarray) -> np.ndarray:
    """Zero points in the weights' storage type when they fit it, else i32."""
    storage = weights.storage
    if storage.min <= zero_point.min(initial=0) and zero_point.max(initial=0) <= storage.max:
        return zero_point.astype(storage.numpy)
    return zero_point.astype(np.int32)


def group_size(scale: np.ndarray, zero_point: np.ndarray | None) -> int:
    """The largest divisor ``g`` of K such that ``scale`` (and ``zero_point``), ``[N, K]``,
    are constant over each run of ``g`` consecutive K indices."""
    rows, depth = scale.shape
    for g in sorted((d for d in range(1, depth + 1) if depth % d == 0), reverse=True):
        if all(a is None or np.array_equal(a.reshape(rows, -1, g),
                                           np.broadcast_to(a.reshape(rows, -1, g)[..., :1],
                                                           (rows, depth // g, g)))
               for a in (scale, zero_point)):
            return g
    return 1


def compressed_matmul_weights(weights: QuantizedWeights, transpose_b: bool
                              ) -> CompressedWeights | str:
    """Weights of a CompressedMatMul: stored integers ``[N, K]``, per-group scale/zero point."""
    if weights.values.ndim != 2:
        return f"weights have rank {weights.values.ndim}; a compressed MatMul needs 2-D weights"
    values = matmul_layout(transpose_b, weights.values)
    shape = values.shape
    scale = np.broadcast_to(matmul_layout(transpose_b, weights.scale), shape)
    zero_point = None if weights.zero_point is None else np.broadcast_to(
        matmul_layout(transpose_b, weights.zero_point), shape)
    g = group_size(scale, zero_point)
    scale_groups = np.ascontiguousarray(scale[:, ::g], np.float32)
    zp_groups = None if zero_point is None else _zero_point_storage(weights, zero_point[:, ::g])
    return CompressedWeights(_storage_values(weights, values), weights.storage, scale_groups,
                             zp_groups, g, weights.origin)


def compressed_convolution_weights(weights: QuantizedWeights, node: nn.ConvolutionBase
                                   ) -> CompressedWeights | str:
    """Weights of a CompressedConvolution: stored integers ``[G, OC/G, IC/G, k...]``, scale
    and zero point per output channel."""
    values = convolution_layout(node, weights.values)
    scale = per_channel(convolution_layout(node, weights.scale), values.shape, 2)
    if scale is None:
        return "weight scales vary along the reduction axes (per-group scales)"
    zero_point = None
    if weights.zero_point is not None:
        zero_point = per_channel(convolution_layout(node, weights.zero_point), values.shape, 2)
        if zero_point is None:
            return "weight zero points vary along the reduction axes"
        zero_point = _zero_point_storage(weights, zero_point)
    reduction = int(np.prod(values.shape[2:]))
    return CompressedWeights(_storage_values(weights, values), weights.storage,
                             scale.astype(np.float32), zero_point, reduction, weights.origin)
