"""The low-precision pipeline: FakeQuantize and compressed weights become integer ops.

``LOW_PRECISION_PIPELINE`` is the literal tuple of steps; ``apply_low_precision`` runs them in
order and returns the transformed graph with its ``PrecisionReport``.  Each step maps a graph to
a graph plus the ``FloatReason`` records of what it left float.

It must run before ``fold_constants``, which would fold the weight-decompression chains and
FakeQuantizes of constants into f32 Constants and hide the integers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from lpjit.errors import VerificationError
from lpjit.graph import Graph
from lpjit.passes.decompose_fake_quantize import decompose_fake_quantize_with_reasons
from lpjit.passes.fold_shape_subgraphs import fold_shape_subgraphs
from lpjit.passes.fuse_quantized_operations import fuse_quantized_operations_with_reasons
from lpjit.passes.propagate_dequantize import propagate_dequantize
from lpjit.passes.report import FloatReason, PrecisionReport, build_precision_report

StepResult = tuple[Graph, tuple[FloatReason, ...]]


@attrs.frozen
class LowPrecisionStep:
    """One pipeline entry: a name and ``run(graph) -> (graph, reasons)``."""

    name: str
    run: Callable[[Graph], StepResult]


def _no_reasons(graph_pass: Callable[[Graph], Graph]) -> Callable[[Graph], StepResult]:
    return lambda graph: (graph_pass(graph), ())


LOW_PRECISION_PIPELINE: tuple[LowPrecisionStep, ...] = (
    LowPrecisionStep("fold_shape_subgraphs", _no_reasons(fold_shape_subgraphs)),
    LowPrecisionStep("decompose_fake_quantize", decompose_fake_quantize_with_reasons),
    LowPrecisionStep("propagate_dequantize", _no_reasons(propagate_dequantize)),
    LowPrecisionStep("fuse_quantized_operations", fuse_quantized_operations_with_reasons),
)


@attrs.frozen
class LowPrecisionOptions:
    """``verify``: after each step, check that every node re-infers its types and that the
    graph's inputs and outputs are unchanged (the tests turn it on)."""

    verify: bool = False


@attrs.frozen
class StepTime:
    name: str
    seconds: float


def verify_step(name: str, before: Graph, after: Graph) -> None:
    """Every node of ``after`` re-infers the types it carries; the interface is ``before``'s."""
    for node in after.nodes:
        inferred = tuple(node.infer())
        if inferred != node.output_types:
            raise VerificationError(f"after {name}: carries types {node.output_types} but "
                                    f"infers {inferred}", node.origin)
    interface = [(tuple(p.output.type for p in g.parameters),
                  tuple(r.inputs[0].type for r in g.results)) for g in (before, after)]
    if interface[0] != interface[1]:
        raise VerificationError(f"{name} changed the graph's interface from {interface[0]} to "
                                f"{interface[1]}")


def run_low_precision(graph: Graph, options: LowPrecisionOptions = LowPrecisionOptions()
                      ) -> tuple[Graph, PrecisionReport, tuple[StepTime, ...]]:
    """``apply_low_precision`` plus the wall time of each step."""
    current = graph
    reasons: list[FloatReason] = []
    times = []
    for step in LOW_PRECISION_PIPELINE:
        start = time.perf_counter()
        result, found = step.run(current)
        times.append(StepTime(step.name, time.perf_counter() - start))
        if options.verify:
            verify_step(step.name, current, result)
        current = result
        reasons.extend(found)
    return current, build_precision_report(graph, current, reasons), tuple(times)


def apply_low_precision(graph: Graph, options: LowPrecisionOptions = LowPrecisionOptions()
                        ) -> tuple[Graph, PrecisionReport]:
    """Run ``LOW_PRECISION_PIPELINE`` on ``graph``: quantized Convolution / GroupConvolution /
    MatMul become integer ops, weight-only compressed ones Compressed ops.

    Returns the transformed graph (same inputs and outputs; values equal to float rounding)
    and its ``PrecisionReport`` (every layer's precision; every FakeQuantize and compressed
    weight left float, with the reason).
    """
    transformed, report, _ = run_low_precision(graph, options)
    return transformed, report
