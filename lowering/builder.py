"""Builder helpers for writing loop nests: ``with b.for_range(n, kind=...) as i:``.

Expression helpers (``select``, ``cast``, ``ramp``, ``vload``, ...) are free functions; the
``KernelBuilder`` collects statements into nested blocks.  ``let``, ``local`` and ``allocate``
bind over the *rest of the current block*, as in::

    b = KernelBuilder("saxpy")
    x = b.input("x", f32, (n,))
    y = b.output("y", f32, (n,))
    a = b.scalar("a", f32)
    with b.for_range(n, kind=vectorized(8)) as i:
        t = b.let(x[i] * a, "t")
        b.store(y, (i,), t + y[i])
    kernel = b.build()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import attrs
import numpy as np

from lowering.loop_ir import (
    SERIAL,
    Allocate,
    Assign,
    Binary,
    Broadcast,
    Buffer,
    Call,
    Cast,
    Compare,
    Expr,
    For,
    If,
    Kernel,
    Let,
    Load,
    LocalVar,
    LoopKind,
    Ramp,
    ReduceLanes,
    ScalarType,
    Select,
    Seq,
    Shuffle,
    Stmt,
    Store,
    Type,
    Var,
    as_expr,
    from_numpy,
    i64,
)
from lowering.verifier import verify_kernel

Index = Expr | int


# -- expression helpers -----------------------------------------------------------------------

def _pair(a: Expr | float, b: Expr | float) -> tuple[Expr, Expr]:
    if isinstance(a, Expr):
        return a, as_expr(b, a.type)
    if isinstance(b, Expr):
        return as_expr(a, b.type), b
    return as_expr(a), as_expr(b)


def binary(op: str, a, b) -> Binary:
    """``a op b``; a Python number takes the type of the other operand."""
    return Binary(op, *_pair(a, b))


def min_(a, b) -> Binary:
    return binary("min", a, b)


def max_(a, b) -> Binary:
    return binary("max", a, b)


def compare(op: str, a, b) -> Compare:
    return Compare(op, *_pair(a, b))


def lt(a, b) -> Compare:
    return compare("lt", a, b)


def le(a, b) -> Compare:
    return compare("le", a, b)


def gt(a, b) -> Compare:
    return compare("gt", a, b)


def ge(a, b) -> Compare:
    return compare("ge", a, b)


def eq(a, b) -> Compare:
    return compare("eq", a, b)


def select(cond: Expr, t, f) -> Select:
    t, f = _pair(t, f)
    return Select(cond, t, f)


def cast(value: Expr, target: ScalarType, mode: str = "exact") -> Cast:
    return Cast(value, target, mode)


def call(func: str, *args) -> Call:
    first = next((a for a in args if isinstance(a, Expr)), None)
    like = first.type if first is not None else i64
    return Call(func, tuple(as_expr(a, like) for a in args))


def fma(a, b, c) -> Call:
    """``a * b + c`` rounded once."""
    return call("fma", a, b, c)


def broadcast(value, lanes: int, like: Type = i64) -> Expr:
    value = as_expr(value, like)
    return value if lanes == 1 else Broadcast(value, lanes)


def ramp(base: Index, lanes: int, stride: int = 1) -> Ramp:
    return Ramp(as_expr(base), stride, lanes)


def reduce_lanes(op: str, value: Expr) -> ReduceLanes:
    return ReduceLanes(op, value)


def shuffle(vectors: Expr | Sequence[Expr], indices: Sequence[int]) -> Shuffle:
    vectors = (vectors,) if isinstance(vectors, Expr) else tuple(vectors)
    return Shuffle(vectors, tuple(indices))


def load(buffer: Buffer, *indices: Index) -> Load:
    return Load(buffer, tuple(as_expr(i) for i in indices))


def vload(buffer: Buffer, *indices: Index, lanes: int) -> Load:
    """A dense load of ``lanes`` consecutive elements along the last dimension."""
    *outer, last = indices
    return load(buffer, *outer, ramp(last, lanes))


# -- statements --------------------------------------------------------------------------------

@attrs.frozen
class _Open:
    """A binding that scopes over the rest of its block (closed by ``_close``)."""

    kind: type
    head: Var | Buffer
    value: Expr | None


class KernelBuilder:
    """Collects parameters and statements of one kernel."""

    def __init__(self, name: str, origin=None, fast_math: Sequence[str] = ()) -> None:
        self.name = name
        self.origin = origin
        self.fast_math = tuple(fast_math)
        self.params: list[Buffer | Var] = []
        self._blocks: list[list[Stmt | _Open]] = [[]]
        self._names: dict[str, int] = {}

    # -- parameters and buffers ----------------------------------------------------------------
    def buffer(self, name: str, dtype: ScalarType, shape: Sequence[int], role: str,
               strides: Sequence[int] | None = None, alignment: int = 0) -> Buffer:
        """A parameter buffer (role ``input`` or ``output``), appended to the ABI."""
        kwargs = {} if strides is None else {"strides": tuple(strides)}
        buf = Buffer(name, dtype, tuple(shape), role=role, alignment=alignment, **kwargs)
        self.params.append(buf)
        return buf

    def input(self, name: str, dtype: ScalarType, shape: Sequence[int], **kw) -> Buffer:
        return self.buffer(name, dtype, shape, "input", **kw)

    def output(self, name: str, dtype: ScalarType, shape: Sequence[int], **kw) -> Buffer:
        return self.buffer(name, dtype, shape, "output", **kw)

    def scalar(self, name: str, dtype: ScalarType) -> Var:
        var = Var(name, dtype)
        self.params.append(var)
        return var

    @staticmethod
    def constant(name: str, data: np.ndarray, alignment: int = 64) -> Buffer:
        """A read-only buffer holding ``data`` (packed weights, scales), of ``data``'s shape:
        a 0-d array stays 0-d (``np.ascontiguousarray`` would return it as ``[1]``)."""
        data = np.asarray(data, order="C")
        return Buffer(name, from_numpy(data.dtype), data.shape, role="constant",
                      alignment=alignment, data=data)

    # -- statements -----------------------------------------------------------------------------
    def emit(self, stmt: Stmt) -> Stmt:
        self._blocks[-1].append(stmt)
        return stmt

    def store(self, buffer: Buffer, indices: Index | Sequence[Index], value) -> Store:
        indices = tuple(indices) if isinstance(indices, (tuple, list)) else (indices,)
        value = as_expr(value, buffer.dtype)
        return self.emit(Store(buffer, tuple(as_expr(i) for i in indices), value))

    def vstore(self, buffer: Buffer, indices: Sequence[Index], value: Expr) -> Store:
        """A dense store of ``value``'s lanes along the last dimension."""
        *outer, last = indices
        return self.store(buffer, (*outer, ramp(last, value.type.lanes)), value)

    def assign(self, var: Var, value) -> Assign:
        return self.emit(Assign(var, as_expr(value, var.type)))

    def fresh(self, name: str) -> str:
        """``name`` made unique within this builder (``i``, ``i1``, ``i2``...)."""
        count = self._names.get(name, 0)
        self._names[name] = count + 1
        return name if count == 0 else f"{name}{count}"

    def let(self, value: Expr, name: str = "t") -> Var:
        """Bind ``value`` to a new immutable variable for the rest of the block."""
        var = Var(self.fresh(name), value.type)
        self._blocks[-1].append(_Open(Let, var, value))
        return var

    def local(self, init: Expr, name: str = "acc") -> Var:
        """Declare a mutable local (scalar or vector register) for the rest of the block."""
        var = Var(self.fresh(name), init.type)
        self._blocks[-1].append(_Open(LocalVar, var, init))
        return var

    def allocate(self, name: str, dtype: ScalarType, shape: Sequence[int],
                 strides: Sequence[int] | None = None) -> Buffer:
        """A scratch buffer (e.g. a register tile) for the rest of the block; ``strides``
        (default contiguous) may be 0 along dimensions whose index only names the iteration
        that owns the buffer (one plane per loop iteration, indexed like a shared one)."""
        buf = (Buffer(self.fresh(name), dtype, tuple(shape), role="scratch") if strides is None
               else Buffer(self.fresh(name), dtype, tuple(shape), tuple(strides), "scratch"))
        self._blocks[-1].append(_Open(Allocate, buf, None))
        return buf

    @contextlib.contextmanager
    def for_range(self, extent: int, kind: LoopKind = SERIAL, name: str = "i") -> Iterator[Var]:
        """``for var in range(extent)`` run as ``kind``; yields the i64 loop variable."""
        var = Var(self.fresh(name), i64)
        self._blocks.append([])
        yield var
        body = self._close(self._blocks.pop())
        self.emit(For(var, int(extent), kind, body))

    @contextlib.contextmanager
    def if_(self, cond: Expr) -> Iterator[None]:
        self._blocks.append([])
        yield
        self.emit(If(cond, self._close(self._blocks.pop())))

    @contextlib.contextmanager
    def else_(self) -> Iterator[None]:
        """The else branch of the ``If`` just emitted."""
        block = self._blocks[-1]
        if not block or not isinstance(block[-1], If) or block[-1].otherwise is not None:
            raise ValueError("else_() must directly follow an if_() block")
        self._blocks.append([])
        yield
        otherwise = self._close(self._blocks.pop())
        block[-1] = attrs.evolve(block[-1], otherwise=otherwise)

    @staticmethod
    def _close(block: list[Stmt | _Open]) -> Stmt:
        """Fold a block into one statement; open bindings scope over what follows them."""
        body: list[Stmt] = []
        for item in reversed(block):
            if isinstance(item, _Open):
                inner = _seq(body)
                if item.kind is Allocate:
                    body = [Allocate(item.head, inner)]
                else:
                    body = [item.kind(item.head, item.value, inner)]
            else:
                body.insert(0, item)
        return _seq(body)

    def build(self, verify: bool = True) -> Kernel:
        """The kernel (verified unless ``verify=False``)."""
        if len(self._blocks) != 1:
            raise ValueError("build() inside an open for_range/if_ block")
        kernel = Kernel(self.name, tuple(self.params), self._close(self._blocks[0]),
                        self.origin, self.fast_math)
        return verify_kernel(kernel) if verify else kernel


def _seq(stmts: list[Stmt]) -> Stmt:
    return stmts[0] if len(stmts) == 1 else Seq(tuple(stmts))


__all__ = [
    "KernelBuilder",
    "binary",
    "broadcast",
    "call",
    "cast",
    "compare",
    "eq",
    "fma",
    "ge",
    "gt",
    "le",
    "load",
    "lt",
    "max_",
    "min_",
    "ramp",
    "reduce_lanes",
    "select",
    "shuffle",
    "vload",
]
