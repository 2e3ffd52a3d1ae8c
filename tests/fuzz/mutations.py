"""Mutators that turn a valid IR into a broken or hostile one.

A fuzz case is a seed IR (``seeds.py``) plus one to a few mutations.  Every random decision goes
through a ``Chooser`` (``values.py``, with the pools of wrong values), so one engine serves two
drivers: ``random.Random`` in the long fuzz
command (``tools/fuzz_ir.py``) and hypothesis draws in the test suite, which can then shrink a
failing case to its simplest decisions.

Mutations come in families (``FAMILIES``), so a test can aim at one kind of damage:

``attribute``     ``<data>`` values: negative, huge, NaN, empty, garbage, wrong list lengths,
                  values of other attributes; attributes removed or added
``shape``         Const/Parameter ``shape`` (huge dims that overflow size computations, negative,
                  dynamic, wrong rank) and port ``<dim>`` values
``constant``      Const ``offset`` and ``size``
``element_type``  element types swapped, including unsupported and made-up ones
``values``        the bytes of small constants: shape, axis and index inputs made huge or
                  negative, float constants made NaN or infinite
``weights``       the ``.bin`` truncated, extended, emptied or overwritten
``edge``          edges retargeted to other or missing layers and ports, removed, duplicated
``port``          port ids changed or duplicated, ports removed or added
``layer``         layers deleted, duplicated, re-typed, re-versioned, stripped of id/type/name
``net``           the IR version, the ``<layers>``/``<edges>`` sections, the root element
``xml``           damage to the XML text itself (truncation, stray markup, bad characters)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from xml.etree import ElementTree as ET

import attrs

from fuzz.values import (
    ELEMENT_TYPES,
    FORMATS,
    HUGE_SHAPES,
    INTEGERS,
    IR_VERSIONS,
    SNIPPETS,
    SPECIAL_FLOATS,
    SPECIAL_INTS,
    STRINGS,
    VERSIONS,
    Chooser,
    Pools,
    RandomChooser,
    list_edit,
    new_value,
)

__all__ = ["Case", "Chooser", "Pools", "RandomChooser", "Seed", "make_case"]


@attrs.frozen
class Seed:
    """One valid IR: its name, ``.xml`` bytes and ``.bin`` bytes."""

    name: str
    xml: bytes
    weights: bytes


@attrs.frozen
class Case:
    """A mutated IR and how it was made (``steps``, for the reproducer)."""

    seed: str
    xml: bytes
    weights: bytes
    steps: tuple[str, ...]
    via_files: bool = False

    def describe(self) -> str:
        return f"seed {self.seed}: " + "; ".join(self.steps)


# ------------------------------------------------------------------------------------------
# The working state of one case


@attrs.define
class State:
    """A case being mutated: the XML tree, the weights, the corpus pools."""

    root: ET.Element
    weights: bytearray
    pools: Pools

    def layers(self) -> list[ET.Element]:
        block = self.root.find("layers")
        return [] if block is None else block.findall("layer")

    def edges(self) -> list[ET.Element]:
        block = self.root.find("edges")
        return [] if block is None else block.findall("edge")

    def ports(self, layer: ET.Element, section: str) -> list[ET.Element]:
        block = layer.find(section)
        return [] if block is None else block.findall("port")

    def consts(self) -> list[ET.Element]:
        return [la for la in self.layers()
                if la.get("type", "").lower() in ("const", "constant")
                and la.find("data") is not None]


TreeMutation = Callable[[State, Chooser], "str | None"]
TextMutation = Callable[[bytes, Chooser], "tuple[bytes, str]"]


def _pick_layer(state: State, c: Chooser) -> ET.Element | None:
    layers = state.layers()
    return c.choice(layers) if layers else None


# ------------------------------------------------------------------------------------------
# Tree mutations: each returns a description of what it did, or None when it does not apply.


def mutate_attribute(state: State, c: Chooser) -> str | None:
    candidates = [(la, la.find("data")) for la in state.layers() if la.find("data") is not None]
    candidates = [(la, d) for la, d in candidates if d.attrib]
    if not candidates:
        return None
    layer, data = c.choice(candidates)
    name = c.choice(sorted(data.attrib))
    value = new_value(state.pools, name, data.get(name, ""), c)
    data.set(name, value)
    return f"layer {layer.get('id')} {name}={value[:60]!r}"


def drop_attribute(state: State, c: Chooser) -> str | None:
    candidates = [la.find("data") for la in state.layers()]
    candidates = [d for d in candidates if d is not None and d.attrib]
    if not candidates:
        return None
    data = c.choice(candidates)
    name = c.choice(sorted(data.attrib))
    del data.attrib[name]
    return f"dropped attribute {name}"


def add_attribute(state: State, c: Chooser) -> str | None:
    layer = _pick_layer(state, c)
    if layer is None:
        return None
    data = layer.find("data")
    if data is None:
        data = ET.Element("data")
        layer.insert(0, data)
    name = c.choice(sorted(state.pools.by_name) + ["bogus"])
    value = c.choice(state.pools.by_name.get(name, STRINGS))
    data.set(name, value)
    return f"layer {layer.get('id')} added {name}={value[:60]!r}"


def mutate_shape(state: State, c: Chooser) -> str | None:
    shaped = [la for la in state.layers()
              if la.find("data") is not None and "shape" in la.find("data").attrib]
    if not shaped:
        return None
    layer = c.choice(shaped)
    data = layer.find("data")
    old = data.get("shape", "")
    value = c.choice(HUGE_SHAPES) if c.integer(0, 1) else list_edit(old or "1", c)
    data.set("shape", value)
    return f"layer {layer.get('id')} shape={value[:60]!r}"


def mutate_dim(state: State, c: Chooser) -> str | None:
    dims = [d for d in state.root.iter("dim")]
    if not dims:
        return None
    dim = c.choice(dims)
    dim.text = c.choice(INTEGERS + ("", "garbage", "?", "1..3"))
    return f"a <dim> set to {dim.text!r}"


def mutate_offset_size(state: State, c: Chooser) -> str | None:
    consts = state.consts()
    if not consts:
        return None
    layer = c.choice(consts)
    data = layer.find("data")
    name = c.choice(("offset", "size"))
    n = len(state.weights)
    old = int(data.get(name, "0")) if data.get(name, "0").isdigit() else 0
    value = c.choice((0, 1, old - 1, old + 1, n - 1, n, n + 1, 2 ** 31, 2 ** 32, 2 ** 63 - 1,
                      2 ** 63, 2 ** 64, -1, -(2 ** 63), c.integer(0, max(n, 1))))
    data.set(name, str(value))
    return f"layer {layer.get('id')} {name}={value}"


def mutate_element_type(state: State, c: Chooser) -> str | None:
    typed = [la for la in state.layers()
             if la.find("data") is not None and "element_type" in la.find("data").attrib]
    typed += [la for la in state.layers() if la.find("data") is not None
              and "destination_type" in la.find("data").attrib]
    if not typed:
        return None
    layer = c.choice(typed)
    data = layer.find("data")
    name = "element_type" if "element_type" in data.attrib else "destination_type"
    value = c.choice(ELEMENT_TYPES)
    data.set(name, value)
    return f"layer {layer.get('id')} {name}={value!r}"


def mutate_constant_value(state: State, c: Chooser) -> str | None:
    """Overwrite one element of a small Const in the .bin (axes, shapes, indices, ranges)."""
    small = []
    for layer in state.consts():
        data = layer.find("data")
        fmt = FORMATS.get(data.get("element_type", ""))
        try:
            offset, size = int(data.get("offset", "")), int(data.get("size", ""))
        except ValueError:
            continue
        if fmt and struct.calcsize(fmt) <= size <= 64 and offset + size <= len(state.weights):
            small.append((layer, fmt, offset, size))
    if not small:
        return None
    layer, fmt, offset, size = c.choice(small)
    width = struct.calcsize(fmt)
    position = offset + width * c.integer(0, size // width - 1)
    if fmt[1] in "fe":
        value: float | int = c.choice(SPECIAL_FLOATS)
    else:
        value = c.choice(SPECIAL_INTS)
        bits = 8 * width
        value = value % (2 ** bits) if fmt[1].isupper() else \
            (value + 2 ** (bits - 1)) % (2 ** bits) - 2 ** (bits - 1)
    try:
        state.weights[position:position + width] = struct.pack(fmt, value)
    except (OverflowError, struct.error):
        return None
    return f"layer {layer.get('id')} value at byte {position} = {value}"


def mutate_weights(state: State, c: Chooser) -> str | None:
    n = len(state.weights)
    how = c.choice(("truncate", "extend", "empty", "overwrite", "nan"))
    if how == "truncate":
        cut = c.integer(0, max(n - 1, 0))
        del state.weights[cut:]
        return f".bin truncated to {cut} bytes"
    if how == "extend":
        extra = c.choice((1, 7, 4096, n))
        state.weights.extend(bytes(range(256)) * (extra // 256) + bytes(extra % 256))
        return f".bin extended by {extra} bytes"
    if how == "empty":
        state.weights.clear()
        return ".bin emptied"
    if n == 0:
        return None
    position = c.integer(0, n - 1)
    if how == "overwrite":
        state.weights[position] = c.integer(0, 255)
        return f".bin byte {position} overwritten"
    position -= position % 4
    state.weights[position:position + 4] = struct.pack("<f", float("nan"))[:n - position]
    return f".bin f32 NaN at byte {position}"


def _port_ids(state: State) -> list[str]:
    return [p.get("id", "") for la in state.layers() for s in ("input", "output")
            for p in state.ports(la, s)]


def rewire_edge(state: State, c: Chooser) -> str | None:
    """Connect an edge's source to another layer's real output (type and shape confusion)."""
    edges = state.edges()
    producers = [(la, p) for la in state.layers() for p in state.ports(la, "output")]
    if not edges or not producers:
        return None
    edge = c.choice(edges)
    layer, port = c.choice(producers)
    edge.set("from-layer", layer.get("id", ""))
    edge.set("from-port", port.get("id", ""))
    return f"edge into layer {edge.get('to-layer')} now from layer {layer.get('id')}"


def mutate_edge(state: State, c: Chooser) -> str | None:
    edges = state.edges()
    if not edges:
        return None
    edge = c.choice(edges)
    key = c.choice(("from-layer", "from-port", "to-layer", "to-port"))
    if key.endswith("layer"):
        pool = [la.get("id", "") for la in state.layers()]
    else:
        pool = _port_ids(state)
    value = c.choice(pool + ["-1", "999999", "", "abc", "0x1"])
    edge.set(key, value)
    return f"edge {key}={value!r}"


def remove_edge(state: State, c: Chooser) -> str | None:
    edges = state.edges()
    if not edges:
        return None
    edge = c.choice(edges)
    state.root.find("edges").remove(edge)  # type: ignore[union-attr]
    return f"removed edge {dict(edge.attrib)}"


def duplicate_edge(state: State, c: Chooser) -> str | None:
    edges = state.edges()
    if not edges:
        return None
    edge = c.choice(edges)
    state.root.find("edges").append(ET.Element("edge", dict(edge.attrib)))  # type: ignore
    return f"duplicated edge {dict(edge.attrib)}"


def add_edge(state: State, c: Chooser) -> str | None:
    """An edge between random ports (a second edge into a port, a cycle, a self-loop...)."""
    layers = state.layers()
    producers = [(la, p) for la in layers for p in state.ports(la, "output")]
    consumers = [(la, p) for la in layers for p in state.ports(la, "input")]
    block = state.root.find("edges")
    if not producers or not consumers or block is None:
        return None
    (src, sp), (dst, dp) = c.choice(producers), c.choice(consumers)
    attrib = {"from-layer": src.get("id", ""), "from-port": sp.get("id", ""),
              "to-layer": dst.get("id", ""), "to-port": dp.get("id", "")}
    rewire = c.integer(0, 1) == 1           # replace the port's edge instead of doubling it
    for edge in state.edges():
        same_port = (edge.get("to-layer"), edge.get("to-port")) == (attrib["to-layer"],
                                                                   attrib["to-port"])
        if same_port and rewire:
            block.remove(edge)
    block.append(ET.Element("edge", attrib))
    return f"added edge {attrib}"


def mutate_port(state: State, c: Chooser) -> str | None:
    layer = _pick_layer(state, c)
    if layer is None:
        return None
    section = c.choice(("input", "output"))
    ports = state.ports(layer, section)
    how = c.choice(("renumber", "remove", "duplicate", "add"))
    block = layer.find(section)
    if how == "add" or not ports:
        if block is None:
            block = ET.SubElement(layer, section)
        block.append(ET.Element("port", {"id": c.choice(("90", "0", "-1", ""))}))
        return f"layer {layer.get('id')} added an {section} port"
    port = c.choice(ports)
    if how == "renumber":
        port.set("id", c.choice(_port_ids(state) + ["77", "-1", "", "x"]))
        return f"layer {layer.get('id')} {section} port renumbered {port.get('id')!r}"
    if how == "remove":
        block.remove(port)  # type: ignore[union-attr]
        return f"layer {layer.get('id')} removed {section} port {port.get('id')}"
    block.append(ET.fromstring(ET.tostring(port)))  # type: ignore[union-attr]
    return f"layer {layer.get('id')} duplicated {section} port {port.get('id')}"


def delete_layer(state: State, c: Chooser) -> str | None:
    layer = _pick_layer(state, c)
    if layer is None:
        return None
    state.root.find("layers").remove(layer)  # type: ignore[union-attr]
    if c.integer(0, 1):
        block = state.root.find("edges")
        for edge in state.edges():
            if layer.get("id") in (edge.get("from-layer"), edge.get("to-layer")):
                block.remove(edge)  # type: ignore[union-attr]
        return f"deleted layer {layer.get('id')} and its edges"
    return f"deleted layer {layer.get('id')}"


def duplicate_layer(state: State, c: Chooser) -> str | None:
    layer = _pick_layer(state, c)
    if layer is None:
        return None
    copy = ET.fromstring(ET.tostring(layer))
    new_id = c.choice((layer.get("id", ""), "5000"))
    copy.set("id", new_id)
    state.root.find("layers").append(copy)  # type: ignore[union-attr]
    block = state.root.find("edges")
    if block is not None and new_id != layer.get("id"):
        for edge in state.edges():
            if edge.get("to-layer") == layer.get("id"):
                block.append(ET.Element("edge", {**edge.attrib, "to-layer": new_id}))
    return f"duplicated layer {layer.get('id')} as id {new_id}"


def retype_layer(state: State, c: Chooser) -> str | None:
    layer = _pick_layer(state, c)
    if layer is None:
        return None
    if c.integer(0, 1):
        value = c.choice(state.pools.types)
        layer.set("type", value)
        return f"layer {layer.get('id')} type={value!r}"
    value = c.choice(VERSIONS)
    layer.set("version", value)
    return f"layer {layer.get('id')} version={value!r}"


def strip_layer(state: State, c: Chooser) -> str | None:
    layer = _pick_layer(state, c)
    if layer is None:
        return None
    what = c.choice(("id", "type", "name", "version", "data", "input", "output", "swap-id"))
    if what in ("data", "input", "output"):
        child = layer.find(what)
        if child is None:
            return None
        layer.remove(child)
    elif what == "swap-id":
        other = _pick_layer(state, c)
        a, b = layer.get("id", ""), other.get("id", "")  # type: ignore[union-attr]
        layer.set("id", b)
        other.set("id", a)  # type: ignore[union-attr]
    elif what in layer.attrib:
        del layer.attrib[what]
    return f"layer {layer.get('id')} lost its {what}"


def reorder_layers(state: State, c: Chooser) -> str | None:
    block = state.root.find("layers")
    if block is None:
        return None
    layers = list(block)
    order = c.choice(("reverse", "rotate"))
    layers = layers[::-1] if order == "reverse" else layers[1:] + layers[:1]
    for child in list(block):
        block.remove(child)
    block.extend(layers)
    return f"layers {order}d"


def mutate_net(state: State, c: Chooser) -> str | None:
    how = c.choice(("version", "no-layers", "no-edges", "root", "pre-process", "nest"))
    if how == "version":
        value = c.choice(IR_VERSIONS)
        state.root.set("version", value)
        return f"IR version {value!r}"
    if how in ("no-layers", "no-edges"):
        block = state.root.find(how[3:])
        if block is None:
            return None
        state.root.remove(block)
        return f"removed <{how[3:]}>"
    if how == "root":
        state.root.tag = c.choice(("model", "Net", "net2"))
        return f"root renamed <{state.root.tag}>"
    if how == "pre-process":
        ET.SubElement(state.root, "pre-process", {"reference-layer-name": "x"})
        return "added <pre-process>"
    layer = _pick_layer(state, c)
    if layer is None:
        return None
    nested = layer
    for _ in range(c.choice((10, 70, 500))):
        nested = ET.SubElement(nested, "rt_info")
    return f"layer {layer.get('id')} got deeply nested children"


# ------------------------------------------------------------------------------------------
# Text mutations (on the serialized XML)


def damage_text(text: bytes, c: Chooser) -> tuple[bytes, str]:
    n = len(text)
    how = c.choice(("truncate", "delete", "duplicate", "insert", "byte", "encoding"))
    a = c.integer(0, max(n - 1, 0))
    b = min(n, a + c.choice((1, 2, 10, 100, 1000)))
    if how == "truncate":
        return text[:a], f"XML truncated at byte {a}"
    if how == "delete":
        return text[:a] + text[b:], f"XML bytes {a}:{b} deleted"
    if how == "duplicate":
        return text[:b] + text[a:b] + text[b:], f"XML bytes {a}:{b} duplicated"
    if how == "insert":
        snippet = c.choice(SNIPPETS)
        return text[:a] + snippet.encode("utf-8", "surrogatepass") + text[a:], \
            f"inserted {snippet!r} at byte {a}"
    if how == "byte":
        value = c.integer(0, 255)
        return text[:a] + bytes([value]) + text[a + 1:], f"XML byte {a} set to {value}"
    header = c.choice((b'<?xml version="1.0" encoding="utf-16"?>', b"\xff\xfe",
                       b'<?xml version="2.0"?>', b'<?xml version="1.0" encoding="latin-1"?>',
                       b'<?xml version="1.0" encoding="ut-8"?>',
                       b'<?xml version="1.0" encoding="utf-32"?>',
                       b'<?xml version="1.0" encoding="rot13"?>',
                       b'<?xml version="1.0" encoding="idna"?>'))
    return header + text, f"XML prefixed with {header!r}"


FAMILIES: dict[str, tuple[TreeMutation, ...]] = {
    "attribute": (mutate_attribute, mutate_attribute, drop_attribute, add_attribute),
    "shape": (mutate_shape, mutate_shape, mutate_dim),
    "constant": (mutate_offset_size,),
    "element_type": (mutate_element_type,),
    "values": (mutate_constant_value,),
    "weights": (mutate_weights,),
    "edge": (mutate_edge, rewire_edge, rewire_edge, remove_edge, duplicate_edge, add_edge),
    "port": (mutate_port,),
    "layer": (delete_layer, duplicate_layer, retype_layer, retype_layer, strip_layer,
              reorder_layers),
    "net": (mutate_net,),
}
TEXT_FAMILY = "xml"
ALL_FAMILIES = (*FAMILIES, TEXT_FAMILY)
# The default mix: families that keep the IR readable come up more often, so that cases get
# past the reader's structural checks into shape inference and the reference executor.
DEFAULT_MIX = ("attribute",) * 4 + ("values",) * 4 + ("shape",) * 2 + ("edge",) * 2 + \
    ("layer",) * 2 + ("element_type", "constant", "weights", "port", "net", TEXT_FAMILY)


def make_case(seeds: Sequence[Seed], pools: Pools, c: Chooser,
              families: Sequence[str] = DEFAULT_MIX, max_steps: int = 3) -> Case:
    """A seed with 1..``max_steps`` mutations from ``families`` (text damage applied last).

    A family listed twice in ``families`` is chosen twice as often.
    """
    seed = c.choice(seeds)
    state = State(ET.fromstring(seed.xml), bytearray(seed.weights), pools)
    steps: list[str] = []
    text_steps = 0
    for _ in range(c.integer(1, max_steps)):
        family = c.choice(tuple(families))
        if family == TEXT_FAMILY:
            text_steps += 1
            continue
        description = c.choice(FAMILIES[family])(state, c)
        steps.append(description or "(mutation did not apply)")
    text = ET.tostring(state.root, encoding="utf-8", xml_declaration=True)
    for _ in range(text_steps):
        text, description = damage_text(text, c)
        steps.append(description)
    via_files = c.integer(0, 7) == 0
    return Case(seed.name, text, bytes(state.weights), tuple(steps), via_files)
