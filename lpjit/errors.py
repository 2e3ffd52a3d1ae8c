"""The one exception hierarchy of lpjit.

Every error a user can provoke (a bad file, an unsupported op, a wrong input) is an
``LpjitError`` subclass whose message says what failed, where (the IR layer's id, name
and type when there is one), why, and how to fix it.  ``assert`` is kept for internal
invariants only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lpjit.graph import Origin


class LpjitError(Exception):
    """Base class of every error lpjit raises on purpose."""

    def __init__(self, message: str, origin: Origin | None = None) -> None:
        self.origin = origin
        self.reason = message
        super().__init__(f"{origin.describe()}: {message}" if origin is not None else message)


class IRReadError(LpjitError):
    """The IR files cannot be read: malformed XML, bad version, missing/short .bin, bad edge."""


class UnsupportedError(LpjitError):
    """A valid IR uses something lpjit does not implement (op, op version, element type)."""


class UnsupportedOpError(UnsupportedError):
    """An op type or op version lpjit does not implement."""


class UnsupportedTypeError(UnsupportedError):
    """An element type lpjit does not implement (nf4, f8e4m3, string, ...)."""


class BadAttributeError(LpjitError):
    """An op attribute is missing or has a value outside its domain."""


class ShapeError(LpjitError):
    """Shape or type inference failed: incompatible shapes, dynamic dims left unresolved."""


class GraphError(LpjitError):
    """The graph is structurally invalid: a cycle, a dangling edge, a wrong input count."""


class LoweringError(LpjitError):
    """Graph -> loop IR lowering failed."""


class VerificationError(LpjitError):
    """An IR verifier found a broken invariant (a compiler bug, reported with its location)."""


class CodegenError(LpjitError):
    """LLVM code generation or compilation failed."""


class BoundsError(LpjitError):
    """Checked mode (``lpjit.compile(..., checks=True)``) caught a kernel indexing outside a
    buffer, before the access: a compiler bug, reported with the kernel, layers and index."""


class InputError(LpjitError):
    """A runtime input is wrong: missing, extra, wrong shape, dtype or layout."""


class ExportError(LpjitError):
    """Ahead-of-time export failed (C compiler, linker, target)."""
