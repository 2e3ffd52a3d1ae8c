"""``vectorize_loops``: rewrite each ``vectorized(w)`` loop into explicit w-lane vector code.

Rule: ``for i in range(n) vectorized(w): S(i)`` becomes
``for v in range(n // w): S(ramp(v*w, 1, w))`` (widened) followed by the scalar tail
``for t in range(n % w): S(n//w*w + t)``.  Widening keeps lane-invariant expressions scalar,
folds affine index arithmetic into ``Ramp``s (so a stride-1 access stays a dense vector load),
broadcasts scalars where a vector is needed, and turns ``Let``/``LocalVar`` bindings inside the
loop into vector bindings.

Requires: the loop body has no loop-carried dependence through a ``LocalVar`` declared outside
it (a reduction -- vectorize a spatial axis instead), no ``If`` whose condition depends on the
loop variable (use ``Select``), no ``Allocate`` and no nested vectorized or parallel loop;
otherwise ``LoweringError``.  Ensures: no ``vectorized`` loop remains.  Semantics are unchanged
because the iterations of a vectorized loop are independent by definition.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from lowering.loop_ir import (
    SERIAL,
    Allocate,
    Assign,
    Binary,
    BoundsCheck,
    Broadcast,
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
    Select,
    Seq,
    Stmt,
    Store,
    Var,
)
from lowering.traversal import rewrite, substitute
from lpjit.errors import LoweringError


def vectorize_loops(kernel: Kernel) -> Kernel:
    """Replace every vectorized loop of ``kernel`` by vector code plus a scalar tail."""

    def lower(node):
        if isinstance(node, For) and node.kind.name == "vectorized":
            return _vectorize_loop(kernel, node)
        return None

    body = rewrite(kernel.body, lower)
    return kernel if body is kernel.body else attrs.evolve(kernel, body=body)


def _vectorize_loop(kernel: Kernel, loop: For) -> Stmt:
    width = loop.kind.width
    full, tail = divmod(loop.extent, width)
    parts: list[Stmt] = []
    if full:
        outer = Var(f"{loop.var.name}_v")
        base: Expr = IntImm(0) if full == 1 else Binary("mul", outer, IntImm(width))
        body = _Widen(kernel, loop).stmt(loop.body, Ramp(base, 1, width))
        parts.append(body if full == 1 else For(outer, full, SERIAL, body))
    if tail:
        t = Var(f"{loop.var.name}_t")
        start = t if not full else Binary("add", t, IntImm(full * width))
        parts.append(For(t, tail, SERIAL, substitute(loop.body, {loop.var: start})))
    return parts[0] if len(parts) == 1 else Seq(tuple(parts))


class _Widen:
    """Widens one loop body; ``mapping`` sends scalar variables to their vector forms."""

    def __init__(self, kernel: Kernel, loop: For) -> None:
        self.kernel, self.loop, self.lanes = kernel, loop, loop.kind.width
        self.mapping: dict[Var, Expr] = {}
        self.inner_locals: set[Var] = set()
        self.memo: dict[int, Expr] = {}

    def fail(self, reason: str) -> LoweringError:
        return LoweringError(f"kernel '{self.kernel.name}': cannot vectorize loop "
                             f"'{self.loop.var.name}': {reason}", self.kernel.origin)

    def bind(self, var: Var, value: Expr) -> None:
        if var in self.mapping:
            self.memo.clear()
        self.mapping[var] = value

    def splat(self, e: Expr) -> Expr:
        return e if e.type.lanes > 1 else Broadcast(e, self.lanes)

    # -- statements ------------------------------------------------------------------------
    def stmt(self, s: Stmt, ramp: Ramp | None = None) -> Stmt:
        if ramp is not None:
            self.bind(self.loop.var, ramp)
        rule = _STMT_RULES.get(type(s))
        if rule is None:
            raise self.fail(f"{type(s).__name__} inside a vectorized loop is not supported")
        return rule(self, s)

    def store(self, s: Store) -> Stmt:
        indices = tuple(self.expr(i) for i in s.indices)
        value = self.expr(s.value)
        if all(i.type.lanes == 1 for i in indices):
            if value.type.lanes > 1:
                raise self.fail(f"the store to '{s.buffer.name}' does not depend on the loop "
                                "variable but its value does")
            return Store(s.buffer, indices, value)
        return Store(s.buffer, indices, self.splat(value))

    def loop_stmt(self, s: For) -> Stmt:
        if s.kind.name in ("vectorized", "parallel"):
            raise self.fail(f"it contains a nested {s.kind.name} loop")
        return For(s.var, s.extent, s.kind, self.stmt(s.body))

    def let(self, s: Let) -> Stmt:
        value = self.expr(s.value)
        var = s.var
        if value.type.lanes > 1:
            var = Var(s.var.name, value.type)
            self.bind(s.var, var)
        return Let(var, value, self.stmt(s.body))

    def local(self, s: LocalVar) -> Stmt:
        init = self.splat(self.expr(s.init))
        var = Var(s.var.name, init.type)
        self.bind(s.var, var)
        self.inner_locals.add(s.var)
        return LocalVar(var, init, self.stmt(s.body))

    def assign(self, s: Assign) -> Stmt:
        if s.var not in self.inner_locals:
            raise self.fail(f"it assigns '{s.var.name}', declared outside the loop (a "
                            "reduction); vectorize a spatial axis instead")
        return Assign(self.mapping[s.var], self.splat(self.expr(s.value)))

    def if_stmt(self, s: If) -> Stmt:
        cond = self.expr(s.cond)
        if cond.type.lanes > 1:
            raise self.fail("an If condition depends on the loop variable; use Select")
        otherwise = None if s.otherwise is None else self.stmt(s.otherwise)
        return If(cond, self.stmt(s.then), otherwise)

    def seq(self, s: Seq) -> Stmt:
        return Seq(tuple(self.stmt(x) for x in s.stmts))

    def bounds_check(self, s: BoundsCheck) -> Stmt:
        """A check of a widened index checks every lane."""
        index = self.expr(s.index)
        return s if index is s.index else attrs.evolve(s, index=index)

    # -- expressions -----------------------------------------------------------------------
    def expr(self, e: Expr) -> Expr:
        key = id(e)
        if key not in self.memo:
            rule = _EXPR_RULES.get(type(e))
            if rule is None:
                rule = _EXPR_RULES[Expr]
            self.memo[key] = rule(self, e)
        return self.memo[key]

    def binary(self, e: Binary) -> Expr:
        a, b = self.expr(e.a), self.expr(e.b)
        if a.type.lanes == 1 and b.type.lanes == 1:
            return e if (a is e.a and b is e.b) else Binary(e.op, a, b)
        folded = _fold_ramp(e.op, a, b)
        if folded is not None:
            return folded
        return Binary(e.op, self.splat(a), self.splat(b))

    def compare(self, e: Compare) -> Expr:
        a, b = self.expr(e.a), self.expr(e.b)
        if a.type.lanes == 1 and b.type.lanes == 1:
            return e if (a is e.a and b is e.b) else Compare(e.op, a, b)
        return Compare(e.op, self.splat(a), self.splat(b))

    def select(self, e: Select) -> Expr:
        c, t, f = self.expr(e.cond), self.expr(e.t), self.expr(e.f)
        if max(c.type.lanes, t.type.lanes, f.type.lanes) == 1:
            return e if (c, t, f) == (e.cond, e.t, e.f) else Select(c, t, f)
        return Select(c, self.splat(t), self.splat(f))

    def cast(self, e: Cast) -> Expr:
        value = self.expr(e.value)
        return e if value is e.value else Cast(value, e.target, e.mode)

    def call(self, e: Call) -> Expr:
        args = tuple(self.expr(a) for a in e.args)
        if all(a.type.lanes == 1 for a in args):
            return e if args == e.args else Call(e.func, args)
        return Call(e.func, tuple(self.splat(a) for a in args))

    def load(self, e: Load) -> Expr:
        indices = tuple(self.expr(i) for i in e.indices)
        return e if indices == e.indices else Load(e.buffer, indices)

    def var(self, e: Var) -> Expr:
        return self.mapping.get(e, e)

    def other(self, e: Expr) -> Expr:
        """Vector-valued nodes are kept when they do not depend on the loop variable."""
        from lowering.traversal import walk
        if any(isinstance(n, Var) and n in self.mapping for n in walk(e)):
            raise self.fail(f"{type(e).__name__} depending on the loop variable cannot be "
                            "widened")
        return e


def _fold_ramp(op: str, a: Expr, b: Expr) -> Expr | None:
    """Affine arithmetic on ramps stays a ramp: ``ramp(x, s) + y = ramp(x + y, s)``."""
    ra, rb = isinstance(a, Ramp), isinstance(b, Ramp)
    if op == "add" and ra and rb:
        return Ramp(Binary("add", a.base, b.base), a.stride + b.stride, a.lanes)
    if op == "add" and (ra or rb) and (a.type.lanes == 1 or b.type.lanes == 1):
        ramp, other = (a, b) if ra else (b, a)
        return Ramp(Binary("add", ramp.base, other), ramp.stride, ramp.lanes)
    if op == "sub" and ra and b.type.lanes == 1:
        return Ramp(Binary("sub", a.base, b), a.stride, a.lanes)
    if op == "mul" and (ra and isinstance(b, IntImm) or rb and isinstance(a, IntImm)):
        ramp, factor = (a, b.value) if ra else (b, a.value)
        return Ramp(Binary("mul", ramp.base, IntImm(factor, ramp.base.type)),
                    ramp.stride * factor, ramp.lanes)
    return None


_STMT_RULES: dict[type, Callable[[_Widen, Stmt], Stmt]] = {
    Store: _Widen.store, For: _Widen.loop_stmt, Let: _Widen.let, LocalVar: _Widen.local,
    Assign: _Widen.assign, If: _Widen.if_stmt, Seq: _Widen.seq,
    BoundsCheck: _Widen.bounds_check,
}

_EXPR_RULES: dict[type, Callable[[_Widen, Expr], Expr]] = {
    Var: _Widen.var, IntImm: lambda w, e: e, FloatImm: lambda w, e: e, Binary: _Widen.binary,
    Compare: _Widen.compare, Select: _Widen.select, Cast: _Widen.cast, Call: _Widen.call,
    Load: _Widen.load, Expr: _Widen.other,
}

__all__ = ["Allocate", "vectorize_loops"]
