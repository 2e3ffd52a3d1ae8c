"""``PrecisionReport``: which precision every layer runs in after the low-precision passes, and
why each FakeQuantize or low-precision weight that does not run as integer code stays float.

The passes return ``FloatReason`` records next to their graph (``*_with_reasons``);
``build_precision_report`` combines them with the transformed graph.  Every FakeQuantize and
every compressed weight of the original graph is accounted for: it runs in integer code, or it
has a reason (one that no pass recorded gets a fallback reason saying so).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Result, Value
from lpjit.ops import lowp
from lpjit.passes.weights import compressed_weight_constants

FAKE_QUANTIZE = "FakeQuantize"
COMPRESSED_WEIGHT = "compressed weight"


@attrs.frozen
class FloatReason:
    """A FakeQuantize or compressed weight (``what``) that does not run as integer code."""

    origin: Origin
    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what} '{self.origin.name}' (layer {self.origin.layer_id}): {self.reason}"


@attrs.frozen
class LayerPrecision:
    """One node of the transformed graph: its layer, op kind and precision
    (``u8 x i8 -> i32 -> f32``, ``f32 -> u8``, ``u8``, ``f32`` ...)."""

    origin: Origin
    kind: str
    precision: str

    def __str__(self) -> str:
        return f"{self.origin.name:48} {self.kind:20} {self.precision}"


@attrs.frozen
class PrecisionReport:
    """Every computing node's precision, and the reason for everything left float."""

    layers: tuple[LayerPrecision, ...] = attrs.field(converter=tuple)
    kept_float: tuple[FloatReason, ...] = attrs.field(converter=tuple)

    def integer_layers(self) -> tuple[LayerPrecision, ...]:
        """The layers that run as integer Convolution / MatMul code."""
        kinds = {cls.__name__ for cls in lowp.INTEGER_OPS}
        return tuple(layer for layer in self.layers if layer.kind in kinds)

    def compressed_layers(self) -> tuple[LayerPrecision, ...]:
        """The layers with float activations and low-precision weights (weight-only)."""
        kinds = {cls.__name__ for cls in lowp.COMPRESSED_OPS}
        return tuple(layer for layer in self.layers if layer.kind in kinds)

    def reason(self, name: str) -> str | None:
        """Why the FakeQuantize or weight called ``name`` stays float (``None``: it does not)."""
        for entry in self.kept_float:
            if entry.origin.name == name:
                return entry.reason
        return None

    def format(self) -> str:
        """A readable table: layers, then the reasons."""
        lines = ["layer precisions:", *(f"  {layer}" for layer in self.layers)]
        if self.kept_float:
            lines += ["left in float:", *(f"  {entry}" for entry in self.kept_float)]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------


def precision_of(node: Node) -> str:
    """The precision string of one node of a transformed graph."""
    if isinstance(node, lowp.QActivationMatMul):
        return "u8 x u8 -> i32 -> f32"
    if isinstance(node, (lowp.QConvolution, lowp.QMatMul)):
        return "u8 x i8 -> i32 -> f32"
    if isinstance(node, (lowp.CompressedMatMul, lowp.CompressedConvolution)):
        return _compressed_precision(node)
    inputs = [v.dtype for v in node.inputs if not isinstance(v.node, Constant)]
    outputs = [t.dtype for t in node.output_types]
    if inputs and set(inputs) != set(outputs[:1]):
        return f"{inputs[0]} -> {outputs[0]}"
    return str(outputs[0]) if outputs else "-"


def _compressed_precision(node: lowp.CompressedMatMul | lowp.CompressedConvolution) -> str:
    data, weights = node.input_type(0).dtype, node.input_type(1).dtype
    zero_point = " - zero point" if len(node.inputs) == 4 else ""
    group = ""
    if isinstance(node, lowp.CompressedMatMul) and node.group_size != node.input_type(1).shape[1]:
        group = f", group {node.group_size}"
    return f"{data} x ({weights}{zero_point}) * f32 scale{group} -> {node.output_types[0].dtype}"


def build_precision_report(original: Graph, transformed: Graph,
                           reasons: Iterable[FloatReason]) -> PrecisionReport:
    """The report of ``transformed`` (made from ``original`` by the passes that gave
    ``reasons``).  A FakeQuantize counts as integer when its ``Quantize`` feeds integer code;
    a weight when a Q op or Compressed op holds it."""
    layers = [LayerPrecision(node.origin, node.kind, precision_of(node))
              for node in transformed.nodes
              if not isinstance(node, (Parameter, Result, Constant))]
    integer_ids = _integer_layer_ids(transformed)
    recorded = {(r.what, r.origin.layer_id): r for r in reasons}
    compressed = {id(c) for c in compressed_weight_constants(original)}
    kept: list[FloatReason] = []
    for node in original.nodes:
        what = _accounted_kind(node, compressed)
        if what is None or node.origin.layer_id in integer_ids:
            continue
        entry = recorded.get((what, node.origin.layer_id))
        kept.append(entry or FloatReason(node.origin, what, _fallback_reason(what)))
    return PrecisionReport(layers, kept)


def _accounted_kind(node: Node, compressed: set[int]) -> str | None:
    """FAKE_QUANTIZE, COMPRESSED_WEIGHT, or ``None`` for a node the report does not track."""
    if node.origin.type == FAKE_QUANTIZE and not isinstance(node, lowp.Quantize):
        return FAKE_QUANTIZE
    if id(node) in compressed:
        return COMPRESSED_WEIGHT
    return None


def _fallback_reason(what: str) -> str:
    if what == COMPRESSED_WEIGHT:
        return "not the weight input of a Convolution, GroupConvolution or MatMul"
    return "no low-precision rule applies to it"


def _integer_layer_ids(graph: Graph) -> set[str]:
    """Layer ids of the FakeQuantizes whose Quantize feeds integer code, and of the weight
    sources held by integer or compressed ops."""
    ids: set[str] = set()
    for node in graph.nodes:
        if isinstance(node, lowp.QActivationMatMul):
            ids.update(_quantize_sources(node.inputs[:2]))
            continue
        if isinstance(node, lowp.INTEGER_OPS):
            ids.update(_quantize_sources(node.inputs[:1]))
        if isinstance(node, lowp.INTEGER_OPS + lowp.COMPRESSED_OPS):
            ids.add(node.inputs[1].node.origin.layer_id)
    return ids


def _quantize_sources(values: Sequence[Value]) -> set[str]:
    """Layer ids of the Quantize nodes that ``values`` come from through u8 ops."""
    ids: set[str] = set()
    stack = list(values)
    while stack:
        node = stack.pop().node
        if isinstance(node, lowp.Quantize):
            ids.add(node.origin.layer_id)
        elif not isinstance(node, Constant):
            stack.extend(v for v in node.inputs if v.dtype.name == "u8")
    return ids
