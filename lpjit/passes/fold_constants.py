"""Fold every node whose inputs are all Constants into a Constant.

The folded value is what the reference executor computes for the node, with one exception
taken from the OpenVINO CPU plugin (facts sheet 3.1, pitfall 12): the f16 arithmetic of a
weight-decompression chain ::

    Const(f16|i8|u8|i4|u4) -> Convert(f16) -> [Subtract zero point] -> Multiply(f16 scale)
        -> [Reshape] -> Convert(f32)

is computed in f32 on the exactly converted values, with no rounding to f16 between the
steps: ``W = (float(q) - float(zero_point)) * float(scale)``, each step rounded to f32.  The
reference executor (and a literal reading of the IR) rounds every f16 step, which differs
from OpenVINO by up to half an f16 ulp.

Size limit: a node folds only when what its evaluator materialises (its outputs plus the
hidden arrays of ``lpjit.reference.workspace``, in the output element size) takes at most
``max_bytes`` (16 MiB), or at most ``max_growth`` (8) times the bytes of its Constant
inputs.  The first bound keeps a Broadcast or Tile of a small Constant to a huge shape, or a
pool with a 2^24-wide window, from allocating gigabytes at compile time from a small file;
the second still folds every weight-decompression step of any size (an i4 or u4 Convert to
f16 is 4x its input, f16 to f32 2x), so compiled weights keep the f32 rule above.  Larger
nodes stay in the graph, computed at run time by their lowerings.
"""

from __future__ import annotations

import attrs
import numpy as np

from lpjit import dtypes
from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Result, TensorType, Value, rebuild
from lpjit.ops import elementwise as ew
from lpjit.ops.core import Convert
from lpjit.ops.movement import Transpose
from lpjit.ops.shape import Reshape, Squeeze, Unsqueeze
from lpjit.reference import EVALUATORS, evaluate_node
from lpjit.reference.workspace import hidden_elements, numel

# Types whose values an f16 Convert represents exactly (the start of a decompression chain).
EXACT_IN_F16 = frozenset({dtypes.f16, dtypes.i8, dtypes.u8, dtypes.i4, dtypes.u4})
# f16 ops of a decompression chain that are computed in f32 (arithmetic, then data movement
# of input 0, which rounds nothing).
DECOMPRESSION_ARITHMETIC = (ew.Subtract, ew.Multiply)
DECOMPRESSION_MOVEMENT = (Reshape, Squeeze, Unsqueeze, Transpose)


@attrs.frozen
class FoldConstantsOptions:
    """``f32_decompression``: compute f16 weight-decompression chains in f32 as OpenVINO's
    CPU plugin does (default); ``False`` folds them literally, rounding each step to f16.
    ``max_bytes``, ``max_growth``: the size limit of the module docstring."""

    f32_decompression: bool = True
    max_bytes: int = 16 << 20
    max_growth: int = 8


DEFAULT_OPTIONS = FoldConstantsOptions()


def fold_constants(graph: Graph, options: FoldConstantsOptions = DEFAULT_OPTIONS) -> Graph:
    """Replace every node whose inputs are all Constants by a Constant holding its value.

    Requires a graph whose ops all have reference evaluators.  Ensures that no node other
    than a Parameter, Result or Constant has only Constant inputs, except nodes past the size
    limit (module docstring); a multi-output node's outputs become one Constant each, at their
    consumers.  Origins and tensor names of folded nodes are kept.  The f16 decompression rule
    is in the module docstring.  Returns ``graph`` itself when nothing folds.
    """
    return rebuild(graph, _Folder(options).rewrite)


class _Folder:
    """The state of one ``fold_constants`` run: the unrounded f32 values of the f16 Constants
    that belong to a decompression chain, and the Constants of folded multi-output nodes."""

    def __init__(self, options: FoldConstantsOptions) -> None:
        self.options = options
        self.wide: dict[Node, np.ndarray] = {}     # f16 Constant -> its f32 chain value
        self.split: dict[Value, Constant] = {}     # output of a folded multi-output node

    def rewrite(self, node: Node) -> Node:
        """``node`` folded into a Constant when its inputs are all Constants (for ``rebuild``)."""
        node = self._split_inputs(node)
        if isinstance(node, (Parameter, Result, Constant)) or not _all_constant(node):
            return node
        if not self._small_enough(node):
            return node
        if len(node.output_types) != 1:
            self._fold_outputs(node)
            return node
        wide = self._wide_value(node) if self.options.f32_decompression else None
        if wide is not None and node.output_types[0].dtype == dtypes.f32:
            return _constant(node.origin, node.tensor_names, node.output_types[0], wide)
        (value,) = evaluate_node(node, [_data(v) for v in node.inputs])
        folded = _constant(node.origin, node.tensor_names, node.output_types[0], value)
        if wide is not None:
            self.wide[folded] = wide
        return folded

    def _small_enough(self, node: Node) -> bool:
        """Whether folding ``node`` stays within the size limit (module docstring)."""
        bits = max(t.dtype.bits for t in node.output_types)
        elements = sum(numel(t.shape) for t in node.output_types) + hidden_elements(node)
        inputs = sum(_data(v).nbytes for v in node.inputs)
        limit = max(self.options.max_bytes, self.options.max_growth * inputs)
        return elements * max(bits, 8) // 8 <= limit

    def _split_inputs(self, node: Node) -> Node:
        """``node`` reading the Constants of folded multi-output producers."""
        inputs = tuple(self.split[v].output if v in self.split else v for v in node.inputs)
        return node if inputs == node.inputs else attrs.evolve(node, inputs=inputs)

    def _fold_outputs(self, node: Node) -> None:
        """One Constant per output of multi-output ``node``, used by its consumers."""
        values = evaluate_node(node, [_data(v) for v in node.inputs])
        for index, (value, type_) in enumerate(zip(values, node.output_types)):
            origin = node.origin if index == 0 else node.origin.derived(f"out{index}")
            names = node.tensor_names[index:index + 1]
            self.split[Value(node, index)] = _constant(origin, names, type_, value)

    def _wide_value(self, node: Node) -> np.ndarray | None:
        """The f32 value of ``node`` when it starts, continues or ends a decompression chain."""
        if not node.inputs:
            return None
        out = node.output_types[0].dtype
        first = node.inputs[0].node
        if isinstance(node, Convert):
            if out == dtypes.f16 and node.inputs[0].dtype in EXACT_IN_F16:
                return self._widened(node.inputs[0])
            return self.wide.get(first) if out == dtypes.f32 else None
        if out != dtypes.f16:
            return None
        if isinstance(node, DECOMPRESSION_MOVEMENT) and first in self.wide:
            arrays = [self.wide[first], *(_data(v) for v in node.inputs[1:])]
            return np.asarray(EVALUATORS[type(node)](node, *arrays))
        if isinstance(node, DECOMPRESSION_ARITHMETIC) and any(
                v.node in self.wide for v in node.inputs):
            with np.errstate(all="ignore"):
                result = EVALUATORS[type(node)](node, *map(self._widened, node.inputs))
            return np.asarray(result, dtype=np.float32)
        return None

    def _widened(self, value: Value) -> np.ndarray:
        """A Constant's values as f32: its unrounded chain value if it has one, else its data
        converted (exact for every type in ``EXACT_IN_F16``)."""
        if value.node in self.wide:
            return self.wide[value.node]
        return _data(value).astype(np.float32)


def _all_constant(node: Node) -> bool:
    return all(isinstance(v.node, Constant) for v in node.inputs)


def _data(value: Value) -> np.ndarray:
    node = value.node
    assert isinstance(node, Constant)
    return node.data


def _constant(origin: Origin, names: tuple[tuple[str, ...], ...], type_: TensorType,
              value: np.ndarray) -> Constant:
    """A Constant of ``type_`` holding ``value`` (copied, so no folded input is aliased)."""
    data = np.array(value, dtype=type_.dtype.numpy, copy=True).reshape(type_.shape)
    return Constant(origin=origin, inputs=(), tensor_names=names, element_type=type_.dtype,
                    data=data)
