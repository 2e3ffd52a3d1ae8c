"""decompose_fake_quantize: an activation FakeQuantize whose output reaches integer-capable code
becomes ``Dequantize(Quantize(x))``: the u8 level index and its float value.

``Dequantize(Quantize(x))`` is FakeQuantize bit for bit (``lpjit.reference.lowp`` states the
two exceptions: NaN, and a top level with two float values), so the rewrite never changes
results; it only exposes the level indices for ``propagate_dequantize`` and
``fuse_quantized_operations``.

A FakeQuantize is decomposed when

* its input is not a constant (FakeQuantizes on weights are folded by the fuse pass);
* its four ranges are Constants, ``levels <= 256`` (a u8 index) and ``il < ih`` everywhere
  (an inverted or empty input range stays float);
* its ranges are finite and give finite, normal input and output steps
  (``lpjit.reference.lowp.range_problem``: a NaN or infinite bound, ``oh - ol`` overflowing,
  a zero or subnormal step stays float, "non-finite or degenerate range");
* following its output through ops ``propagate_dequantize`` can move a Dequantize past, some
  consumer accepts it (``fuse_quantized_operations.consumer_problem``).

Otherwise it stays a FakeQuantize and the reason is recorded (``FloatReason``).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from lpjit.graph import Constant, Graph, Node, Result, Value, constant_value, rebuild
from lpjit.ops.lowp import MAX_LEVELS, Dequantize, Quantize
from lpjit.ops.quantize import FakeQuantize
from lpjit.passes.fuse_quantized_operations import QUANTIZABLE, consumer_problem
from lpjit.passes.propagate_dequantize import (
    RULES,
    LevelRange,
    dequantize_levels,
    propagation_problem,
)
from lpjit.passes.report import FAKE_QUANTIZE, FloatReason
from lpjit.passes.weights import is_constant_subgraph
from lpjit.reference.lowp import range_problem


def fake_quantize_problem(node: FakeQuantize) -> str | None:
    """Why the FakeQuantize ``node`` cannot become a u8 Quantize/Dequantize pair (``None``:
    it can, as far as the node itself goes)."""
    ranges = [constant_value(v) for v in node.inputs[1:]]
    if any(r is None for r in ranges):
        return "its ranges are not constants"
    if node.levels > MAX_LEVELS:
        return f"levels={node.levels} exceeds {MAX_LEVELS} (no 8-bit level index)"
    low, high = np.broadcast_arrays(*ranges[:2])
    finite = all(np.all(np.isfinite(r)) for r in ranges)
    if finite and not np.all(low < high):
        return "inverted or empty input range (input_low >= input_high)"
    return range_problem(*ranges, node.levels)


def fake_quantize_levels(node: FakeQuantize) -> LevelRange:
    """The levels a decomposed ``node`` produces (its output ranges)."""
    low, high = (np.asarray(constant_value(v), np.float32) for v in node.inputs[3:])
    return LevelRange(node.levels, low, high)


def quantized_source(value: Value) -> LevelRange | None:
    """The levels of ``value`` when it is (or will be, after decomposition and propagation) a
    Dequantize: a decomposable activation FakeQuantize or a Dequantize, followed by ops that
    a Dequantize moves past."""
    path: list[tuple[Node, int]] = []
    node = value.node
    while type(node) in RULES and RULES[type(node)].ports == (0,) and value.index == 0:
        path.append((node, 0))
        value = node.inputs[0]
        node = value.node
    levels = dequantize_levels(value)
    if isinstance(node, FakeQuantize) and fake_quantize_problem(node) is None and not (
            is_constant_subgraph(node.inputs[0])):
        levels = fake_quantize_levels(node)
    if levels is None:
        return None
    for consumer, port in reversed(path):
        if propagation_problem(consumer, port, levels, quantized_source) is not None:
            return None
    return levels


def destination_problems(graph: Graph, node: FakeQuantize, levels: LevelRange
                         ) -> tuple[bool, list[str]]:
    """(does a consumer accept the decomposed ``node``, the problems of those that do not),
    following the output through ops a Dequantize moves past."""
    accepted, problems = False, []
    queue = deque([node.output])
    while queue:
        value = queue.popleft()
        for consumer, port in graph.consumers.get(value, ()):
            if isinstance(consumer, Result):
                problems.append("its output is a model output")
                continue
            if isinstance(consumer, QUANTIZABLE):
                problem = consumer_problem(consumer, port, levels, quantized_source)
            else:
                problem = propagation_problem(consumer, port, levels, quantized_source)
                if problem is None:
                    queue.append(consumer.outputs[0])
            accepted |= problem is None and isinstance(consumer, QUANTIZABLE)
            if problem is not None:
                problems.append(problem)
    return accepted, problems


def decomposition_problem(graph: Graph, node: FakeQuantize) -> str | None:
    """Why the activation FakeQuantize ``node`` stays float (``None``: it is decomposed)."""
    problem = fake_quantize_problem(node)
    if problem is not None:
        return problem
    accepted, problems = destination_problems(graph, node, fake_quantize_levels(node))
    if accepted:
        return None
    unique = list(dict.fromkeys(problems)) or ["its output is not used"]
    return "; ".join(unique)


def _scalar_if_per_tensor(value: Value, levels: LevelRange, suffix: str) -> Value:
    """A per-tensor range as a scalar Constant (it then broadcasts to any rank the level
    indices take on their way through Reshapes); a per-channel one as it is."""
    data = constant_value(value)
    assert data is not None
    if levels.channel_axis(data.ndim) is not None:
        return value
    scalar = np.asarray(data.reshape(-1)[0], dtype=data.dtype)
    return Constant.of(scalar, value.node.origin.derived(suffix, "Const")).output


def decompose(node: FakeQuantize) -> Value:
    """``Dequantize(Quantize(x, il, ih), ol, oh)`` replacing ``node``'s output."""
    levels = fake_quantize_levels(node)
    x, input_low, input_high, output_low, output_high = node.inputs
    quantize = Quantize(origin=node.origin.derived("quantize"),
                        inputs=(x, input_low, input_high), levels=node.levels)
    low = _scalar_if_per_tensor(output_low, levels, "scalar")
    high = _scalar_if_per_tensor(output_high, levels, "scalar")
    return Dequantize(origin=node.origin.derived("dequantize"), tensor_names=node.tensor_names,
                      inputs=(quantize.output, low, high), levels=node.levels).output


def decompose_fake_quantize_with_reasons(graph: Graph
                                         ) -> tuple[Graph, tuple[FloatReason, ...]]:
    """``decompose_fake_quantize`` and the reasons for the FakeQuantizes it left float."""
    # Nodes are rebuilt with new inputs before the rewrite sees them; their Origin object is
    # carried over unchanged, so it identifies the original node.
    selected: set[int] = set()
    reasons: list[FloatReason] = []
    for node in graph.nodes:
        if not isinstance(node, FakeQuantize) or is_constant_subgraph(node.inputs[0]):
            continue
        problem = decomposition_problem(graph, node)
        if problem is None:
            selected.add(id(node.origin))
        else:
            reasons.append(FloatReason(node.origin, FAKE_QUANTIZE, problem))

    def rewrite(node: Node) -> Value | None:
        if isinstance(node, FakeQuantize) and id(node.origin) in selected:
            return decompose(node)
        return None

    return rebuild(graph, rewrite), tuple(reasons)


def decompose_fake_quantize(graph: Graph) -> Graph:
    """Replace each activation FakeQuantize that some consumer can use in integer code by
    ``Dequantize(Quantize(x))`` (module docstring for the conditions).

    Requires range inputs as Constants (else the FakeQuantize stays).  Ensures the same values
    bit for bit (``lpjit.reference.lowp``).  Returns ``graph`` itself when nothing changes.
    """
    return decompose_fake_quantize_with_reasons(graph)[0]
