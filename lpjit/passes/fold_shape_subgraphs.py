"""Fold shape subgraphs (ShapeOf -> Gather -> Concat -> Reshape ...) into Constants.

Once every input shape is static, the small integer computations that produce target shapes,
axes and sizes are constants.  Folding them lets shape-consuming ops (Reshape, Broadcast, ...)
see constant inputs, which their type inference requires.
"""

from __future__ import annotations

import attrs
import numpy as np

from lpjit.graph import Constant, Graph, Node, Parameter, Result, constant_value, rebuild
from lpjit.ops.nn import SlidingWindow
from lpjit.ops.registry import IR_NAMES
from lpjit.reference import EVALUATORS, evaluate_node

# Ops whose output depends only on their inputs' shapes (IR type names).
SHAPE_ONLY_OPS = frozenset({"ShapeOf"})


@attrs.frozen
class FoldShapeSubgraphsOptions:
    """``max_elements``: the largest integer/boolean result that is folded into a Constant."""

    max_elements: int = 65536


DEFAULT_OPTIONS = FoldShapeSubgraphsOptions()


def _ir_type(node: Node) -> str:
    return IR_NAMES.get(type(node), (node.kind, 0))[0]


def is_foldable(node: Node, options: FoldShapeSubgraphsOptions = DEFAULT_OPTIONS) -> bool:
    """True when ``node`` is a shape-only op, or has only Constant inputs and a small
    integer/boolean single output; float chains (weight decompression) and convolutions and
    pools never fold."""
    if isinstance(node, (Parameter, Result, Constant)) or len(node.output_types) != 1:
        return False
    if type(node) not in EVALUATORS:
        return False
    if _ir_type(node) in SHAPE_ONLY_OPS:
        return True
    if isinstance(node, SlidingWindow):
        # Never a shape computation, and its evaluator pads the input by the window, whose
        # size is an attribute: a 2^32-wide same_upper window would allocate ~2^32 elements.
        return False
    out = node.output_types[0]
    if out.dtype.is_float or out.numel > options.max_elements:
        return False
    return all(constant_value(v) is not None for v in node.inputs)


def _input_arrays(node: Node) -> list[np.ndarray]:
    """Constant inputs as their data; other inputs (of shape-only ops) as zero-size stand-ins
    with the right shape (a broadcast scalar: no allocation)."""
    arrays = []
    for v in node.inputs:
        data = constant_value(v)
        if data is None:
            data = np.broadcast_to(np.zeros((), v.dtype.numpy), v.shape)
        arrays.append(data)
    return arrays


def fold_constant_node(node: Node, options: FoldShapeSubgraphsOptions = DEFAULT_OPTIONS
                       ) -> Node:
    """``node`` replaced by a Constant holding its reference result when ``is_foldable``
    (keeping origin and tensor names); otherwise ``node`` itself."""
    if not is_foldable(node, options):
        return node
    (value,) = evaluate_node(node, _input_arrays(node))
    out = node.output_types[0]
    data = np.array(value, dtype=out.dtype.numpy, copy=True).reshape(out.shape)
    return Constant(origin=node.origin, inputs=(), tensor_names=node.tensor_names,
                    element_type=out.dtype, data=data)


def fold_shape_subgraphs(graph: Graph, options: FoldShapeSubgraphsOptions = DEFAULT_OPTIONS
                         ) -> Graph:
    """Replace every foldable node (see ``is_foldable``) by a Constant, bottom-up.

    Requires static shapes (true of every ``Graph``).  Ensures no ShapeOf remains and no
    integer/boolean node of at most ``options.max_elements`` elements has only Constant
    inputs.  Returns ``graph`` itself when nothing folds.
    """
    return rebuild(graph, lambda node: fold_constant_node(node, options))
