"""Write a ``Graph`` as an OpenVINO IR v11 (``.xml`` + ``.bin``) that OpenVINO reads and runs.

Layout, as OpenVINO's serializer writes it (facts sheet section 1):

* layers in document order Parameters (model input order), other ops (topological order),
  Results (model output order), with ids 0..n-1;
* each layer's type and opset from ``lpjit.ops.registry.IR_NAMES``, its ``<data>`` from
  ``Node.to_ir()`` (Parameter and Const get theirs here);
* input ports numbered 0..n_in-1, output ports from n_in upward, with the precision and dims
  of the inferred types and the tensor names (``\\,`` escapes a comma inside a name);
* constants deduplicated by their bytes, packed types re-encoded (``elements.encode``);
* edges sorted by producer.

Both files are written to temporary names and renamed into place, so rewriting the files a
graph was read from (whose constants may be views of the mapped .bin) is safe.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from xml.etree import ElementTree as ET

from lpjit.dtypes import DType
from lpjit.errors import UnsupportedOpError
from lpjit.frontend import elements
from lpjit.graph import Constant, Graph, Node, Parameter, Result, TensorType
from lpjit.ops.registry import IR_NAMES

IR_VERSION = "11"

# Port precision spellings (upper-case aliases; u1 is BIN, boolean is BOOL).
_PRECISIONS = {"f16": "FP16", "bf16": "BF16", "f32": "FP32", "f64": "FP64", "u1": "BIN",
               "boolean": "BOOL"}


def precision(dtype: DType) -> str:
    """The port ``precision`` spelling of ``dtype`` (``FP32``, ``I8``, ``BIN``, ...)."""
    return _PRECISIONS.get(dtype.name, dtype.name.upper())


def join_names(names: Iterable[str]) -> str:
    """A ``names`` attribute: sorted, comma-separated, commas inside names escaped as ``\\,``."""
    return ",".join(name.replace(",", "\\,") for name in sorted(names))


def write_ir(graph: Graph, xml_path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` to ``xml_path`` and the constants to ``<stem>.bin``; returns the .xml path.

    Raises ``UnsupportedOpError`` for a node class that has no IR type.
    """
    xml_path = Path(xml_path)
    net, weights = _Serializer(graph).net()
    ET.indent(net, space="\t")
    text = b'<?xml version="1.0"?>\n' + ET.tostring(net, encoding="utf-8") + b"\n"
    _replace(xml_path.with_suffix(".bin"), weights)
    _replace(xml_path, text)
    return xml_path


def _replace(path: Path, content: bytes) -> None:
    """Write ``content`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _document_order(graph: Graph) -> list[Node]:
    body = [n for n in graph.nodes if not isinstance(n, (Parameter, Result))]
    return [*graph.parameters, *body, *graph.results]


def _port(parent: ET.Element, port_id: int, tensor: TensorType,
          names: tuple[str, ...] = ()) -> None:
    port = ET.SubElement(parent, "port", {"id": str(port_id), "precision": precision(tensor.dtype)})
    if names:
        port.set("names", join_names(names))
    for d in tensor.shape:
        ET.SubElement(port, "dim").text = str(d)


class _Serializer:
    """Assigns layer ids and unique names, collects constant bytes, builds the ``<net>``."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = _document_order(graph)
        self.ids = {id(node): i for i, node in enumerate(self.nodes)}
        self.blob = bytearray()
        self.offsets: dict[bytes, int] = {}
        self.used_names: set[str] = set()

    def net(self) -> tuple[ET.Element, bytes]:
        net = ET.Element("net", {"name": self.graph.name, "version": IR_VERSION})
        layers = ET.SubElement(net, "layers")
        for node in self.nodes:
            layers.append(self._layer(node))
        edges = ET.SubElement(net, "edges")
        for edge in sorted(self._edges()):
            ET.SubElement(edges, "edge", dict(zip(
                ("from-layer", "from-port", "to-layer", "to-port"), map(str, edge))))
        ET.SubElement(net, "rt_info")
        return net, bytes(self.blob)

    def _edges(self) -> list[tuple[int, int, int, int]]:
        edges = []
        for node in self.nodes:
            for port, value in enumerate(node.inputs):
                producer = value.node
                edges.append((self.ids[id(producer)], len(producer.inputs) + value.index,
                              self.ids[id(node)], port))
        return edges

    def _unique_name(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.used_names:
            candidate, n = f"{name}_{n}", n + 1
        self.used_names.add(candidate)
        return candidate

    def _layer(self, node: Node) -> ET.Element:
        if type(node) not in IR_NAMES:
            raise UnsupportedOpError(f"{node.kind} has no OpenVINO IR type, so the graph "
                                     "cannot be written as IR", node.origin)
        ir_type, version = IR_NAMES[type(node)]
        layer = ET.Element("layer", {"id": str(self.ids[id(node)]),
                                     "name": self._unique_name(node.origin.name),
                                     "type": ir_type, "version": f"opset{version}"})
        if isinstance(node, Result) and node.tensor_names and node.tensor_names[0]:
            layer.set("output_names", join_names(node.tensor_names[0]))
        data = self._data(node)
        if data:
            ET.SubElement(layer, "data", data)
        if node.inputs:
            block = ET.SubElement(layer, "input")
            for port, value in enumerate(node.inputs):
                _port(block, port, value.type)
        if node.output_types:
            block = ET.SubElement(layer, "output")
            for i, tensor in enumerate(node.output_types):
                names = node.tensor_names[i] if i < len(node.tensor_names) else ()
                _port(block, len(node.inputs) + i, tensor, names)
        return layer

    def _data(self, node: Node) -> dict[str, str]:
        if isinstance(node, Parameter):
            return {"shape": ",".join(map(str, node.shape)),
                    "element_type": node.element_type.name}
        if isinstance(node, Constant):
            offset, size = self._store(elements.encode(node.data, node.element_type))
            return {"element_type": node.element_type.name,
                    "shape": ", ".join(map(str, node.shape)),
                    "offset": str(offset), "size": str(size)}
        return node.to_ir()

    def _store(self, content: bytes) -> tuple[int, int]:
        """(offset, size) of ``content`` in the .bin, reusing identical earlier bytes."""
        if content not in self.offsets:
            self.offsets[content] = len(self.blob)
            self.blob += content
        return self.offsets[content], len(content)
