"""Typed access to a layer's ``<data>`` attributes (all strings in the XML).

Every getter raises ``BadAttributeError`` naming the layer, the attribute, the value found
and what was expected.  The reader builds one ``Attributes`` per layer and passes it to the op
class's ``from_ir``; nothing past the reader sees the raw string dict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs

from lpjit import dtypes
from lpjit.dtypes import DType
from lpjit.errors import BadAttributeError, LpjitError
from lpjit.graph import Origin

_MISSING = object()


@attrs.frozen
class Attributes:
    """A layer's attributes plus its origin, for error messages."""

    values: Mapping[str, str]
    origin: Origin

    def has(self, name: str) -> bool:
        return name in self.values

    def _raw(self, name: str, default: object) -> str | object:
        if name in self.values:
            return self.values[name]
        if default is _MISSING:
            raise BadAttributeError(f"missing attribute '{name}'", self.origin)
        return default

    def _fail(self, name: str, raw: str, expected: str) -> BadAttributeError:
        return BadAttributeError(f"attribute {name}=\"{raw}\" is invalid; expected {expected}",
                                 self.origin)

    def str(self, name: str, default: object = _MISSING) -> str:
        raw = self._raw(name, default)
        return raw if isinstance(raw, str) else raw  # type: ignore[return-value]

    def int(self, name: str, default: object = _MISSING) -> int:
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return raw  # type: ignore[return-value]
        try:
            return int(raw.strip())
        except ValueError:
            raise self._fail(name, raw, "an integer") from None

    def float(self, name: str, default: object = _MISSING) -> float:
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return raw  # type: ignore[return-value]
        try:
            value = float(raw.strip())
        except ValueError:
            raise self._fail(name, raw, "a number") from None
        if math.isnan(value):
            raise self._fail(name, raw, "a number, not NaN")
        return value

    def bool(self, name: str, default: object = _MISSING) -> bool:
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return raw  # type: ignore[return-value]
        key = raw.strip().lower()
        if key in ("true", "1"):
            return True
        if key in ("false", "0"):
            return False
        raise self._fail(name, raw, "'true' or 'false'")

    def ints(self, name: str, default: object = _MISSING) -> tuple[int, ...]:
        """A comma-separated list (``"1, 1"`` or ``"1,1"``; ``""`` is the empty list)."""
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return tuple(raw)  # type: ignore[arg-type]
        try:
            return tuple(int(x) for x in raw.split(",") if x.strip())
        except ValueError:
            raise self._fail(name, raw, "a comma-separated list of integers") from None

    def floats(self, name: str, default: object = _MISSING) -> tuple[float, ...]:
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return tuple(raw)  # type: ignore[arg-type]
        try:
            return tuple(float(x) for x in raw.split(",") if x.strip())
        except ValueError:
            raise self._fail(name, raw, "a comma-separated list of numbers") from None

    def enum(self, name: str, choices: Iterable[str], default: object = _MISSING) -> str:
        """A case-insensitive choice, returned lower-case."""
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return raw  # type: ignore[return-value]
        key = raw.strip().lower()
        allowed = tuple(choices)
        if key not in allowed:
            raise self._fail(name, raw, "one of " + ", ".join(allowed))
        return key

    def dtype(self, name: str, default: object = _MISSING) -> DType:
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return raw  # type: ignore[return-value]
        try:
            return dtypes.from_ir_name(raw)
        except LpjitError as e:
            raise type(e)(f"attribute {name}: {e.reason}", self.origin) from None
