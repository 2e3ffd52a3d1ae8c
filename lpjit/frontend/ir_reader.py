"""Read an OpenVINO IR (v10/v11 ``.xml`` + ``.bin``) into a ``Graph``.

The reader follows OpenVINO's own (``src/frontends/ir``; facts sheet section 1):

1. parse the XML with defusedxml (no DTDs, entities or external references), after checking
   that no tag or text run is longer than 16 MiB, and before checking that elements nest at
   most 64 levels deep (an IR nests about 7; hostile files are rejected in well under 1 s);
2. index the layers by id and their ports by *position* (port ids are labels, not indices);
3. resolve every edge to (producer layer, output index) -> (consumer layer, input index);
4. build nodes by an iterative post-order DFS from the Results: Parameters first in XML order,
   layers no Result reaches are dropped, a cycle is an error naming a layer on it;
5. each op layer becomes ``cls(**cls.from_ir(attributes))`` for the class registered for its
   (type, version); port precisions and dims are ignored (types come from inference);
6. constants are read-only views of the memory-mapped .bin (``lpjit.frontend.elements``);
7. each node is constant-folded as it is built when it is a shape computation
   (``lpjit.passes.fold_shape_subgraphs``), so Reshape & co. see constant shape inputs.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union
from xml.etree.ElementTree import Element, ParseError

import attrs
import defusedxml
import defusedxml.ElementTree as SafeET
import numpy as np

from lpjit.attributes import Attributes
from lpjit.dtypes import DType
from lpjit.errors import (
    BadAttributeError,
    GraphError,
    InputError,
    IRReadError,
    ShapeError,
    UnsupportedError,
    UnsupportedOpError,
)
from lpjit.frontend import elements
from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Result, Value, check_rank
from lpjit.ops import registry
from lpjit.ops.core import parse_partial_shape
from lpjit.passes.fold_shape_subgraphs import fold_constant_node

PathLike = Union[str, "os.PathLike[str]"]
ShapeMap = Mapping[str, Sequence[int]]

SUPPORTED_VERSIONS = (10, 11)
# Limits on the XML itself.  Real IRs stay far below them (tags of a few KB, ~7 levels).
MAX_XML_TOKEN = 16 * 2 ** 20
MAX_XML_DEPTH = 64
# The newest opset OpenVINO 2026.4 defines; a layer claiming a later one is rejected.
NEWEST_OPSET = 17


@attrs.frozen
class Layer:
    """One ``<layer>``: identity, ``<data>`` attributes and port ids in positional order."""

    origin: Origin
    data: Mapping[str, str]
    input_ports: tuple[str, ...]
    output_ports: tuple[str, ...]
    output_names: tuple[tuple[str, ...], ...]
    result_names: tuple[str, ...] | None

    @property
    def id(self) -> str:
        return self.origin.layer_id

    def attributes(self) -> Attributes:
        return Attributes(self.data, self.origin)


@attrs.frozen
class Source:
    """The producer of one input: output ``index`` of layer ``layer_id``."""

    layer_id: str
    index: int


# ------------------------------------------------------------------------------------------
# Public entry point


def read_ir(xml: PathLike | bytes, weights: bytes | PathLike | None = None, *,
            shapes: ShapeMap | None = None) -> Graph:
    """The ``Graph`` of an IR model.

    ``xml`` is the path of a ``.xml`` file, or the XML text itself (``str``/``bytes`` starting
    with ``<``).  ``weights`` is the ``.bin`` content (``bytes``) or path; by default it is
    ``<stem>.bin`` beside a path ``xml`` (memory-mapped read-only).  ``shapes`` maps input
    names (tensor or layer name) to concrete shapes for Parameters with dynamic dimensions.
    """
    text, where = _xml_text(xml)
    if weights is None and where is not None:
        weights = where.with_suffix(".bin")
    root = _parse(text)
    layers = _layers(root)
    sources = _edges(root, layers)
    return _GraphBuilder(layers, sources, _Weights(weights), dict(shapes or {}),
                         root.get("name", "model")).build()


def _is_xml_text(xml: object) -> bool:
    if isinstance(xml, (bytes, bytearray, memoryview)):
        return True
    return isinstance(xml, str) and xml.lstrip("\ufeff \t\r\n").startswith("<")


def _xml_text(xml: PathLike | bytes) -> tuple[bytes, Path | None]:
    """The XML bytes, and the file path they came from (``None`` for inline text)."""
    if _is_xml_text(xml):
        return (xml.encode() if isinstance(xml, str) else bytes(xml)), None  # type: ignore
    if not isinstance(xml, (str, os.PathLike)):
        raise IRReadError(f"xml must be a path or XML text, got {type(xml).__name__}")
    path = Path(xml)
    if not path.is_file():
        raise IRReadError(f"IR file '{path}' does not exist")
    return path.read_bytes(), path


def _parse(text: bytes) -> Element:
    """The ``<net>`` root; malformed or unsafe XML and unsupported versions are IRReadErrors."""
    _check_token_lengths(text)
    try:
        root = SafeET.fromstring(text, forbid_dtd=True)
    except ParseError as e:
        line, column = e.position
        reason = str(e).split(": line ")[0]
        raise IRReadError(f"malformed XML at line {line}, column {column + 1}: {reason}"
                          ) from None
    except defusedxml.DTDForbidden:
        raise IRReadError("the XML contains a DTD (<!DOCTYPE ...>); IR files have none and "
                          "DTDs are rejected for safety") from None
    except defusedxml.EntitiesForbidden as e:
        raise IRReadError(f"the XML declares an entity ('{e.name}'); entities are rejected "
                          "for safety (entity expansion attacks)") from None
    except defusedxml.DefusedXmlException as e:
        raise IRReadError(f"the XML was rejected for safety: {e}") from None
    except (LookupError, ValueError) as e:   # an encoding Python lacks or expat cannot use
        raise IRReadError(f"the XML cannot be decoded ({e}); IR files are UTF-8") from None
    _check_depth(root)
    if root.tag != "net":
        raise IRReadError(f"the root element is <{root.tag}>; expected <net> (an OpenVINO IR)")
    version = root.get("version")
    if version is None or not version.strip().isdigit() \
            or int(version) not in SUPPORTED_VERSIONS:
        raise IRReadError(f"IR version {version!r} is not supported; only IR v10 and v11 "
                          "are supported (re-save the model with openvino.save_model)")
    if root.find("pre-process") is not None:
        raise UnsupportedError("the IR has a <pre-process> block (legacy mean-value "
                               "preprocessing), which lpjit does not support; re-save the model "
                               "with a current OpenVINO so the mean subtraction is an op")
    if root.find("layers") is None:
        raise IRReadError("the IR has no <layers> element")
    return root


def _check_token_lengths(text: bytes) -> None:
    """No run of bytes between two ``<`` (one tag with its attributes, or one text) exceeds
    ``MAX_XML_TOKEN``: a huge attribute is rejected before the parser spends seconds on it."""
    marks = np.flatnonzero(np.frombuffer(text, np.uint8) == ord("<"))
    bounds = np.concatenate(([0], marks, [len(text)]))
    lengths = np.diff(bounds)
    longest = int(lengths.argmax()) if lengths.size else 0
    if lengths.size and lengths[longest] > MAX_XML_TOKEN:
        raise IRReadError(f"the XML has a {lengths[longest]}-byte tag or text at byte "
                          f"{bounds[longest]}; IR files have none longer than "
                          f"{MAX_XML_TOKEN} bytes")


def _check_depth(root: Element) -> None:
    """Elements nest at most ``MAX_XML_DEPTH`` levels (depth-first, so a deep chain fails at
    once)."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            raise IRReadError(f"the XML nests elements more than {MAX_XML_DEPTH} levels deep "
                              f"(<{element.tag}> at level {depth}); IR files nest about 7")
        stack.extend((child, depth + 1) for child in element)


# ------------------------------------------------------------------------------------------
# Layers, ports and edges


def split_names(text: str) -> tuple[str, ...]:
    """A port ``names`` attribute: comma-separated, ``\\,`` is a comma inside a name."""
    names: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] == ",":
            current.append(",")
            i += 2
            continue
        if text[i] == ",":
            names.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    names.append("".join(current))
    return tuple(n.strip() for n in names if n.strip())


def _port_ids(layer: Element, section: str, origin: Origin) -> list[Element]:
    block = layer.find(section)
    ports = [] if block is None else block.findall("port")
    seen: set[str] = set()
    for port in ports:
        pid = port.get("id")
        if pid is None:
            raise IRReadError(f"an <{section}> port has no id", origin)
        if pid in seen:
            raise IRReadError(f"<{section}> has two ports with id {pid}", origin)
        seen.add(pid)
    return ports


def _layer(element: Element) -> Layer:
    layer_id, name, type_ = (element.get(k) for k in ("id", "name", "type"))
    if layer_id is None or type_ is None:
        shown = name or "?"
        raise IRReadError(f"layer '{shown}' lacks its 'id' or 'type' attribute")
    origin = Origin(layer_id, name if name is not None else layer_id, type_,
                    element.get("version", ""))
    data = element.find("data")
    inputs = _port_ids(element, "input", origin)
    outputs = _port_ids(element, "output", origin)
    result_names = element.get("output_names")
    return Layer(
        origin=origin,
        data=dict(data.attrib) if data is not None else {},
        input_ports=tuple(p.get("id", "") for p in inputs),
        output_ports=tuple(p.get("id", "") for p in outputs),
        output_names=tuple(split_names(p.get("names", "")) for p in outputs),
        result_names=split_names(result_names) if result_names is not None else None,
    )


def _layers(root: Element) -> dict[str, Layer]:
    """Layers by id, in XML order; duplicate ids are an IRReadError."""
    layers: dict[str, Layer] = {}
    for element in root.find("layers").findall("layer"):  # type: ignore[union-attr]
        layer = _layer(element)
        if layer.id in layers:
            raise IRReadError(f"duplicate layer id {layer.id}: "
                              f"{layers[layer.id].origin.describe()} and "
                              f"{layer.origin.describe()}")
        layers[layer.id] = layer
    return layers


def _edge_end(edge: Element, layers: dict[str, Layer], side: str) -> tuple[Layer, int]:
    """The layer and port *position* at one end (``from``/``to``) of an edge."""
    layer_id, port_id = edge.get(f"{side}-layer"), edge.get(f"{side}-port")
    shown = " ".join(f'{k}="{v}"' for k, v in edge.attrib.items())
    if layer_id not in layers:
        raise GraphError(f"<edge {shown} /> refers to layer {layer_id}, which does not exist")
    layer = layers[layer_id]
    ports = layer.output_ports if side == "from" else layer.input_ports
    if port_id not in ports:
        kind = "output" if side == "from" else "input"
        known = ", ".join(ports) or "none"
        raise GraphError(f"<edge {shown} /> refers to {kind} port {port_id}, which this layer "
                         f"does not have ({kind} ports: {known})", layer.origin)
    return layer, ports.index(port_id)


def _edges(root: Element, layers: dict[str, Layer]) -> dict[tuple[str, int], Source]:
    """(consumer id, input position) -> producer; every input port needs exactly one edge."""
    sources: dict[tuple[str, int], Source] = {}
    block = root.find("edges")
    for edge in [] if block is None else block.findall("edge"):
        producer, out_index = _edge_end(edge, layers, "from")
        consumer, in_index = _edge_end(edge, layers, "to")
        key = (consumer.id, in_index)
        if key in sources:
            raise GraphError(f"input port {consumer.input_ports[in_index]} has two incoming "
                             "edges; expected one", consumer.origin)
        sources[key] = Source(producer.id, out_index)
    for layer in layers.values():
        for position, port in enumerate(layer.input_ports):
            if (layer.id, position) not in sources:
                raise GraphError(f"input port {port} has no incoming edge", layer.origin)
    return sources


# ------------------------------------------------------------------------------------------
# Weights


class _Weights:
    """The .bin as a read-only uint8 array, memory-mapped on first use."""

    def __init__(self, source: bytes | PathLike | None) -> None:
        self.source = source
        self._array: np.ndarray | None = None
        self._decoded: dict[tuple[int, str, tuple[int, ...]], np.ndarray] = {}

    @property
    def label(self) -> str:
        if isinstance(self.source, (str, os.PathLike)):
            return f"weights file '{self.source}'"
        return "weights buffer"

    def array(self, origin: Origin) -> np.ndarray:
        if self._array is None:
            self._array = self._load(origin)
        return self._array

    def _load(self, origin: Origin) -> np.ndarray:
        if self.source is None:
            raise IRReadError("the model has constants but no weights were given; pass "
                              "weights=<the .bin bytes or path>", origin)
        if isinstance(self.source, (bytes, bytearray, memoryview)):
            array = np.frombuffer(self.source, np.uint8)
        else:
            array = _map_file(Path(self.source), origin)
        array.flags.writeable = False
        return array

    def constant(self, layer: Layer, element_type: DType, shape: tuple[int, ...],
                 offset: int, size: int) -> np.ndarray:
        """The decoded constant at ``offset``; checks bounds before touching any data."""
        data = self.array(layer.origin)
        needed = elements.byte_size(element_type, elements.numel(shape))
        if offset + size > data.size:
            raise IRReadError(f"constant at offset {offset} with size {size} ends at byte "
                              f"{offset + size}, past the end of the {self.label} "
                              f"({data.size} bytes)", layer.origin)
        if size < needed:
            raise IRReadError(f"size={size} bytes is too small for {element_type} shape "
                              f"{list(shape)}: {needed} bytes are needed", layer.origin)
        key = (offset, element_type.name, shape)
        if key not in self._decoded:
            self._decoded[key] = elements.decode(data[offset:offset + size], element_type,
                                                 shape)
        return self._decoded[key]


def _map_file(path: Path, origin: Origin) -> np.ndarray:
    if not path.is_file():
        raise IRReadError(f"weights file '{path}' does not exist; it must sit beside the "
                          ".xml with the same stem, or be passed as weights=...", origin)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return np.zeros(0, np.uint8)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, np.uint8)


# ------------------------------------------------------------------------------------------
# Graph construction


class _GraphBuilder:
    """Builds nodes from resolved layers in post-order from the Results."""

    def __init__(self, layers: dict[str, Layer], sources: dict[tuple[str, int], Source],
                 weights: _Weights, shapes: dict[str, Sequence[int]], name: str) -> None:
        self.layers = layers
        self.sources = sources
        self.weights = weights
        self.shapes = shapes
        self.name = name
        self.built: dict[str, Node] = {}

    def build(self) -> Graph:
        parameter_layers = [la for la in self.layers.values() if _is('Parameter', la)]
        result_layers = [la for la in self.layers.values() if _is('Result', la)]
        if not result_layers:
            raise GraphError("the model has no Result layers, so it computes nothing")
        self._check_shape_keys(parameter_layers)
        for layer in parameter_layers:
            self.built[layer.id] = self._parameter(layer)
        for layer in result_layers:
            self._build_from(layer.id)
        return Graph(self.name, [self.built[la.id] for la in parameter_layers],
                     [self.built[la.id] for la in result_layers])

    def _build_from(self, root: str) -> None:
        """Iterative post-order DFS; a layer met again while still open is on a cycle."""
        if root in self.built:
            return
        open_layers = {root}
        stack = [(root, 0)]
        while stack:
            layer_id, position = stack[-1]
            layer = self.layers[layer_id]
            if position == len(layer.input_ports):
                stack.pop()
                open_layers.discard(layer_id)
                self.built[layer_id] = self._node(layer)
                continue
            stack[-1] = (layer_id, position + 1)
            producer = self.sources[(layer_id, position)].layer_id
            if producer in self.built:
                continue
            if producer in open_layers:
                raise GraphError("is part of a cycle", self.layers[producer].origin)
            open_layers.add(producer)
            stack.append((producer, 0))

    def _inputs(self, layer: Layer) -> list[Value]:
        values = []
        for position in range(len(layer.input_ports)):
            source = self.sources[(layer.id, position)]
            producer = self.built[source.layer_id]
            if source.index >= len(producer.output_types):
                port = self.layers[source.layer_id].output_ports[source.index]
                raise GraphError(f"output port {port} is used, but the op has "
                                 f"{len(producer.output_types)} outputs", producer.origin)
            values.append(Value(producer, source.index))
        return values

    def _node(self, layer: Layer) -> Node:
        if _is("Const", layer) or _is("Constant", layer):
            node: Node = self._constant(layer)
        elif _is("Result", layer):
            names = () if layer.result_names is None else (layer.result_names,)
            node = Result(origin=layer.origin, inputs=self._inputs(layer), tensor_names=names)
        else:
            node = self._op(layer)
        if len(layer.output_ports) != len(node.output_types):
            raise GraphError(f"the layer declares {len(layer.output_ports)} output ports; "
                             f"the op produces {len(node.output_types)}", layer.origin)
        return fold_constant_node(node)

    def _op(self, layer: Layer) -> Node:
        opset = registry.parse_opset(layer.origin.version)
        if opset is not None and opset > NEWEST_OPSET:
            raise UnsupportedOpError(f"op version '{layer.origin.version}' is unknown; "
                                     f"OpenVINO opsets are opset1..opset{NEWEST_OPSET}",
                                     layer.origin)
        cls = registry.lookup(layer.origin)
        fields = cls.from_ir(layer.attributes())
        return cls(origin=layer.origin, inputs=self._inputs(layer),
                   tensor_names=layer.output_names, **fields)

    def _constant(self, layer: Layer) -> Constant:
        a = layer.attributes()
        element_type = a.dtype("element_type")
        shape = a.ints("shape")
        offset, size = a.int("offset"), a.int("size")
        for name, value in (("offset", offset), ("size", size)):
            if value < 0:
                raise BadAttributeError(f"attribute {name}=\"{value}\" is negative", layer.origin)
        if any(d < 0 for d in shape):
            raise BadAttributeError(f"attribute shape=\"{a.str('shape')}\" has a negative "
                                    "dimension", layer.origin)
        check_rank(len(shape), layer.origin)
        data = self.weights.constant(layer, element_type, shape, offset, size)
        return Constant(origin=layer.origin, inputs=(), tensor_names=layer.output_names,
                        element_type=element_type, data=data)

    # --- Parameters and their shapes -------------------------------------------------------
    def _check_shape_keys(self, parameter_layers: list[Layer]) -> None:
        known = {la.origin.name for la in parameter_layers}
        known.update(n for la in parameter_layers for names in la.output_names for n in names)
        for key in self.shapes:
            if key not in known:
                inputs = ", ".join(repr(_input_name(la)) for la in parameter_layers) or "none"
                raise InputError(f"shapes has an entry for '{key}', which is not an input of "
                                 f"the model; inputs are: {inputs}")

    def _given_shape(self, layer: Layer) -> tuple[int, ...] | None:
        keys = [layer.origin.name, *(n for names in layer.output_names for n in names)]
        found = {tuple(int(d) for d in self.shapes[k]) for k in keys if k in self.shapes}
        if len(found) > 1:
            raise InputError(f"shapes gives input '{_input_name(layer)}' two different shapes: "
                             f"{sorted(found)}")
        return found.pop() if found else None

    def _parameter(self, layer: Layer) -> Parameter:
        a = layer.attributes()
        element_type = a.dtype("element_type")
        text = a.str("shape")
        declared = parse_partial_shape(text, a)
        shape = _resolve_shape(layer, text, declared, self._given_shape(layer))
        return Parameter(origin=layer.origin, inputs=(), tensor_names=layer.output_names,
                         element_type=element_type, shape=shape)


def _is(ir_type: str, layer: Layer) -> bool:
    return layer.origin.type.lower() == ir_type.lower()


def _input_name(layer: Layer) -> str:
    """How the user names an input: its first tensor name, else the layer name."""
    names = layer.output_names[0] if layer.output_names else ()
    return names[0] if names else layer.origin.name


def _dim_ranges(text: str) -> list[tuple[int, int | None]]:
    """Per dim of a Parameter shape, the allowed (min, max) (``max`` None = unbounded)."""
    ranges: list[tuple[int, int | None]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part in ("?", "-1"):
            ranges.append((0, None))
        elif ".." in part:
            low, high = part.split("..", 1)
            ranges.append((int(low) if low else 0, int(high) if high else None))
        else:
            ranges.append((int(part), int(part)))
    return ranges


def _resolve_shape(layer: Layer, text: str, declared: tuple[int, ...] | None,
                   given: tuple[int, ...] | None) -> tuple[int, ...]:
    """The concrete shape of a Parameter: its static shape, or the one from ``shapes``."""
    name = _input_name(layer)
    if given is None:
        if declared is not None and all(d >= 0 for d in declared):
            return declared
        if declared is None:
            raise ShapeError(f"input '{name}' has a dynamic rank; pass shapes={{'{name}': "
                             "(...)}} with its concrete shape to lpjit.read_ir / lpjit.compile",
                             layer.origin)
        shown = ",".join("?" if d < 0 else str(d) for d in declared)
        example = tuple(max(low, 1) for low, _ in _dim_ranges(text))
        raise ShapeError(f"input '{name}' has a dynamic shape [{shown}]; pass "
                         f"shapes={{'{name}': {example}}} to lpjit.read_ir / lpjit.compile",
                         layer.origin)
    if declared is None:
        if any(d < 0 for d in given):
            raise ShapeError(f"shapes['{name}'] = {given} has a negative dimension",
                             layer.origin)
        return given
    ranges = _dim_ranges(text)
    fits = len(given) == len(ranges) and all(
        low <= d and (high is None or d <= high) for d, (low, high) in zip(given, ranges))
    if not fits:
        raise ShapeError(f"shapes['{name}'] = {given} does not match the declared shape "
                         f"[{text}]", layer.origin)
    return given
