"""Elements the reference evaluators materialise: a node's outputs plus its hidden arrays.

Most evaluators allocate about their outputs.  A few allocate far more, sized by attributes
rather than tensors: a convolution or pool pads its input and builds the window matrix
``[N, C, *out, *kernel]`` (a legal MaxPool with a 2^24-wide ``same_upper`` window has a tiny
output), Interpolate pads its input, attention builds the scores ``[..., L, S]``.  Passes that
evaluate nodes at compile time (``fold_constants``) and the fuzz harness use these counts to
bound what they evaluate, before evaluating anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from lpjit.graph import Graph, Node
from lpjit.ops.attention import ScaledDotProductAttention
from lpjit.ops.interpolate import Interpolate
from lpjit.ops.nn import SlidingWindow


def numel(shape: Sequence[int]) -> int:
    """Elements of ``shape`` as an exact Python int (no int64 overflow)."""
    count = 1
    for d in shape:
        count *= int(d)
    return count


def hidden_elements(node: Node) -> int:
    """Elements ``node``'s evaluator materialises besides its outputs (see the module doc)."""
    if isinstance(node, SlidingWindow):
        data, out = node.input_type(0).shape, node.output_types[0].shape
        kernel = node.window_kernel() or ()
        padded = [i + b + e for i, b, e in zip(data[2:], node.pads_begin, node.pads_end)]
        return numel(data[:2]) * (numel(padded) + numel(out[2:]) * numel(kernel))
    if isinstance(node, Interpolate):
        return numel(node.padded_shape)
    if isinstance(node, ScaledDotProductAttention):
        query, key = node.input_type(0).shape, node.input_type(1).shape
        return numel(node.output_types[0].shape[:-1]) * key[-2] + numel(query)
    return 0


def node_elements(node: Node) -> int:
    """Elements of ``node``'s outputs plus its hidden ones."""
    return sum(numel(t.shape) for t in node.output_types) + hidden_elements(node)


def graph_elements(graph: Graph) -> int:
    """Elements the reference executor materialises to run ``graph`` (every tensor plus the
    hidden ones)."""
    return sum(node_elements(node) for node in graph.nodes)
