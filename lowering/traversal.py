"""Generic traversal of loop IR: children, walks, rewrites and substitution.

Children are found from the attrs fields of a node (expressions, statements and tuples of
them), so a new node class needs no visitor boilerplate.  Rewrites are memoised by node
identity, so shared sub-expressions stay shared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

import attrs

from lowering.loop_ir import (
    Allocate,
    BoundsCheck,
    Buffer,
    Expr,
    For,
    Kernel,
    Let,
    Load,
    LocalVar,
    Stmt,
    Store,
    Var,
)

Node = TypeVar("Node", Expr, Stmt)


_NODE_CLASSES = (Expr, Stmt)


def is_node(value: object) -> bool:
    return isinstance(value, _NODE_CLASSES)


@functools.cache
def _node_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(cls) if f.init)


def children(node: Expr | Stmt) -> list[Expr | Stmt]:
    """The expressions and statements directly inside ``node``, in field order."""
    out: list[Expr | Stmt] = []
    for name in _node_fields(type(node)):      # is_node inlined: the hottest loop of a walk
        value = getattr(node, name)
        if isinstance(value, _NODE_CLASSES):
            out.append(value)
        elif isinstance(value, tuple):
            out.extend([v for v in value if isinstance(v, _NODE_CLASSES)])
    return out


def map_children(node: Node, fn: Callable[[Expr | Stmt], Expr | Stmt]) -> Node:
    """``node`` with ``fn`` applied to each direct child; ``node`` itself if nothing changed."""
    changes = {}
    for name in _node_fields(type(node)):
        value = getattr(node, name)
        if is_node(value):
            new = fn(value)
            if new is not value:
                changes[name] = new
        elif isinstance(value, tuple) and any(is_node(v) for v in value):
            new_tuple = tuple(fn(v) if is_node(v) else v for v in value)
            if any(a is not b for a, b in zip(new_tuple, value)):
                changes[name] = new_tuple
    return attrs.evolve(node, **changes) if changes else node


def walk(node: Expr | Stmt) -> Iterator[Expr | Stmt]:
    """Every node reachable from ``node``, pre-order, each shared node once."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(reversed(children(current)))


def rewrite(node: Node, fn: Callable[[Expr | Stmt], Expr | Stmt | None]) -> Node:
    """Bottom-up rewrite: ``fn`` sees each node with rewritten children; ``None`` keeps it."""
    memo: dict[int, Expr | Stmt] = {}

    def visit(current: Expr | Stmt) -> Expr | Stmt:
        key = id(current)
        if key not in memo:
            rebuilt = map_children(current, visit)
            replaced = fn(rebuilt)
            memo[key] = rebuilt if replaced is None else replaced
        return memo[key]

    return visit(node)


def substitute(node: Node, mapping: Mapping[Var, Expr]) -> Node:
    """``node`` with every occurrence of the variables in ``mapping`` replaced."""
    if not mapping:
        return node
    return rewrite(node, lambda n: mapping.get(n) if isinstance(n, Var) else None)


def binders(stmt: Stmt) -> Var | None:
    """The variable a statement binds (``For``, ``Let``, ``LocalVar``), else ``None``."""
    return stmt.var if isinstance(stmt, (For, Let, LocalVar)) else None


def free_vars(node: Expr | Stmt) -> list[Var]:
    """Variables used in ``node`` but bound outside it, in first-use order."""
    return _free_vars(list(walk(node)))


def buffers_used(node: Expr | Stmt) -> list[Buffer]:
    """Buffers loaded, stored or allocated in ``node``, and the error records its bounds
    checks write, in first-use order."""
    return _buffers_used(walk(node))


def allocated_buffers(node: Stmt) -> list[Buffer]:
    """Buffers allocated (``Allocate``) inside ``node``."""
    return [n.buffer for n in walk(node) if isinstance(n, Allocate)]


@attrs.frozen(eq=False)
class Uses:
    """What a statement uses, found in one walk: ``buffers`` (``buffers_used``),
    ``allocated`` (``allocated_buffers``), ``free_vars`` (``free_vars``) and its
    ``bounds_checks``, each in pre-order."""

    buffers: tuple[Buffer, ...]
    allocated: tuple[Buffer, ...]
    free_vars: tuple[Var, ...]
    bounds_checks: tuple[BoundsCheck, ...]


def uses(node: Stmt) -> Uses:
    """``Uses`` of ``node``: the results of the four walks, from one."""
    nodes = list(walk(node))
    return Uses(tuple(_buffers_used(nodes)),
                tuple(n.buffer for n in nodes if isinstance(n, Allocate)),
                tuple(_free_vars(nodes)),
                tuple(n for n in nodes if isinstance(n, BoundsCheck)))


def _free_vars(nodes: list[Expr | Stmt]) -> list[Var]:
    bound = {id(b) for n in nodes if isinstance(n, Stmt) and (b := binders(n)) is not None}
    out, seen = [], set()
    for n in nodes:
        if isinstance(n, Var) and id(n) not in bound and id(n) not in seen:
            seen.add(id(n))
            out.append(n)
    return out


def _buffers_used(nodes: Iterable[Expr | Stmt]) -> list[Buffer]:
    out: list[Buffer] = []
    seen: set[int] = set()
    for n in nodes:
        used = n.record if isinstance(n, BoundsCheck) else (
            n.buffer if isinstance(n, (Load, Store, Allocate)) else None)
        if used is not None and id(used) not in seen:
            seen.add(id(used))
            out.append(used)
    return out


def constants_of(kernel: Kernel) -> list[Buffer]:
    """Root buffers of role ``constant`` that ``kernel`` reads and does not take as parameters.

    These are the constants the code generators embed (or bind by symbol) themselves.
    """
    params = {id(p.root) for p in kernel.buffer_params}
    out: list[Buffer] = []
    for buffer in buffers_used(kernel.body):
        root = buffer.root
        if root.role == "constant" and id(root) not in params and all(root is not b for b in out):
            out.append(root)
    return out
