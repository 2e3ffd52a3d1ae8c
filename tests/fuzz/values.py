"""What the mutators choose from: the ``Chooser`` of every random decision, the pools of
wrong values (negative, huge, NaN, empty, garbage, unsupported types, hostile snippets), the
values seen in the corpus, and the edits that derive a wrong value from a valid one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar
from xml.etree import ElementTree as ET

import attrs

T = TypeVar("T")


class Chooser(Protocol):
    """The source of every random decision of a mutation."""

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""

    def choice(self, options: Sequence[T]) -> T:
        """One element of the non-empty ``options``."""


@attrs.define
class RandomChooser:
    """A ``Chooser`` over ``random.Random`` (the fuzz command)."""

    rng: random.Random

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]



INTEGERS = ("-1", "0", "1", "2", "3", "7", "-2", "-2147483648", "2147483647", "2147483648",
            "4294967296", "-4294967296", "9223372036854775807", "9223372036854775808",
            "-9223372036854775809", "18446744073709551616", "123456789012345678901234567890")
FLOATS = ("nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e308", "1e309", "-1e309", "1e-320",
          "-0.0", "0.5", "-3.25", "3.4028235e38", "1e-45")
STRINGS = ("", " ", "garbage", "true", "false", "TRUE", "none", "null", ",", ",,", "1,", ",1",
           "1,,2", "1;2", "1 2", "[1, 2]", "0x10", "+5", "\u00e9\u4e2d", "?", "-", "..", "1..",
           "..5", "3..1", "-1..3", "?,?", "-1,-1", "opset1", "f32", "nf4", "same_upper",
           "numpy", "explicit", "\x01", "1" * 400)
HUGE_SHAPES = ("4294967296, 4294967296", "2147483648", "9223372036854775807",
               "9223372036854775808", "1000000000, 1000000000, 1000000000", "65536, 65536",
               "100000000", "-1", "-2, 3", "0", "0, 5", "", "?", "1..5", ",".join(["1"] * 70),
               ",".join(["2"] * 64), "1, 2, 3, 4, 5, 6, 7")
ELEMENT_TYPES = ("f32", "f16", "bf16", "f64", "i4", "u4", "u1", "i8", "u8", "i16", "u16", "i32",
                 "u32", "i64", "u64", "boolean", "nf4", "f8e4m3", "f8e5m2", "f8e8m0", "f4e2m1",
                 "string", "dynamic", "undefined", "u2", "u3", "u6", "i2", "FP32", "I8", "bool",
                 "", "float32")
LAYER_TYPES = ("Foo", "LSTMCell", "Loop", "If", "TensorIterator", "NonMaxSuppression", "TopK",
               "", "parameter", "RESULT", "const", "Constant", "ReLu", "Softmax")
VERSIONS = tuple(f"opset{i}" for i in range(1, 18)) + (
    "opset0", "opset99", "opset-1", "opset", "opset1a", "OPSET8", "extension", "experimental",
    "", "1")
IR_VERSIONS = ("10", "11", "9", "12", "", "abc", "11.0", " 11", "-11", "99999999999999999999")
SNIPPETS = ("<", ">", "&", "&amp;", "&lt;", "&#0;", "&#x110000;", "&unknown;", "<!DOCTYPE net>",
            "<!DOCTYPE net [<!ENTITY a 'b'>]>", "<![CDATA[x]]>", "<!-- c -->", "<?pi x?>", "\x00",
            "\xff", '"', "'", "</layer>", "<layer>", "<net>", "</net>", "<layers/>",
            '<layer id="0" type="Parameter"/>', "\ufeff", "]]>", "=", "<a><b></a>")


@attrs.frozen
class Pools:
    """Values seen in the corpus: other attributes' values are plausible but wrong."""

    by_name: dict[str, tuple[str, ...]]
    values: tuple[str, ...]
    types: tuple[str, ...]

    @classmethod
    def of(cls, seeds: Sequence[SeedLike]) -> Pools:
        by_name: dict[str, set[str]] = {}
        types: set[str] = set(LAYER_TYPES)
        for seed in seeds:
            for layer in ET.fromstring(seed.xml).iter("layer"):
                types.add(layer.get("type", ""))
                data = layer.find("data")
                for name, value in ([] if data is None else data.attrib.items()):
                    by_name.setdefault(name, set()).add(value)
        values = sorted({v for vs in by_name.values() for v in vs})
        return cls({k: tuple(sorted(v)) for k, v in by_name.items()}, tuple(values),
                   tuple(sorted(types)))



class SeedLike(Protocol):
    """Anything with the ``.xml`` bytes of a seed IR."""

    xml: bytes


FORMATS = {"i64": "<q", "i32": "<i", "f32": "<f", "f16": "<e", "u8": "<B", "i8": "<b",
            "u64": "<Q"}
SPECIAL_INTS = (-1, 0, 1, -2, 2 ** 31 - 1, -(2 ** 31), 2 ** 32, 2 ** 62, 2 ** 63 - 1, -(2 ** 63),
                 1000000, 7)
SPECIAL_FLOATS = (float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e30, -1e30, 1e-30,
                   65504.0, 3.0)


def list_edit(value: str, c: Chooser) -> str:
    """A comma-separated list with one element dropped, added, replaced or the list resized."""
    items = [x.strip() for x in value.split(",")]
    how = c.choice(("drop", "add", "replace", "double", "reverse", "many"))
    if how == "drop":
        del items[c.integer(0, len(items) - 1)]
    elif how == "add":
        items.insert(c.integer(0, len(items)), c.choice(INTEGERS))
    elif how == "replace":
        items[c.integer(0, len(items) - 1)] = c.choice(INTEGERS + FLOATS + ("", "x"))
    elif how == "double":
        items = items + items
    elif how == "reverse":
        items.reverse()
    else:
        items = [items[0]] * c.choice((65, 1000))
    return ", ".join(items)


def scaled(value: str, c: Chooser) -> str:
    """A numeric value (or list) negated or scaled by a large factor."""
    factor = c.choice((-1, 1000, 2 ** 31, 2 ** 32, 2 ** 63, -(2 ** 63)))
    parts = []
    for x in value.split(","):
        try:
            number = float(x)
        except ValueError:
            parts.append(x)
            continue
        scaled = number * factor
        parts.append(str(int(scaled)) if number.is_integer() else repr(scaled))
    return ", ".join(parts)


def new_value(pools: Pools, name: str, old: str, c: Chooser) -> str:
    """A wrong value for attribute ``name`` whose valid value was ``old``."""
    how = c.choice(("integer", "float", "string", "list", "same-name", "any", "scaled", "case"))
    if how == "integer":
        return c.choice(INTEGERS)
    if how == "float":
        return c.choice(FLOATS)
    if how == "string":
        return c.choice(STRINGS)
    if how == "list":
        return list_edit(old, c)
    if how == "same-name":
        return c.choice(pools.by_name.get(name, ()) or STRINGS)
    if how == "any":
        return c.choice(pools.values)
    if how == "scaled":
        return scaled(old, c)
    return old.swapcase()
