"""Layer-by-layer accuracy of a compiled model against the float reference.

``compare_model(graph, inputs)`` compiles ``observed_graph(graph)`` -- the model with one extra
Result on every FakeQuantize applied to an activation (a value that is not a constant), so the
compiled code exposes the values the user's quantization defines -- and runs it next to the
reference executor (``lpjit.reference``: FakeQuantize executed as-is, in float) on the same
inputs.  Exposing a value may end a fused group there; it changes where values are stored,
not how they are computed.

For every observed value, ``error_stats`` computes (``a`` compiled, ``r`` reference, float64):

1. ``max_abs_error = max |a - r|``.
2. For a FakeQuantize output, ``step = (output_high - output_low) / (levels - 1)`` (per element,
   broadcast), the error in quantization steps ``e = |a - r| / step`` (a zero step counts 0 when
   equal, infinity otherwise); ``max_error_steps = max e``; ``off_by_step = mean(round(e) >= 1)``,
   the share of elements at another level (round half to even).
3. ``sqnr_db = 10 log10(sum r^2 / sum (a - r)^2)``: infinite when ``a == r``.

The first layer whose error grows is the first observed FakeQuantize, in topological order,
whose ``max_error_steps`` is at least one step and larger than that of every observed
FakeQuantize upstream of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from lpjit.graph import Graph, Node, Origin, Result, Value
from lpjit.ops import lowp
from lpjit.ops.quantize import FakeQuantize
from lpjit.passes.weights import is_constant_subgraph

OBSERVE_PREFIX = "lpjit.observe:"


@attrs.frozen
class Observation:
    """A value exposed as an extra output: the layer that computes it and the output name."""

    origin: Origin
    output: str
    kind: str                   # "FakeQuantize" or "output"


def observed_fake_quantizes(graph: Graph) -> tuple[FakeQuantize, ...]:
    """The FakeQuantize nodes of ``graph`` applied to activations, in topological order."""
    return tuple(node for node in graph.nodes if isinstance(node, FakeQuantize)
                 and not is_constant_subgraph(node.inputs[0]))


def observed_graph(graph: Graph) -> tuple[Graph, tuple[Observation, ...]]:
    """``graph`` plus a Result named ``lpjit.observe:<layer>`` on every observed FakeQuantize;
    the observations list those, then the model's own outputs."""
    extra: list[Result] = []
    observations: list[Observation] = []
    for index, node in enumerate(observed_fake_quantizes(graph)):
        name = OBSERVE_PREFIX + node.origin.name
        origin = Origin(f"{OBSERVE_PREFIX}{index}", name, "Result")
        extra.append(Result(origin=origin, inputs=(node.output,), tensor_names=((name,),)))
        observations.append(Observation(node.origin, name, "FakeQuantize"))
    for result in graph.results:
        observations.append(Observation(result.inputs[0].node.origin, result.names[0], "output"))
    return Graph(graph.name, graph.parameters, (*graph.results, *extra)), tuple(observations)


@attrs.frozen
class LayerError:
    """The error of one observed value (module docstring for the definitions); the step
    figures are ``None`` for a model output that no FakeQuantize defines."""

    layer: str
    kind: str
    elements: int
    levels: int | None
    max_abs_error: float
    max_error_steps: float | None
    off_by_step: float | None
    sqnr_db: float
    grows: bool = False

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values; an infinite SQNR (identical values) is ``null``."""
        values = attrs.asdict(self)
        values["sqnr_db"] = self.sqnr_db if math.isfinite(self.sqnr_db) else None
        return values


def quantization_step(node: FakeQuantize, values: dict[Value, np.ndarray]) -> np.ndarray:
    """``(output_high - output_low) / (levels - 1)`` of ``node`` from the reference values of
    its range inputs, broadcast to its output shape (float64)."""
    low = np.asarray(values[node.inputs[3]], np.float64)
    high = np.asarray(values[node.inputs[4]], np.float64)
    step = (high - low) / (node.levels - 1)
    return np.broadcast_to(step, node.output_types[0].shape)


def error_stats(actual: np.ndarray, expected: np.ndarray, step: np.ndarray | None
                ) -> tuple[float, float | None, float | None, float]:
    """``(max_abs_error, max_error_steps, off_by_step, sqnr_db)`` (module docstring)."""
    a = np.asarray(actual, np.float64)
    r = np.asarray(expected, np.float64)
    diff = np.abs(a - r)
    max_abs = float(diff.max()) if diff.size else 0.0
    noise, signal = float(np.sum(diff * diff)), float(np.sum(r * r))
    if noise == 0:
        sqnr = math.inf
    elif signal == 0:
        sqnr = -math.inf
    else:
        sqnr = 10 * math.log10(signal / noise)
    if step is None:
        return max_abs, None, None, sqnr
    abs_step = np.abs(step)
    in_steps = np.where(abs_step > 0, diff / np.where(abs_step > 0, abs_step, 1.0),
                        np.where(diff == 0, 0.0, np.inf))
    max_steps = float(in_steps.max()) if in_steps.size else 0.0
    off = float(np.mean(np.rint(in_steps) >= 1)) if in_steps.size else 0.0
    return max_abs, max_steps, off, sqnr


@attrs.frozen(eq=False)
class Comparison:
    """The result of ``compare_model``: per observed value errors in topological order (then
    the model outputs), the first layer whose error grows, and how the model was compiled."""

    model: str
    low_precision: bool
    integer_layers: int
    layers: tuple[LayerError, ...]
    first_growth: str | None

    @property
    def mode(self) -> str:
        """``int8`` when some layer runs in integer code, else ``float``."""
        return "int8" if self.integer_layers else "float"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "low_precision": self.low_precision, "mode": self.mode,
                "integer_layers": self.integer_layers, "first_growth": self.first_growth,
                "layers": [layer.to_json() for layer in self.layers]}


def integer_layer_count(graph: Graph) -> int:
    """Nodes of a compiled graph that run integer or compressed-weight code."""
    return sum(isinstance(node, lowp.INTEGER_OPS + lowp.COMPRESSED_OPS) for node in graph.nodes)


def compare_model(graph: Graph, inputs: Sequence[np.ndarray], *, low_precision: bool = True,
                  threads: int | None = None, progress: Callable | None = None) -> Comparison:
    """Compile the observed variant of ``graph`` and compare it with the reference on
    ``inputs`` (Parameter order), layer by layer."""
    import lpjit
    from lpjit import reference

    variant, observations = observed_graph(graph)
    compiled = lpjit.compile(variant, threads=threads, low_precision=low_precision,
                             progress=progress, cache=False)
    outputs = compiled(*inputs)
    return compare_outputs(graph, reference.run_all(graph, list(inputs)), observations,
                           {o.output: outputs[o.output] for o in observations},
                           low_precision, integer_layer_count(compiled.graph))


def compare_outputs(graph: Graph, values: dict[Value, np.ndarray],
                    observations: Sequence[Observation], actual: dict[str, np.ndarray],
                    low_precision: bool, integer_layers: int) -> Comparison:
    """The ``Comparison`` of compiled ``actual`` outputs (by name) with the reference
    ``values`` of every graph value."""
    fake_quantizes = {node.origin: node for node in observed_fake_quantizes(graph)}
    results = {r.names[0]: r for r in graph.results}
    errors: dict[Origin, LayerError] = {}
    layers = []
    for observation in observations:
        step, levels = None, None
        if observation.kind == "FakeQuantize":
            node = fake_quantizes[observation.origin]
            expected = values[node.output]
            step, levels = quantization_step(node, values), node.levels
        else:
            expected = values[results[observation.output].inputs[0]]
        stats = error_stats(actual[observation.output], expected, step)
        layer = LayerError(observation.origin.name, observation.kind, int(np.size(expected)),
                           levels, *stats)
        if observation.kind == "FakeQuantize":
            errors[observation.origin] = layer
        layers.append(layer)
    first = first_growth(graph, errors)
    layers = [attrs.evolve(layer, grows=True) if layer.layer == first
              and layer.kind == "FakeQuantize" else layer for layer in layers]
    return Comparison(graph.name, low_precision, integer_layers, tuple(layers), first)


def first_growth(graph: Graph, errors: dict[Origin, LayerError]) -> str | None:
    """The first observed layer whose error grows (module docstring), or ``None``."""
    upstream: dict[int, float] = {}      # id(node) -> max error of observed layers above it
    for node in graph.nodes:
        above = max((_error_through(value.node, errors, upstream) for value in node.inputs),
                    default=0.0)
        upstream[id(node)] = above
        layer = errors.get(node.origin) if isinstance(node, FakeQuantize) else None
        if layer is not None and layer.max_error_steps is not None and (
                layer.max_error_steps >= 1 and layer.max_error_steps > above):
            return layer.layer
    return None


def _error_through(node: Node, errors: dict[Origin, LayerError],
                   upstream: dict[int, float]) -> float:
    """The largest error observed at ``node`` or above it."""
    own = errors.get(node.origin) if isinstance(node, FakeQuantize) else None
    mine = own.max_error_steps if own is not None and own.max_error_steps is not None else 0.0
    return max(mine, upstream.get(id(node), 0.0))
