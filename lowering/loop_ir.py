"""The typed loop-level IR: types, buffers, expressions, statements and kernels.

Design (see ``shared/STYLE.md``):

* Types (``ScalarType``, ``VectorType``) and ``LoopKind`` are frozen values with structural
  equality.  ``f16`` is a *storage* type: a ``Load`` from an f16 buffer has type f32 (exact
  widening) and a ``Store`` to one takes f32 (rounded half to even); no expression is f16.
  ``i1`` buffers hold one byte per element (numpy ``bool``).
* ``Buffer``, every ``Expr`` and every ``Stmt`` are frozen with identity semantics
  (``eq=False``).  An expression's ``type`` is computed once, when it is built; building never
  checks anything -- ``lowering.verifier.verify_kernel`` does.
* Index arithmetic is i64 (loop variables are i64).  A ``Load``/``Store`` takes one index per
  buffer dimension; an index may be a vector (e.g. a ``Ramp``), and then the access has that
  many lanes (scalar indices apply to every lane).  A ``Ramp`` of stride 1 on a dimension of
  stride 1 is a dense vector access.
* Semantics are the executable definition in ``lowering.numba_exec``; the LLVM code generator
  must agree with it bit for bit on integers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs
import numpy as np

from lpjit import dtypes
from lpjit.dtypes import DType
from lpjit.errors import UnsupportedTypeError

if TYPE_CHECKING:
    from lpjit.graph import Origin


# ----------------------------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------------------------

@attrs.frozen
class ScalarType:
    """A scalar element type: ``kind`` is ``b`` (i1), ``i`` (signed), ``u`` (unsigned), ``f``."""

    name: str
    bits: int
    kind: str

    lanes: ClassVar[int] = 1

    @property
    def elem(self) -> ScalarType:
        return self

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        """True for i8..i64 and u8..u16 (not for i1)."""
        return self.kind in ("i", "u")

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    @property
    def is_signed(self) -> bool:
        return self.kind in ("i", "f")

    @property
    def is_storage_only(self) -> bool:
        """f16 lives in memory only; loads widen it to f32."""
        return self.name == "f16"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(_NUMPY[self.name])

    @property
    def nbytes(self) -> int:
        """Bytes per element in memory (i1 takes one byte)."""
        return max(1, self.bits // 8)

    @property
    def min(self) -> int | float:
        if self.is_float:
            return -math.inf
        return -(1 << (self.bits - 1)) if self.kind == "i" else 0

    @property
    def max(self) -> int | float:
        if self.is_float:
            return math.inf
        if self.kind == "b":
            return 1
        return (1 << (self.bits - 1)) - 1 if self.kind == "i" else (1 << self.bits) - 1

    def with_lanes(self, lanes: int) -> Type:
        return self if lanes == 1 else VectorType(self, lanes)

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


@attrs.frozen
class VectorType:
    """``lanes`` elements of ``elem`` held in one register-like value (``f32x8``)."""

    elem: ScalarType
    lanes: int

    @property
    def name(self) -> str:
        return f"{self.elem.name}x{self.lanes}"

    def with_lanes(self, lanes: int) -> Type:
        return self.elem.with_lanes(lanes)

    def __getattr__(self, attribute: str):
        # is_float, is_int, is_signed, bits, kind, numpy, min, max: those of the element.
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(self.elem, attribute)

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


Type = ScalarType | VectorType

i1 = ScalarType("i1", 1, "b")
i8 = ScalarType("i8", 8, "i")
u8 = ScalarType("u8", 8, "u")
i16 = ScalarType("i16", 16, "i")
u16 = ScalarType("u16", 16, "u")
i32 = ScalarType("i32", 32, "i")
i64 = ScalarType("i64", 64, "i")
f16 = ScalarType("f16", 16, "f")
f32 = ScalarType("f32", 32, "f")
f64 = ScalarType("f64", 64, "f")

SCALAR_TYPES: tuple[ScalarType, ...] = (i1, i8, u8, i16, u16, i32, i64, f16, f32, f64)
_NUMPY = {"i1": "bool", "i8": "int8", "u8": "uint8", "i16": "int16", "u16": "uint16",
          "i32": "int32", "i64": "int64", "f16": "float16", "f32": "float32", "f64": "float64"}
_FROM_DTYPE = {"boolean": i1, "i8": i8, "u8": u8, "i16": i16, "u16": u16, "i32": i32,
               "i64": i64, "f16": f16, "f32": f32, "f64": f64}


def scalar_type(name: str) -> ScalarType:
    """The scalar type spelled ``name`` (``f32``, ``u8``, ...)."""
    for t in SCALAR_TYPES:
        if t.name == name:
            return t
    raise UnsupportedTypeError(f"loop IR has no scalar type '{name}'")


def from_dtype(dtype: DType) -> ScalarType:
    """The storage type of graph element type ``dtype`` (boolean -> i1)."""
    if dtype.name in _FROM_DTYPE:
        return _FROM_DTYPE[dtype.name]
    raise UnsupportedTypeError(
        f"element type '{dtype}' has no loop-IR storage type; supported: "
        f"{', '.join(sorted(_FROM_DTYPE))}")


def from_numpy(dtype: np.dtype) -> ScalarType:
    """The scalar type stored as numpy ``dtype``."""
    return from_dtype(dtypes.from_numpy(dtype))


def value_type(storage: ScalarType) -> ScalarType:
    """The type a load of ``storage`` produces: f16 -> f32, others unchanged."""
    return f32 if storage.is_storage_only else storage


# ----------------------------------------------------------------------------------------------
# Loop kinds
# ----------------------------------------------------------------------------------------------

LOOP_KINDS = ("serial", "parallel", "vectorized", "unrolled")


@attrs.frozen
class LoopKind:
    """How a ``For`` runs: serial, parallel (threads), vectorized(width) or unrolled."""

    name: str = "serial"
    width: int = 0

    def __repr__(self) -> str:
        return f"vectorized({self.width})" if self.name == "vectorized" else self.name

    __str__ = __repr__


SERIAL = LoopKind("serial")
PARALLEL = LoopKind("parallel")
UNROLLED = LoopKind("unrolled")


def vectorized(width: int) -> LoopKind:
    """The kind of a loop whose iterations run as lanes of ``width``-wide vectors."""
    return LoopKind("vectorized", width)


# ----------------------------------------------------------------------------------------------
# Buffers
# ----------------------------------------------------------------------------------------------

BUFFER_ROLES = ("input", "output", "constant", "scratch", "error")
"""``error``: the error record of a checked kernel (see ``BoundsCheck``), owned by its caller."""


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides, in elements, of ``shape``."""
    strides, step = [], 1
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


def _freeze_data(data: np.ndarray | None) -> np.ndarray | None:
    if data is None:
        return None
    data = np.asarray(data, order="C")     # keeps a 0-d array 0-d (ascontiguousarray: [1])
    if data.flags.writeable:
        data = data.copy()
        data.flags.writeable = False
    return data


@attrs.frozen(eq=False)
class Buffer:
    """A memory region: element type, shape, strides (in elements), alignment (bytes), role.

    A ``constant`` buffer carries its numpy ``data`` (read-only, C order).  A *view* has a
    ``base`` buffer and an element ``offset`` into it; it owns no memory.
    """

    name: str
    dtype: ScalarType
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    strides: tuple[int, ...] = attrs.field(converter=tuple)
    role: str = "scratch"
    alignment: int = 0
    data: np.ndarray | None = attrs.field(default=None, converter=_freeze_data)
    base: Buffer | None = None
    offset: int = 0

    @strides.default
    def _default_strides(self) -> tuple[int, ...]:
        return contiguous_strides(self.shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def root(self) -> Buffer:
        """The buffer that owns the memory (``self`` unless a view)."""
        return self if self.base is None else self.base.root

    @property
    def root_offset(self) -> int:
        """Element offset of this view inside ``root``."""
        return self.offset + (0 if self.base is None else self.base.root_offset)

    @property
    def span(self) -> int:
        """Elements from the first to one past the last addressable element."""
        if self.numel == 0:
            return 0
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))

    @property
    def align_bytes(self) -> int:
        """Guaranteed alignment of the first element (at least the element size)."""
        return max(self.alignment, self.dtype.nbytes)

    def view(self, name: str, shape: Sequence[int], strides: Sequence[int] | None = None,
             offset: int = 0) -> Buffer:
        """A view of this buffer's memory with another shape/strides (Reshape, Transpose)."""
        strides = contiguous_strides(shape) if strides is None else tuple(strides)
        return Buffer(name, self.dtype, tuple(shape), strides, self.role, 0, None, self, offset)

    def __repr__(self) -> str:
        return f"{self.name}: {self.dtype}[{', '.join(map(str, self.shape))}] {self.role}"

    def __getitem__(self, indices) -> Load:
        indices = indices if isinstance(indices, tuple) else (indices,)
        return Load(self, indices)


# ----------------------------------------------------------------------------------------------
# Expressions
# ----------------------------------------------------------------------------------------------

BINARY_OPS = ("add", "sub", "mul", "div", "floordiv", "mod", "min", "max",
              "and", "or", "xor", "shl", "shr", "add_sat", "sub_sat")
INT_ONLY_BINARY_OPS = ("and", "or", "xor", "shl", "shr", "add_sat", "sub_sat")
COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")
CAST_MODES = ("exact", "wrap", "nearest", "trunc", "round_even_sat")
MATH_FUNCS = {"exp": 1, "log": 1, "sqrt": 1, "tanh": 1, "erf": 1, "floor": 1, "ceil": 1,
              "round_half_even": 1, "abs": 1, "fma": 3, "pow": 2}
REDUCE_OPS = ("add", "min", "max")


def as_expr(value: Expr | float | bool, like: Type = i64) -> Expr:
    """``value`` as an expression; Python numbers become immediates of ``like``'s element."""
    if isinstance(value, Expr):
        return value
    elem = like.elem
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, (float, np.floating)) or elem.is_float:
        imm: Expr = FloatImm(float(value), elem if elem.is_float else f32)
    else:
        imm = IntImm(int(value), elem)
    return imm if like.lanes == 1 else Broadcast(imm, like.lanes)


def _indices(values) -> tuple[Expr, ...]:
    """Index converter: Python ints become i64 immediates."""
    return tuple(as_expr(v, i64) for v in values)


@attrs.frozen(eq=False, repr=False)
class Expr:
    """Base of every expression.  ``type`` is computed at construction by ``infer_type``."""

    type: Type = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "type", self.infer_type())

    def infer_type(self) -> Type:
        raise NotImplementedError

    def __repr__(self) -> str:
        from lowering.printer import print_expr
        return print_expr(self)

    # Arithmetic sugar for builders: Python numbers adopt the other operand's type.
    def _binary(self, op: str, other, reflected: bool = False) -> Binary:
        other = as_expr(other, self.type)
        return Binary(op, other, self) if reflected else Binary(op, self, other)

    def __add__(self, o): return self._binary("add", o)
    def __radd__(self, o): return self._binary("add", o, True)
    def __sub__(self, o): return self._binary("sub", o)
    def __rsub__(self, o): return self._binary("sub", o, True)
    def __mul__(self, o): return self._binary("mul", o)
    def __rmul__(self, o): return self._binary("mul", o, True)
    def __truediv__(self, o): return self._binary("div", o)
    def __rtruediv__(self, o): return self._binary("div", o, True)
    def __floordiv__(self, o): return self._binary("floordiv", o)
    def __rfloordiv__(self, o): return self._binary("floordiv", o, True)
    def __mod__(self, o): return self._binary("mod", o)
    def __and__(self, o): return self._binary("and", o)
    def __or__(self, o): return self._binary("or", o)
    def __xor__(self, o): return self._binary("xor", o)
    def __lshift__(self, o): return self._binary("shl", o)
    def __rshift__(self, o): return self._binary("shr", o)
    def __neg__(self): return self._binary("sub", 0, True)


@attrs.frozen(eq=False, repr=False)
class Var(Expr):
    """A named scalar or vector variable: a loop index, a let binding, a local, a parameter."""

    name: str
    var_type: Type = i64

    def infer_type(self) -> Type:
        return self.var_type


@attrs.frozen(eq=False, repr=False)
class IntImm(Expr):
    """An integer (or i1) constant."""

    value: int
    imm_type: ScalarType = i64

    def infer_type(self) -> Type:
        return self.imm_type


@attrs.frozen(eq=False, repr=False)
class FloatImm(Expr):
    """A floating-point constant (f32 constants hold a value representable in f32)."""

    value: float
    imm_type: ScalarType = f32

    def infer_type(self) -> Type:
        return self.imm_type


@attrs.frozen(eq=False, repr=False)
class Binary(Expr):
    """``a op b`` on equal types, lane-wise, with wrap-around integer arithmetic.

    ``div`` truncates integers toward zero (C); ``floordiv``/``mod`` floor (Python);
    ``min``/``max`` are ``select(a < b, a, b)`` / ``select(a > b, a, b)``; ``shr`` is
    arithmetic for signed, logical for unsigned; ``add_sat``/``sub_sat`` saturate to the type.
    """

    op: str
    a: Expr
    b: Expr

    def infer_type(self) -> Type:
        return self.a.type


@attrs.frozen(eq=False, repr=False)
class Compare(Expr):
    """``a op b`` on equal types -> i1 (lane-wise); float ``ne`` is true for NaN."""

    op: str
    a: Expr
    b: Expr

    def infer_type(self) -> Type:
        return i1.with_lanes(self.a.type.lanes)


@attrs.frozen(eq=False, repr=False)
class Select(Expr):
    """``cond ? t : f``; both sides are evaluated (never guard a memory access with it)."""

    cond: Expr
    t: Expr
    f: Expr

    def infer_type(self) -> Type:
        return self.t.type


@attrs.frozen(eq=False, repr=False)
class Cast(Expr):
    """Convert ``value`` to ``target`` (lanes preserved) with a named semantics ``mode``.

    * ``exact``: every value is representable (int widening by sign/zero extension, i1 -> int,
      small ints -> float, f32 -> f64).
    * ``wrap``: int -> int keeping the low bits (narrowing, or a sign change).
    * ``nearest``: to a float type that may not hold the value, rounding to nearest even
      (i32 -> f32, f64 -> f32).
    * ``trunc``: float -> int rounding toward zero; out-of-range values are undefined.
    * ``round_even_sat``: float -> int rounding half to even, saturating to the target range,
      NaN -> 0 (requantization).
    """

    value: Expr
    target: ScalarType
    mode: str = "exact"

    def infer_type(self) -> Type:
        return self.target.with_lanes(self.value.type.lanes)


@attrs.frozen(eq=False, repr=False)
class Call(Expr):
    """A math function of ``MATH_FUNCS`` applied lane-wise; ``fma(a, b, c) = a*b + c`` rounded once.

    ``pow(a, b)`` is libm's ``pow`` on floats; on integers, ``a`` to the power of ``b``'s bits
    read as unsigned, by squaring, wrapping like the type.
    """

    func: str
    args: tuple[Expr, ...] = attrs.field(converter=tuple)

    def infer_type(self) -> Type:
        return self.args[0].type


@attrs.frozen(eq=False, repr=False)
class Load(Expr):
    """``buffer[indices]``: one index per dimension; vector indices make a vector load."""

    buffer: Buffer
    indices: tuple[Expr, ...] = attrs.field(converter=_indices)

    def infer_type(self) -> Type:
        lanes = max((i.type.lanes for i in self.indices), default=1)
        return value_type(self.buffer.dtype).with_lanes(lanes)


@attrs.frozen(eq=False, repr=False)
class Broadcast(Expr):
    """A vector of ``lanes`` copies of scalar ``value``."""

    value: Expr
    lanes: int

    def infer_type(self) -> Type:
        return self.value.type.elem.with_lanes(self.lanes)


@attrs.frozen(eq=False, repr=False)
class Ramp(Expr):
    """The integer vector ``base + stride * [0, 1, ..., lanes-1]``."""

    base: Expr
    stride: int
    lanes: int

    def infer_type(self) -> Type:
        return self.base.type.elem.with_lanes(self.lanes)


@attrs.frozen(eq=False, repr=False)
class Shuffle(Expr):
    """Lanes picked from the concatenation of ``vectors`` (``shufflevector``)."""

    vectors: tuple[Expr, ...] = attrs.field(converter=tuple)
    indices: tuple[int, ...] = attrs.field(converter=tuple)

    def infer_type(self) -> Type:
        return self.vectors[0].type.elem.with_lanes(len(self.indices))


@attrs.frozen(eq=False, repr=False)
class ReduceLanes(Expr):
    """The horizontal ``op`` (add, min, max) of a vector's lanes -> scalar (in lane order)."""

    op: str
    value: Expr

    def infer_type(self) -> Type:
        return self.value.type.elem


# ----------------------------------------------------------------------------------------------
# Statements
# ----------------------------------------------------------------------------------------------

@attrs.frozen(eq=False, repr=False)
class Stmt:
    """Base of every statement."""

    def __repr__(self) -> str:
        from lowering.printer import print_stmt
        return print_stmt(self)


@attrs.frozen(eq=False, repr=False)
class Store(Stmt):
    """``buffer[indices] = value``; vector indices store ``value``'s lanes (f16 rounds)."""

    buffer: Buffer
    indices: tuple[Expr, ...] = attrs.field(converter=_indices)
    value: Expr


@attrs.frozen(eq=False, repr=False)
class For(Stmt):
    """``for var in range(extent)`` (extent static) run as ``kind``; ``var`` is i64."""

    var: Var
    extent: int
    kind: LoopKind
    body: Stmt


@attrs.frozen(eq=False, repr=False)
class Seq(Stmt):
    """Statements in order."""

    stmts: tuple[Stmt, ...] = attrs.field(converter=tuple)


@attrs.frozen(eq=False, repr=False)
class Let(Stmt):
    """Bind immutable ``var = value`` over ``body``."""

    var: Var
    value: Expr
    body: Stmt


@attrs.frozen(eq=False, repr=False)
class LocalVar(Stmt):
    """Declare a mutable local ``var`` (scalar or vector register) initialised to ``init``."""

    var: Var
    init: Expr
    body: Stmt


@attrs.frozen(eq=False, repr=False)
class Assign(Stmt):
    """``var = value`` for a ``LocalVar`` in scope."""

    var: Var
    value: Expr


@attrs.frozen(eq=False, repr=False)
class If(Stmt):
    """``if cond: then else: otherwise`` (scalar i1 condition)."""

    cond: Expr
    then: Stmt
    otherwise: Stmt | None = None


@attrs.frozen(eq=False, repr=False)
class Allocate(Stmt):
    """Scratch ``buffer`` (uninitialised, on the stack when small) live over ``body``."""

    buffer: Buffer
    body: Stmt


ERROR_RECORD_SLOTS = 3       # i64 slots of an error record: site, index, step


@attrs.frozen(eq=False, repr=False)
class BoundsCheck(Stmt):
    """Checked mode: leave the kernel unless every lane of ``index`` lies in dimension ``dim``
    of ``buffer``, i.e. in ``[0, buffer.shape[dim])``.

    On a violation, unless a failure is recorded already, ``record`` (an ``error`` buffer,
    i64[3]) receives ``record[0] = site`` and ``record[1] =`` the first failing lane's index;
    then the kernel returns at once (the other chunks of a parallel loop finish theirs, and
    the kernel returns after the loop).  ``lowering.bounds_checks`` inserts these before
    every ``Load`` and ``Store``.
    """

    buffer: Buffer
    dim: int
    index: Expr
    record: Buffer
    site: int


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------

FAST_MATH_FLAGS = ("contract", "reassoc", "nnan", "ninf", "nsz", "arcp", "afn")

# How much of LLVM's optimisation a kernel needs (``CPUCodegen.optimize``): "full" is LLVM's
# O3 pipeline; "cleanup" a short one (promote locals, fold, merge, delete dead code) for
# kernels whose loop IR is already the schedule LLVM should keep (register-blocked integer
# convolutions and matrix products), where O3's loop passes find nothing left to do.
OPTIMIZATION_LEVELS = ("full", "cleanup")


@attrs.frozen(eq=False, repr=False)
class Kernel:
    """A function over buffers and scalar parameters, in ABI order.

    ``fast_math`` lists LLVM fast-math flags allowed on this kernel's float arithmetic; the
    verifier rejects them on a kernel that rounds to integers (requantization).
    ``optimization``: one of ``OPTIMIZATION_LEVELS``, how much LLVM optimises it.
    """

    name: str
    params: tuple[Buffer | Var, ...] = attrs.field(converter=tuple)
    body: Stmt
    origin: Origin | None = None
    fast_math: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    optimization: str = attrs.field(default="full",
                                    validator=attrs.validators.in_(OPTIMIZATION_LEVELS))

    @property
    def buffer_params(self) -> tuple[Buffer, ...]:
        return tuple(p for p in self.params if isinstance(p, Buffer))

    @property
    def scalar_params(self) -> tuple[Var, ...]:
        return tuple(p for p in self.params if isinstance(p, Var))

    def __repr__(self) -> str:
        from lowering.printer import print_kernel
        return print_kernel(self)
