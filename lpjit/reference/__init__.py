"""The reference executor: the numpy definition of what a ``Graph`` computes.

It is the oracle for every later stage, so it favours being obviously right over being fast:
float32 arithmetic as OpenVINO does it, FakeQuantize exactly per the spec.

Each op family registers evaluators in a table keyed by node class::

    @evaluator(Add)
    def _add(node: Add, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...

An evaluator returns one array, or a tuple of arrays for multi-output ops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lpjit.errors import InputError, UnsupportedOpError
from lpjit.graph import Graph, Node, Parameter, Result, Value

Evaluator = Callable[..., Any]
EVALUATORS: dict[type[Node], Evaluator] = {}


def evaluator(*classes: type[Node]) -> Callable[[Evaluator], Evaluator]:
    """Register ``fn(node, *input_arrays)`` as the reference semantics of ``classes``."""

    def decorate(fn: Evaluator) -> Evaluator:
        for cls in classes:
            assert cls not in EVALUATORS, f"{cls.__name__} has two evaluators"
            EVALUATORS[cls] = fn
        return fn

    return decorate


def evaluate_node(node: Node, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Run one node on numpy inputs; returns its outputs (checked against inferred types)."""
    fn = EVALUATORS.get(type(node))
    if fn is None:
        raise UnsupportedOpError("has no reference implementation", node.origin)
    out = fn(node, *arrays)
    outs = out if isinstance(out, tuple) else (out,)
    checked = []
    for array, expected in zip(outs, node.output_types, strict=True):
        array = np.asarray(array)
        assert tuple(array.shape) == expected.shape, (
            f"{node.origin.describe()}: reference produced shape {array.shape}, "
            f"inferred {expected.shape}")
        checked.append(array.astype(expected.dtype.numpy, copy=False))
    return tuple(checked)


def bind_inputs(graph: Graph, inputs: Sequence[Any] | Mapping[str, Any]) -> dict[Parameter, np.ndarray]:
    """Match user inputs (in Parameter order, or by name) to Parameters, checking shape/dtype."""
    if isinstance(inputs, Mapping):
        bound = {}
        for name, array in inputs.items():
            try:
                bound[graph.parameter(name)] = array
            except KeyError as e:
                raise InputError(str(e.args[0])) from None
    else:
        if len(inputs) != len(graph.parameters):
            raise InputError(f"got {len(inputs)} inputs; the model has "
                             f"{len(graph.parameters)}")
        bound = dict(zip(graph.parameters, inputs))
    result = {}
    for p in graph.parameters:
        if p not in bound:
            raise InputError(f"missing input '{p.origin.name}' "
                             f"(expected {p.output.type})")
        array = np.asarray(bound[p])
        expected = p.output.type
        if tuple(array.shape) != expected.shape:
            raise InputError(f"input '{p.origin.name}' has shape {array.shape}; "
                             f"expected {expected.shape}")
        result[p] = array.astype(expected.dtype.numpy, copy=False)
    return result


def run_all(graph: Graph, inputs: Sequence[Any] | Mapping[str, Any]) -> dict[Value, np.ndarray]:
    """Every value the graph computes, keyed by ``Value`` (for per-layer comparisons)."""
    values: dict[Value, np.ndarray] = {}
    for p, array in bind_inputs(graph, inputs).items():
        values[p.output] = array
    for node in graph.nodes:
        if isinstance(node, (Parameter, Result)):
            continue
        outs = evaluate_node(node, [values[v] for v in node.inputs])
        for i, array in enumerate(outs):
            values[Value(node, i)] = array
    return values


def run(graph: Graph, inputs: Sequence[Any] | Mapping[str, Any]) -> list[np.ndarray]:
    """The graph's outputs, in Result order."""
    values = run_all(graph, inputs)
    return [values[r.inputs[0]] for r in graph.results]


from lpjit.reference import activations, normalization, quantize, reductions  # noqa: F401
from lpjit.reference import attention, interpolate, nn  # noqa: F401
from lpjit.reference import movement, shape, slicing  # noqa: E402,F401
from lpjit.reference import lowp  # noqa: E402,F401
from lpjit.reference import core as _core  # noqa: E402,F401  (registers evaluators)
