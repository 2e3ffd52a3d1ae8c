"""The loop-IR verifier: a kernel is well typed, well scoped and in bounds where provable.

Invariants checked (each failure raises ``VerificationError`` naming the kernel, its origin
and the offending statement):

1. Types: operands of every expression and statement agree (see ``_EXPR_RULES``); no
   expression is f16; casts use a mode valid for their types; microkernels get their lanes.
2. Scopes: every variable is used inside its binding (parameter, ``For``, ``Let``,
   ``LocalVar``); no binding shadows a variable in scope; ``Assign`` targets a ``LocalVar``.
3. Buffers: every buffer is a parameter, an allocation in scope, or a constant with data;
   inputs and constants are never stored to; parameters do not share memory.
4. Parallel loops do not nest and never assign a ``LocalVar`` declared outside them.
5. Static bounds: each index's interval (over loop extents, ``Let`` values and the guards of
   enclosing ``If`` statements) lies inside its dimension wherever it is finite.
6. A kernel with fast-math flags does not round floats to integers.
7. A ``BoundsCheck`` (checked mode) has an integer index for a dimension of its buffer and
   reports to an ``error`` record parameter (i64[3]); its index is not bounded statically
   (guarding indices that may fail is its purpose).  Nothing ``Store``s to an error record.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import attrs

from lowering.intervals import UNKNOWN, Interval, bounds, point
from lowering.loop_ir import (
    BINARY_OPS,
    CAST_MODES,
    COMPARE_OPS,
    ERROR_RECORD_SLOTS,
    FAST_MATH_FLAGS,
    INT_ONLY_BINARY_OPS,
    LOOP_KINDS,
    MATH_FUNCS,
    REDUCE_OPS,
    Allocate,
    Assign,
    Binary,
    BoundsCheck,
    Broadcast,
    Buffer,
    Call,
    Cast,
    Compare,
    Expr,
    FloatImm,
    For,
    If,
    IntImm,
    Kernel,
    Let,
    Load,
    LocalVar,
    Ramp,
    ReduceLanes,
    ScalarType,
    Select,
    Seq,
    Shuffle,
    Stmt,
    Store,
    Var,
    VectorType,
    f32,
    f64,
    i1,
    i64,
    value_type,
)
from lowering.microkernels import Microkernel
from lowering.printer import Printer, describe_stmt
from lowering.traversal import walk
from lpjit.errors import VerificationError


@attrs.define
class _Binding:
    kind: str                   # param, loop, let, local
    interval: Interval
    parallel_depth: int


class _Failure(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Verifier:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.printer = Printer()
        self.vars: dict[Var, _Binding] = {}
        self.buffers: set[int] = set()
        self.parallel_depth = 0

    # -- entry -----------------------------------------------------------------------------
    def run(self) -> None:
        self.check_header()
        self.check_fast_math()
        self.stmt(self.kernel.body)

    def fail(self, message: str, stmt: Stmt | None = None) -> VerificationError:
        where = f", in `{describe_stmt(stmt, self.printer)}`" if stmt is not None else ""
        return VerificationError(f"kernel '{self.kernel.name}': {message}{where}",
                                 self.kernel.origin)

    def check_header(self) -> None:
        roots: set[int] = set()
        stored = {id(n.buffer.root) for n in walk(self.kernel.body) if isinstance(n, Store)}
        for p in self.kernel.params:
            if isinstance(p, Var):
                if p.type.lanes != 1 or p.type.elem.is_storage_only:
                    raise self.fail(f"scalar parameter '{p.name}' has type {p.type}")
                self.vars[p] = _Binding("param", UNKNOWN, 0)
                continue
            # Program-level kernels also take constant buffers (weights) and scratch buffers
            # (intermediates in the arena) as parameters.
            if p.role not in ("input", "output", "constant", "scratch", "error"):
                raise self.fail(f"parameter buffer '{p.name}' has role '{p.role}'; "
                                "expected 'input', 'output', 'constant', 'scratch' or "
                                "'error'")
            if id(p.root) in roots and id(p.root) in stored:
                raise self.fail(f"parameter buffers share memory ('{p.name}') and one of "
                                "them is written (noalias would be violated)")
            roots.add(id(p.root))
            self.buffers.add(id(p.root))

    def check_fast_math(self) -> None:
        flags = self.kernel.fast_math
        unknown = [f for f in flags if f not in FAST_MATH_FLAGS]
        if unknown:
            raise self.fail(f"unknown fast-math flags {unknown}; expected {FAST_MATH_FLAGS}")
        if flags and any(_rounds_to_integer(n) for n in walk(self.kernel.body)):
            raise self.fail("fast-math flags on a kernel that rounds to integers "
                            "(requantization must be computed exactly)")

    # -- statements ------------------------------------------------------------------------
    def stmt(self, s: Stmt) -> None:
        try:
            _STMT_RULES[type(s)](self, s)
        except _Failure as failure:
            raise self.fail(failure.message, s) from None

    def bind(self, var: Var, kind: str, interval: Interval) -> None:
        if var in self.vars:
            raise _Failure(f"variable '{self.printer.name(var)}' is bound twice")
        if var.type.elem.is_storage_only:
            raise _Failure(f"variable '{var.name}' has storage-only type {var.type}")
        self.vars[var] = _Binding(kind, interval, self.parallel_depth)

    def scoped(self, var: Var, kind: str, interval: Interval, body: Stmt) -> None:
        self.bind(var, kind, interval)
        try:
            self.stmt(body)
        finally:
            del self.vars[var]

    def access(self, buffer: Buffer, indices: tuple[Expr, ...]) -> int:
        """Check a load/store's buffer and indices; returns the access lanes."""
        if id(buffer.root) not in self.buffers and not (
                buffer.root.role == "constant" and buffer.root.data is not None):
            raise _Failure(f"buffer '{buffer.name}' is not a parameter, a constant or an "
                           "allocation in scope")
        if len(indices) != buffer.rank:
            raise _Failure(f"buffer '{buffer.name}' has rank {buffer.rank} but is indexed "
                           f"with {len(indices)} indices")
        lanes = {i.type.lanes for i in indices} - {1}
        if len(lanes) > 1:
            raise _Failure(f"indices of '{buffer.name}' have different lane counts {lanes}")
        env = {v: b.interval for v, b in self.vars.items()}
        for dim, index in enumerate(indices):
            self.expr(index)
            if not index.type.elem.is_int:
                raise _Failure(f"index {self.show(index)} of '{buffer.name}' has type "
                               f"{index.type}; expected an integer")
            self.check_in_bounds(buffer, dim, bounds(index, env), index)
        return lanes.pop() if lanes else 1

    def check_in_bounds(self, buffer: Buffer, dim: int, iv: Interval, index: Expr) -> None:
        extent = buffer.shape[dim]
        if iv.lo < 0 or iv.hi > extent - 1:
            raise _Failure(f"index {self.show(index)} of dimension {dim} of '{buffer.name}' "
                           f"ranges over {iv}, outside [0, {extent - 1}]")

    def show(self, e: Expr) -> str:
        return f"`{self.printer.expr(e)}`"

    # -- expressions -----------------------------------------------------------------------
    def expr(self, e: Expr) -> None:
        for node in walk(e):
            if isinstance(node, Expr):
                if node.type.elem.is_storage_only:
                    raise _Failure(f"expression {self.show(node)} has storage-only type "
                                   f"{node.type}")
                rule = _EXPR_RULES[Microkernel if isinstance(node, Microkernel)
                                   else type(node)]
                problem = rule(self, node)
                if problem:
                    raise _Failure(f"{problem} in {self.show(node)}")

    def value_of(self, e: Expr, expected) -> None:
        self.expr(e)
        if e.type != expected:
            raise _Failure(f"value {self.show(e)} has type {e.type}, expected {expected}")


def _rounds_to_integer(node: object) -> bool:
    return ((isinstance(node, Cast) and node.mode == "round_even_sat")
            or (isinstance(node, Call) and node.func == "round_half_even"))


# -- statement rules ---------------------------------------------------------------------------

def _store(v: _Verifier, s: Store) -> None:
    if s.buffer.root.role in ("input", "constant", "error"):
        raise _Failure(f"store to {s.buffer.root.role} buffer '{s.buffer.name}'")
    lanes = v.access(s.buffer, s.indices)
    v.value_of(s.value, value_type(s.buffer.dtype).with_lanes(lanes))


def _for(v: _Verifier, s: For) -> None:
    if s.kind.name not in LOOP_KINDS:
        raise _Failure(f"unknown loop kind '{s.kind.name}'; expected one of {LOOP_KINDS}")
    if s.kind.name == "vectorized" and s.kind.width < 2:
        raise _Failure(f"vectorized loop width {s.kind.width} must be at least 2")
    if s.extent < 0:
        raise _Failure(f"loop extent {s.extent} is negative")
    if s.var.type != i64:
        raise _Failure(f"loop variable '{s.var.name}' has type {s.var.type}, expected i64")
    parallel = s.kind.name == "parallel"
    if parallel and v.parallel_depth:
        raise _Failure("parallel loops cannot nest")
    v.parallel_depth += parallel
    try:
        v.scoped(s.var, "loop", Interval(0, s.extent - 1), s.body)
    finally:
        v.parallel_depth -= parallel


def _let(v: _Verifier, s: Let) -> None:
    v.value_of(s.value, s.var.type)
    env = {var: b.interval for var, b in v.vars.items()}
    interval = bounds(s.value, env) if s.value.type.elem.is_int else UNKNOWN
    v.scoped(s.var, "let", interval, s.body)


def _local(v: _Verifier, s: LocalVar) -> None:
    v.value_of(s.init, s.var.type)
    v.scoped(s.var, "local", UNKNOWN, s.body)


def _assign(v: _Verifier, s: Assign) -> None:
    binding = v.vars.get(s.var)
    if binding is None or binding.kind != "local":
        raise _Failure(f"'{v.printer.name(s.var)}' is not a local variable in scope")
    if binding.parallel_depth < v.parallel_depth:
        raise _Failure(f"a parallel loop assigns '{v.printer.name(s.var)}', declared outside "
                       "it (a data race)")
    v.value_of(s.value, s.var.type)


def _if(v: _Verifier, s: If) -> None:
    v.value_of(s.cond, i1)
    saved = {var: attrs.evolve(b) for var, b in v.vars.items()}
    _refine(v, s.cond)
    try:
        v.stmt(s.then)
    finally:
        for var, binding in saved.items():
            v.vars[var].interval = binding.interval
    if s.otherwise is not None:
        v.stmt(s.otherwise)


_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq"}


def _refine(v: _Verifier, cond: Expr) -> None:
    """Narrow variable intervals by the conjuncts ``var <op> expr`` of an ``If`` guard."""
    if isinstance(cond, Binary) and cond.op == "and":
        _refine(v, cond.a)
        _refine(v, cond.b)
        return
    if not isinstance(cond, Compare) or cond.op not in _FLIP:
        return
    op, var, other = cond.op, cond.a, cond.b
    if not isinstance(var, Var):
        op, var, other = _FLIP[op], cond.b, cond.a
    if not isinstance(var, Var) or var not in v.vars or not var.type.elem.is_int:
        return
    limit = bounds(other, {x: b.interval for x, b in v.vars.items()})
    narrowed = {"lt": Interval(-float("inf"), limit.hi - 1), "le": Interval(-float("inf"),
                limit.hi), "gt": Interval(limit.lo + 1, float("inf")),
                "ge": Interval(limit.lo, float("inf")), "eq": limit}[op]
    binding = v.vars[var]
    binding.interval = binding.interval.intersect(narrowed)


def _allocate(v: _Verifier, s: Allocate) -> None:
    b = s.buffer
    if b.role != "scratch" or b.base is not None or b.data is not None:
        raise _Failure(f"allocated buffer '{b.name}' must be a plain scratch buffer")
    if id(b) in v.buffers:
        raise _Failure(f"buffer '{b.name}' is allocated twice")
    v.buffers.add(id(b))
    try:
        v.stmt(s.body)
    finally:
        v.buffers.discard(id(b))


def _bounds_check(v: _Verifier, s: BoundsCheck) -> None:
    record = s.record
    if record.role != "error" or id(record.root) not in v.buffers or record.dtype != i64 \
            or record.shape != (ERROR_RECORD_SLOTS,):
        raise _Failure(f"bounds check reports to '{record.name}', which is not an error "
                       "record parameter (role 'error', i64[3])")
    if not 0 <= s.dim < s.buffer.rank:
        raise _Failure(f"bounds check of dimension {s.dim} of '{s.buffer.name}', which has "
                       f"rank {s.buffer.rank}")
    if s.site < 1:
        raise _Failure(f"bounds check site {s.site} must be positive")
    v.expr(s.index)
    if not s.index.type.elem.is_int:
        raise _Failure(f"bounds check index {v.show(s.index)} has type {s.index.type}; "
                       "expected an integer")


def _seq(v: _Verifier, s: Seq) -> None:
    for child in s.stmts:
        v.stmt(child)


_STMT_RULES: dict[type, Callable[[_Verifier, Stmt], None]] = {
    Store: _store, For: _for, Let: _let, LocalVar: _local, Assign: _assign, If: _if,
    Allocate: _allocate, Seq: _seq, BoundsCheck: _bounds_check,
}


# -- expression rules: each returns a problem description or None -------------------------------

def _var(v: _Verifier, e: Var) -> str | None:
    return None if e in v.vars else f"variable '{v.printer.name(e)}' is used outside its scope"


def _int_imm(v: _Verifier, e: IntImm) -> str | None:
    t = e.type
    if not isinstance(t, ScalarType) or t.is_float:
        return f"integer immediate of type {t}"
    return None if t.min <= e.value <= t.max else f"immediate {e.value} does not fit {t}"


def _float_imm(v: _Verifier, e: FloatImm) -> str | None:
    return None if e.type in (f32, f64) else f"float immediate of type {e.type}"


def _binary(v: _Verifier, e: Binary) -> str | None:
    if e.op not in BINARY_OPS:
        return f"unknown binary op '{e.op}'"
    if e.a.type != e.b.type:
        return f"operands of {e.op} have different types {e.a.type} and {e.b.type}"
    t = e.a.type.elem
    if t.is_float and e.op in INT_ONLY_BINARY_OPS:
        return f"{e.op} needs integer operands, got {e.a.type}"
    if t.is_bool and e.op not in ("and", "or", "xor"):
        return f"{e.op} is not defined on i1"
    if e.op in ("add_sat", "sub_sat") and t.bits > 32:
        return f"{e.op} is defined up to 32-bit integers, got {e.a.type}"
    return None


def _compare(v: _Verifier, e: Compare) -> str | None:
    if e.op not in COMPARE_OPS:
        return f"unknown comparison '{e.op}'"
    if e.a.type != e.b.type:
        return f"operands of {e.op} have different types {e.a.type} and {e.b.type}"
    return None


def _select(v: _Verifier, e: Select) -> str | None:
    c = e.cond.type
    if c.elem != i1 or c.lanes not in (1, e.t.type.lanes):
        return f"select condition has type {c}, expected i1 or i1x{e.t.type.lanes}"
    if e.t.type != e.f.type:
        return f"select branches have different types {e.t.type} and {e.f.type}"
    return None


def cast_problem(source: ScalarType, target: ScalarType, mode: str) -> str | None:
    """Why ``mode`` cannot convert ``source`` to ``target`` (None when it can)."""
    if mode not in CAST_MODES:
        return f"unknown cast mode '{mode}'; expected one of {CAST_MODES}"
    ok = {
        "exact": _exact_cast(source, target),
        "wrap": source.is_int and target.is_int,
        "nearest": target.is_float and not source.is_bool,
        "trunc": source.is_float and target.is_int,
        "round_even_sat": source.is_float and target.is_int,
    }[mode]
    return None if ok else f"cast mode '{mode}' cannot convert {source} to {target}"


def _exact_cast(source: ScalarType, target: ScalarType) -> bool:
    mantissa = {"f32": 24, "f64": 53}
    if source == target:
        return True
    if source.is_float:
        return target.is_float and target.bits >= source.bits
    if target.is_float:
        return source.bits <= mantissa.get(target.name, 0)
    return target.is_int and target.min <= source.min and source.max <= target.max


def _cast(v: _Verifier, e: Cast) -> str | None:
    return cast_problem(e.value.type.elem, e.target, e.mode)


def _call(v: _Verifier, e: Call) -> str | None:
    arity = MATH_FUNCS.get(e.func)
    if arity is None:
        return f"unknown function '{e.func}'; expected one of {sorted(MATH_FUNCS)}"
    if len(e.args) != arity:
        return f"{e.func} takes {arity} arguments, got {len(e.args)}"
    if any(a.type != e.args[0].type for a in e.args):
        return f"arguments of {e.func} have different types"
    if not e.type.elem.is_float and not (e.func in ("abs", "pow") and e.type.elem.is_int):
        return f"{e.func} needs float arguments, got {e.type}"
    return None


def _load(v: _Verifier, e: Load) -> str | None:
    v.access(e.buffer, e.indices)
    return None


def _broadcast(v: _Verifier, e: Broadcast) -> str | None:
    if e.value.type.lanes != 1 or e.lanes < 2:
        return f"broadcast of {e.value.type} to {e.lanes} lanes"
    return None


def _ramp(v: _Verifier, e: Ramp) -> str | None:
    if e.base.type.lanes != 1 or not e.base.type.elem.is_int or e.lanes < 2:
        return f"ramp base must be a scalar integer and lanes >= 2, got {e.base.type}"
    return None


def _shuffle(v: _Verifier, e: Shuffle) -> str | None:
    first = e.vectors[0].type
    if any(x.type.elem != first.elem for x in e.vectors):
        return "shuffle of vectors with different element types"
    total = sum(x.type.lanes for x in e.vectors)
    if not e.indices or any(not 0 <= i < total for i in e.indices):
        return f"shuffle indices must lie in [0, {total - 1}]"
    return None


def _reduce(v: _Verifier, e: ReduceLanes) -> str | None:
    if e.op not in REDUCE_OPS:
        return f"unknown lane reduction '{e.op}'"
    return None if isinstance(e.value.type, VectorType) else "lane reduction of a scalar"


def _microkernel(v: _Verifier, e: Microkernel) -> str | None:
    problems = e.type_errors()
    return f"{e.mnemonic}: {'; '.join(problems)}" if problems else None


_EXPR_RULES: dict[type, Callable[[_Verifier, Expr], str | None]] = {
    Var: _var, IntImm: _int_imm, FloatImm: _float_imm, Binary: _binary, Compare: _compare,
    Select: _select, Cast: _cast, Call: _call, Load: _load, Broadcast: _broadcast,
    Ramp: _ramp, Shuffle: _shuffle, ReduceLanes: _reduce, Microkernel: _microkernel,
}


_VERIFIED: weakref.WeakSet[Kernel] = weakref.WeakSet()


def verify_kernel(kernel: Kernel) -> Kernel:
    """Check every invariant of ``kernel``; return it unchanged, or raise VerificationError.
    (Kernels are immutable: one that passed once is not walked again.)"""
    if kernel not in _VERIFIED:
        _Verifier(kernel).run()
        _VERIFIED.add(kernel)
    return kernel


__all__ = ["cast_problem", "point", "verify_kernel"]
