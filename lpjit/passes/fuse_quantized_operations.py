"""fuse_quantized_operations: ``Convolution / GroupConvolution / MatMul(Dequantize(q),
quantized weights)`` becomes the integer op (``QConvolution``, ``QMatMul``) on ``q``;
``MatMul(Dequantize(qa), Dequantize(qb))`` becomes ``QActivationMatMul``; with float
activations, compressed weights make ``CompressedConvolution`` / ``CompressedMatMul``.

The dequantization is folded into the integer op's output formula (``lpjit.reference.lowp``):
the float input is ``low + q * step`` per tensor (per channel for a convolution whose groups
each read one channel, e.g. depthwise), the weights ``wq * scale`` per output channel.
Everything after the op stays float in the graph (bias, activation, next FakeQuantize): the
lowering fuses that chain into the kernel's epilogue.

``consumer_problem`` is the one definition of "quantizable consumer", shared with
``decompose_fake_quantize``, which only decomposes FakeQuantizes that some consumer accepts.
"""

from __future__ import annotations

import weakref

import numpy as np

from lpjit import dtypes
from lpjit.graph import Constant, Graph, Node, Origin, Value, rebuild
from lpjit.ops import lowp, nn
from lpjit.passes.propagate_dequantize import LevelRange, LevelsOf, dequantize_levels
from lpjit.passes.report import COMPRESSED_WEIGHT, FAKE_QUANTIZE, FloatReason
from lpjit.passes.weights import (
    COMPRESSED,
    CompressedWeights,
    IntegerWeights,
    QuantizedWeights,
    WeightRejection,
    compressed_convolution_weights,
    compressed_matmul_weights,
    integer_convolution_weights,
    integer_matmul_weights,
    is_constant_subgraph,
    match_weights,
)

QUANTIZABLE = (nn.Convolution, nn.GroupConvolution, nn.MatMul)


def _input_channels_per_group(node: nn.ConvolutionBase) -> int:
    weights = node.input_type(1).shape
    return weights[2] if isinstance(node, nn.GroupConvolution) else weights[1]


_FOLDED: weakref.WeakKeyDictionary[Node, IntegerWeights | str] = weakref.WeakKeyDictionary()
"""``_integer_weights`` of each live node (nodes are immutable: the decomposition and this
pass ask for the same weights several times, and folding them checks every product)."""


def _integer_weights(node: Node) -> IntegerWeights | str:
    """``node``'s weights folded for its Q op, or the reason they cannot be (computed once
    per node)."""
    folded = _FOLDED.get(node)
    if folded is None:
        folded = _FOLDED[node] = _fold_weights(node)
    return folded


def _fold_weights(node: Node) -> IntegerWeights | str:
    match = match_weights(node.inputs[1])
    if match is None:
        return f"the weights of {node.origin.describe()} are not quantized"
    if isinstance(match, WeightRejection):
        return match.reason
    if isinstance(node, nn.MatMul):
        return integer_matmul_weights(match, node.transpose_b)
    return integer_convolution_weights(match, node)


def consumer_problem(node: Node, port: int, levels: LevelRange, levels_of: LevelsOf
                     ) -> str | None:
    """Why ``node`` cannot run in integer code with a quantized activation (levels
    ``levels``) at input ``port`` (``None``: it can).  ``levels_of`` gives the levels of the
    other MatMul input, if it is a quantized activation."""
    what = node.origin.describe()
    if isinstance(node, QUANTIZABLE) and node.output_types[0].dtype != dtypes.f32:
        return f"{what} computes in {node.output_types[0].dtype}; integer ops produce f32"
    if isinstance(node, nn.ConvolutionBase):
        if port != 0:
            return f"it is the weight input of {what}"
        axis = levels.channel_axis(node.input_type(0).rank)
        if axis is not None and not (axis == 1 and _input_channels_per_group(node) == 1):
            return f"per-channel activation range on a non-depthwise convolution ({what})"
        problem = _integer_weights(node)
        return problem if isinstance(problem, str) else None
    if isinstance(node, nn.MatMul):
        return _matmul_problem(node, port, levels, levels_of)
    return f"consumer {what} is not a quantizable op"


def _one_dimensional_input(node: nn.MatMul) -> str | None:
    """Why ``node`` has no integer or compressed form: a 1-D input (``None``: both are
    matrices or batches of them, as the low-precision MatMuls require)."""
    for i in (0, 1):
        if node.input_type(i).rank < 2:
            return f"input {i} of {node.origin.describe()} is 1-D"
    return None


def _matmul_problem(node: nn.MatMul, port: int, levels: LevelRange, levels_of: LevelsOf
                    ) -> str | None:
    what = node.origin.describe()
    problem = _one_dimensional_input(node)
    if problem is not None:
        return problem
    if levels.channel_axis(node.input_type(port).rank) is not None:
        return f"per-channel activation range on a MatMul input ({what})"
    other = node.inputs[1 - port]
    if is_constant_subgraph(other):
        if port == 1:
            return f"constant weights on input 0 of {what} are not supported"
        problem = _integer_weights(node)
        return problem if isinstance(problem, str) else None
    other_levels = levels_of(other)
    if other_levels is None:
        return f"the other input of {what} is not quantized"
    if other_levels.channel_axis(other.type.rank) is not None:
        return f"per-channel activation range on a MatMul input ({what})"
    return None


# ------------------------------------------------------------------------------------------
# Building the replacement ops


def _vector(values: np.ndarray, origin: Origin, name: str) -> Value:
    return Constant.of(np.ascontiguousarray(values, np.float32).reshape(-1),
                       origin.derived(name, "Const")).output


def activation_parameters(levels: LevelRange, data: Value) -> tuple[np.ndarray, np.ndarray]:
    """``(step, low)`` f32 vectors, ``[1]`` per tensor or ``[C]`` per channel (axis 1):
    ``step = (high - low) / (levels - 1)`` computed in f64 and rounded once."""
    rank = data.type.rank
    low, high = (a.reshape((1,) * (rank - a.ndim) + a.shape)
                 for a in np.broadcast_arrays(levels.low, levels.high))
    if levels.channel_axis(rank) is None:
        low, high = low.reshape(-1)[:1], high.reshape(-1)[:1]
    else:
        channels = data.shape[1]
        low = np.broadcast_to(low, (1, channels, *(1,) * (rank - 2))).reshape(channels)
        high = np.broadcast_to(high, (1, channels, *(1,) * (rank - 2))).reshape(channels)
    step = (high.astype(np.float64) - low) / (levels.levels - 1)
    return step.astype(np.float32), low.astype(np.float32)


def _weight_constants(weights: IntegerWeights) -> tuple[Value, Value]:
    values = Constant.of(weights.values, weights.origin.derived("int8", "Const")).output
    return values, _vector(weights.scale, weights.origin, "scale")


def _q_convolution(node: nn.ConvolutionBase, weights: IntegerWeights, levels: LevelRange
                   ) -> lowp.QConvolution:
    data = node.inputs[0]
    step, low = activation_parameters(levels, data)
    return lowp.QConvolution(
        origin=node.origin, tensor_names=node.tensor_names,
        inputs=(data.node.inputs[0], *_weight_constants(weights),
                _vector(step, node.origin, "input_step"), _vector(low, node.origin, "input_low")),
        strides=node.strides, pads_begin=node.pads_begin, pads_end=node.pads_end,
        dilations=node.dilations)


def _q_matmul(node: nn.MatMul, weights: IntegerWeights, levels: LevelRange) -> lowp.QMatMul:
    data = node.inputs[0]
    step, low = activation_parameters(levels, data)
    return lowp.QMatMul(
        origin=node.origin, tensor_names=node.tensor_names,
        inputs=(data.node.inputs[0], *_weight_constants(weights),
                _vector(step, node.origin, "input_step"), _vector(low, node.origin, "input_low")),
        transpose_a=node.transpose_a)


def _q_activation_matmul(node: nn.MatMul, a: LevelRange, b: LevelRange
                         ) -> lowp.QActivationMatMul:
    a_step, a_low = activation_parameters(a, node.inputs[0])
    b_step, b_low = activation_parameters(b, node.inputs[1])
    return lowp.QActivationMatMul(
        origin=node.origin, tensor_names=node.tensor_names,
        inputs=(node.inputs[0].node.inputs[0], node.inputs[1].node.inputs[0],
                _vector(a_step, node.origin, "a_step"), _vector(a_low, node.origin, "a_low"),
                _vector(b_step, node.origin, "b_step"), _vector(b_low, node.origin, "b_low")),
        transpose_a=node.transpose_a, transpose_b=node.transpose_b)


def _compressed_inputs(weights: CompressedWeights) -> tuple[Value, ...]:
    origin = weights.origin
    values = Constant.of(weights.values, origin.derived("weights", "Const"),
                         weights.storage).output
    scale = Constant.of(weights.scale, origin.derived("scale", "Const")).output
    if weights.zero_point is None:
        return values, scale
    zero_point = Constant.of(weights.zero_point, origin.derived("zero_point", "Const")).output
    return values, scale, zero_point


def _compressed(node: Node, weights: QuantizedWeights) -> Node | str:
    if isinstance(node, nn.MatMul):
        problem = _one_dimensional_input(node)
        if problem is not None:
            return problem
        folded = compressed_matmul_weights(weights, node.transpose_b)
        if isinstance(folded, str):
            return folded
        return lowp.CompressedMatMul(
            origin=node.origin, tensor_names=node.tensor_names,
            inputs=(node.inputs[0], *_compressed_inputs(folded)),
            group_size=folded.group_size, transpose_a=node.transpose_a)
    folded = compressed_convolution_weights(weights, node)
    if isinstance(folded, str):
        return folded
    return lowp.CompressedConvolution(
        origin=node.origin, tensor_names=node.tensor_names,
        inputs=(node.inputs[0], *_compressed_inputs(folded)),
        strides=node.strides, pads_begin=node.pads_begin, pads_end=node.pads_end,
        dilations=node.dilations)


# ------------------------------------------------------------------------------------------
# The pass


def _weight_reason(match: QuantizedWeights | WeightRejection, reason: str) -> FloatReason:
    what = COMPRESSED_WEIGHT if match.source == COMPRESSED else FAKE_QUANTIZE
    return FloatReason(match.origin, what, reason)


class _Fuser:
    """The rewrite of one pass run; collects the reasons for weights left float."""

    def __init__(self) -> None:
        self.reasons: list[FloatReason] = []

    def rewrite(self, node: Node) -> Node | None:
        if not isinstance(node, QUANTIZABLE):
            return None
        levels = dequantize_levels(node.inputs[0])
        if isinstance(node, nn.MatMul) and levels is not None:
            b_levels = dequantize_levels(node.inputs[1])
            if b_levels is not None:
                return self._activation_matmul(node, levels, b_levels)
        match = match_weights(node.inputs[1])
        if levels is not None:
            return self._integer(node, levels, match)
        if isinstance(match, QuantizedWeights) and match.source == COMPRESSED:
            return self._record(match, _compressed(node, match))
        if isinstance(match, WeightRejection):
            self.reasons.append(_weight_reason(match, match.reason))
        elif match is not None:
            reason = f"the activation input of {node.origin.describe()} is not quantized"
            self.reasons.append(_weight_reason(match, reason))
        return None

    def _record(self, match: QuantizedWeights, replacement: Node | str) -> Node | None:
        if isinstance(replacement, str):
            self.reasons.append(_weight_reason(match, replacement))
            return None
        return replacement

    def _integer(self, node: Node, levels: LevelRange,
                 match: QuantizedWeights | WeightRejection | None) -> Node | None:
        problem = consumer_problem(node, 0, levels, dequantize_levels)
        if problem is not None:
            if match is not None:
                self.reasons.append(_weight_reason(match, problem))
            if isinstance(match, QuantizedWeights) and match.source == COMPRESSED:
                return self._record(match, _compressed(node, match))
            return None
        assert isinstance(match, QuantizedWeights)
        folded = _integer_weights(node)         # the weights of ``match``, folded already
        assert not isinstance(folded, str)
        if isinstance(node, nn.MatMul):
            return _q_matmul(node, folded, levels)
        return _q_convolution(node, folded, levels)

    def _activation_matmul(self, node: nn.MatMul, a: LevelRange, b: LevelRange) -> Node | None:
        if consumer_problem(node, 0, a, dequantize_levels) is not None:
            return None
        return _q_activation_matmul(node, a, b)


def fuse_quantized_operations_with_reasons(graph: Graph
                                           ) -> tuple[Graph, tuple[FloatReason, ...]]:
    """``fuse_quantized_operations`` and the reasons for the weights it left float."""
    fuser = _Fuser()
    return rebuild(graph, fuser.rewrite), tuple(fuser.reasons)


def fuse_quantized_operations(graph: Graph) -> Graph:
    """Replace each Convolution / GroupConvolution / MatMul whose activation input is a
    Dequantize and whose weights fold (``consumer_problem`` is ``None``) by its integer op;
    with float activations and compressed weights, by its Compressed op.

    Requires ``decompose_fake_quantize`` and ``propagate_dequantize`` to have run.  Ensures
    the same outputs to float rounding (integer sums are exact).  Returns ``graph`` itself
    when nothing fuses.
    """
    return fuse_quantized_operations_with_reasons(graph)[0]
