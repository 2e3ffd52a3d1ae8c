"""propagate_dequantize: ``op(Dequantize(q))`` becomes ``Dequantize(op(q))`` for ops that
commute with dequantization, so they run on u8 level indices (LPT's precision-preserved ops,
facts 4.2).

The rules are data (``RULES``): which ports may carry the Dequantize, whether per-channel ranges
may pass (only through ops that keep the channel axis in place), and a check.  ReLU is dropped
instead when every level is >= 0 (it is then the identity).  ``Quantize(Dequantize(q))`` whose
round trip is the identity on every level becomes ``q``.  Requires ranges as Constants (made so
by ``decompose_fake_quantize``); the result computes bit for bit what its input computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lpjit.graph import Constant, Graph, Node, Parameter, Result, Value, constant_value
from lpjit.ops import activations, interpolate, movement, nn, shape, slicing
from lpjit.ops.lowp import Dequantize, Quantize
from lpjit.reference.lowp import dequantize, level_index
from lpjit.reference.nn import windows_of


@attrs.frozen(eq=False)
class LevelRange:
    """The float values of ``levels`` level indices: ``dequantize(q, low, high, levels)``.

    ``low``/``high`` are the Dequantize's (or FakeQuantize's) output ranges as f32 arrays that
    broadcast to the tensor.
    """

    levels: int
    low: np.ndarray
    high: np.ndarray

    def channel_axis(self, rank: int) -> int | None:
        """``None`` when per tensor; else the one axis (of a rank-``rank`` tensor) along which
        the ranges vary; -1 when they vary along several."""
        axes = set()
        for array in (self.low, self.high):
            padded = array.reshape((1,) * (rank - array.ndim) + array.shape)
            for axis, size in enumerate(padded.shape):
                first = np.take(padded, [0], axis=axis)
                if size > 1 and not np.array_equal(padded, np.broadcast_to(first, padded.shape)):
                    axes.add(axis)
        if not axes:
            return None
        return axes.pop() if len(axes) == 1 else -1

    def same_as(self, other: LevelRange) -> bool:
        """Identical levels (the same float value for every index)."""
        if self.levels != other.levels:
            return False
        try:
            pairs = np.broadcast_arrays(self.low, other.low, self.high, other.high)
        except ValueError:
            return False
        return np.array_equal(pairs[0], pairs[1]) and np.array_equal(pairs[2], pairs[3])

    def values(self) -> np.ndarray:
        """Every level's float value, ``[levels, *range shape]``."""
        low, high = np.broadcast_arrays(self.low, self.high)
        indices = np.arange(self.levels).reshape(-1, *(1,) * low.ndim)
        return dequantize(np.broadcast_to(indices, (self.levels, *low.shape)), low, high,
                          self.levels)


def dequantize_levels(value: Value) -> LevelRange | None:
    """The levels of ``value`` when a Dequantize with constant ranges produces it."""
    node = value.node
    if not isinstance(node, Dequantize):
        return None
    low, high = (constant_value(v) for v in node.inputs[1:])
    if low is None or high is None:
        return None
    return LevelRange(node.levels, np.asarray(low, np.float32), np.asarray(high, np.float32))


LevelsOf = Callable[[Value], "LevelRange | None"]


# ------------------------------------------------------------------------------------------
# Rules


def _no_check(node: Node, levels: LevelRange) -> str | None:
    return None


def _relu_check(node: Node, levels: LevelRange) -> str | None:
    if np.all(levels.low >= 0) and np.all(levels.high >= 0):
        return None
    return "ReLU after a range with negative levels changes values"


def _max_pool_check(node: Node, levels: LevelRange) -> str | None:
    if not np.all(levels.high > levels.low):
        return "MaxPool needs increasing levels (output_high > output_low)"
    spatial = node.input_type(0).shape[2:]
    ones = np.ones((1, 1, *spatial), np.int64)
    windows = windows_of(node, ones, node.kernel, node.window_dilations(), 0)
    kernel_axes = tuple(range(2 + len(spatial), windows.ndim))
    if windows.sum(axis=kernel_axes).min(initial=1) == 0:
        return "a MaxPool window lies entirely in the padding"
    return None


def _interpolate_check(node: Node, levels: LevelRange) -> str | None:
    if node.mode != "nearest" or node.antialias:
        return f"Interpolate mode '{node.mode}' computes new values (only nearest moves them)"
    if any(node.pads_begin) or any(node.pads_end):
        return "Interpolate pads with 0.0"
    return None


def _pad_level(node: Node, levels: LevelRange) -> int | None:
    """The level index whose value is the constant pad value (``None``: no such level)."""
    value = constant_value(node.inputs[3]) if len(node.inputs) == 4 else np.float32(0)
    if value is None:
        return None
    matches = np.flatnonzero(levels.values().reshape(levels.levels, -1)[:, 0]
                             == np.float32(value))
    return int(matches[0]) if matches.size else None


def _pad_check(node: Node, levels: LevelRange) -> str | None:
    if node.pad_mode != "constant" or _pad_level(node, levels) is not None:
        return None
    return "the pad value is not one of the levels"


def _pad_rewrite(node: Node, inputs: tuple[Value, ...], levels: LevelRange) -> Node:
    """Pad on u8 with the level index of the pad value."""
    index = _pad_level(node, levels)
    assert index is not None
    pad = Constant.of(np.uint8(index), node.origin.derived("pad_level", "Const"))
    return attrs.evolve(node, inputs=(*inputs[:3], pad.output))


@attrs.frozen
class PropagationRule:
    """How a Dequantize moves below one op kind.

    ``ports``: the data inputs that may be Dequantized (every one of them, for ``all_inputs``
    ops such as Concat, with identical levels); ``per_channel``: ranges varying along axis 1
    may pass (the op keeps that axis in place); ``check``: the op-specific condition;
    ``drop``: the op is the identity on the dequantized values (it is removed); ``rewrite``:
    builds the u8 op (default: the same op on the level indices).
    """

    ports: tuple[int, ...] = (0,)
    per_channel: bool = False
    check: Callable[[Node, LevelRange], str | None] = _no_check
    all_inputs: bool = False
    drop: bool = False
    rewrite: Callable[[Node, tuple[Value, ...], LevelRange], Node] | None = None


_MOVEMENT = PropagationRule()
RULES: dict[type[Node], PropagationRule] = {
    activations.Relu: PropagationRule(per_channel=True, check=_relu_check, drop=True),
    nn.MaxPoolV1: PropagationRule(per_channel=True, check=_max_pool_check),
    nn.MaxPoolV8: PropagationRule(per_channel=True, check=_max_pool_check),
    nn.MaxPoolV14: PropagationRule(per_channel=True, check=_max_pool_check),
    shape.Reshape: _MOVEMENT,
    shape.Squeeze: _MOVEMENT,
    shape.SqueezeV15: _MOVEMENT,
    shape.Unsqueeze: _MOVEMENT,
    movement.Transpose: _MOVEMENT,
    movement.Gather: _MOVEMENT,
    movement.GatherV7: _MOVEMENT,
    movement.GatherV8: _MOVEMENT,
    movement.DepthToSpace: _MOVEMENT,
    movement.ShuffleChannels: _MOVEMENT,
    slicing.StridedSlice: _MOVEMENT,
    slicing.Slice: _MOVEMENT,
    movement.Concat: PropagationRule(ports=(), all_inputs=True),
    interpolate.InterpolateV4: PropagationRule(check=_interpolate_check),
    interpolate.InterpolateV11: PropagationRule(check=_interpolate_check),
    movement.Pad: PropagationRule(check=_pad_check, rewrite=_pad_rewrite),
    movement.PadV12: PropagationRule(check=_pad_check, rewrite=_pad_rewrite),
}


def data_ports(node: Node, rule: PropagationRule) -> tuple[int, ...]:
    return tuple(range(len(node.inputs))) if rule.all_inputs else rule.ports


def propagation_problem(node: Node, port: int, levels: LevelRange, levels_of: LevelsOf
                        ) -> str | None:
    """Why a Dequantize with ``levels`` at input ``port`` cannot move below ``node``
    (``None``: it can).  ``levels_of`` gives the levels of the other inputs (Concat)."""
    rule = RULES.get(type(node))
    what = node.origin.describe()
    if rule is None:
        return f"consumer {what} is not a quantizable op"
    if port not in data_ports(node, rule):
        return f"it feeds input {port} of {what}, which is not a data input"
    axis = levels.channel_axis(node.input_type(port).rank)
    if axis == -1 or (axis is not None and not (rule.per_channel and axis == 1)):
        return f"per-channel range (axis {axis}) cannot pass {what}"
    if rule.all_inputs:
        for other in node.inputs:
            other_levels = levels_of(other)
            if other_levels is None or not other_levels.same_as(levels):
                return f"the inputs of {what} are not all quantized with the same levels"
    problem = rule.check(node, levels)
    return f"{problem} ({what})" if problem else None


# ------------------------------------------------------------------------------------------
# The pass


def rebuild_outputs(graph: Graph, rewrite: Callable[[Node], Sequence[Value] | None]) -> Graph:
    """Like ``lpjit.graph.rebuild``, but ``rewrite`` returns a replacement value for *each*
    output of the node (or ``None`` to keep it); returns ``graph`` when nothing changed."""
    mapping: dict[Value, Value] = {}
    changed = False
    parameters: list[Parameter] = []
    results: dict[int, Result] = {}
    for node in graph.nodes:
        inputs = tuple(mapping.get(v, v) for v in node.inputs)
        current = node if inputs == node.inputs else attrs.evolve(node, inputs=inputs)
        replacement = rewrite(current)
        outputs = current.outputs if replacement is None else tuple(replacement)
        mapping.update(zip(node.outputs, outputs, strict=True))
        changed |= current is not node or replacement is not None
        if isinstance(node, Parameter):
            parameters.append(current)
        elif isinstance(node, Result):
            results[id(node)] = current
    if not changed:
        return graph
    return Graph(graph.name, parameters, [results[id(r)] for r in graph.results])


def _dequantized_port(node: Node, rule: PropagationRule) -> int | None:
    for port in data_ports(node, rule):
        if dequantize_levels(node.inputs[port]) is not None:
            return port
    return None


def _move_below(node: Node) -> tuple[Value, ...] | None:
    """``node``'s outputs with the Dequantize moved below it, or ``None`` (no rule applies)."""
    rule = RULES.get(type(node))
    port = None if rule is None else _dequantized_port(node, rule)
    if rule is None or port is None:
        return None
    levels = dequantize_levels(node.inputs[port])
    assert levels is not None
    if propagation_problem(node, port, levels, dequantize_levels) is not None:
        return None
    dequantized = node.inputs[port].node
    if rule.drop:
        return (node.inputs[port],)
    inputs = tuple(v.node.inputs[0] if i in data_ports(node, rule) else v
                   for i, v in enumerate(node.inputs))
    on_levels = (rule.rewrite(node, inputs, levels) if rule.rewrite
                 else attrs.evolve(node, inputs=inputs))
    moved = Dequantize(origin=node.origin.derived("dequantize"),
                       inputs=(on_levels.outputs[0], *dequantized.inputs[1:]),
                       levels=dequantized.levels)
    return (moved.output, *on_levels.outputs[1:])


def _round_trip(node: Node) -> tuple[Value, ...] | None:
    """``Quantize(Dequantize(q))`` -> ``q`` when it maps every level index to itself."""
    if not isinstance(node, Quantize):
        return None
    levels = dequantize_levels(node.inputs[0])
    bounds = [constant_value(v) for v in node.inputs[1:]]
    if levels is None or levels.levels != node.levels or any(b is None for b in bounds):
        return None
    try:
        low, high, il, ih = np.broadcast_arrays(levels.low, levels.high, *bounds)
    except ValueError:
        return None
    grid = np.arange(node.levels).reshape(-1, *(1,) * low.ndim)
    values = dequantize(np.broadcast_to(grid, (node.levels, *low.shape)), low, high,
                        node.levels)
    if not np.array_equal(level_index(values, il, ih, node.levels),
                          np.broadcast_to(grid, values.shape)):
        return None
    return (node.inputs[0].node.inputs[0],)


def propagate_dequantize(graph: Graph) -> Graph:
    """Move every Dequantize below the ops that commute with it (``RULES``), drop ReLUs on
    non-negative levels and fold identity Quantize(Dequantize) round trips.

    Requires Dequantize ranges as Constants.  Ensures the same outputs bit for bit, with the
    moved ops running on u8 level indices.  Returns ``graph`` itself when nothing moves.
    """
    return rebuild_outputs(graph, lambda node: _move_below(node) or _round_trip(node))
