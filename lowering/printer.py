"""Readable, stable text for loop IR (used in error messages and golden tests).

Format (Python-like, two-space indentation)::

    kernel scale(X: f32[37] input, Y: f32[37] output, s: f32):
      for i in range(37) vectorized(8):
        Y[i] = X[i] * s

Variables are named by their ``name``; distinct variables sharing a name get ``_1``, ``_2``
suffixes in order of appearance, so the text is stable across runs.  Integer immediates of type
i64 print bare, others as ``3:i32``; f32 immediates print bare (``0.5``), others ``0.5:f64``.
A ``Let``/``LocalVar``/``Allocate`` opens a scope that extends over the following lines of the
same indentation.
"""

from __future__ import annotations

from collections.abc import Callable

from lowering.loop_ir import (
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
    Select,
    Seq,
    Shuffle,
    Stmt,
    Store,
    Var,
    f32,
    i1,
    i64,
)
from lowering.microkernels import DotU8I8Saturating, Microkernel
from lowering.traversal import constants_of

INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
         "and": "&", "or": "|", "xor": "^", "shl": "<<", "shr": ">>",
         "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class Printer:
    """Prints one kernel (or fragment) with a consistent variable naming."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._taken: dict[str, int] = {}

    # -- names -----------------------------------------------------------------------------
    def name(self, var: Var) -> str:
        key = id(var)
        if key not in self._names:
            count = self._taken.get(var.name, 0)
            self._taken[var.name] = count + 1
            self._names[key] = var.name if count == 0 else f"{var.name}_{count}"
        return self._names[key]

    # -- expressions -----------------------------------------------------------------------
    def expr(self, e: Expr) -> str:
        return _EXPR_PRINTERS[_printer_class(type(e))](self, e)

    def operand(self, e: Expr) -> str:
        """An operand of an infix operator: parenthesised when itself infix."""
        text = self.expr(e)
        infix = isinstance(e, Compare) or (isinstance(e, Binary) and e.op in INFIX)
        return f"({text})" if infix else text

    def args(self, *exprs: Expr) -> str:
        return ", ".join(self.expr(e) for e in exprs)

    # -- statements ------------------------------------------------------------------------
    def stmt(self, s: Stmt, indent: int = 0) -> list[str]:
        return _STMT_PRINTERS[type(s)](self, s, indent)

    def buffer_decl(self, b: Buffer) -> str:
        text = f"{b.name}: {b.dtype}[{', '.join(map(str, b.shape))}]"
        if b.base is not None:
            text += f" view of {b.base.name}"
            if b.offset:
                text += f" + {b.offset}"
        if b.strides != _contiguous(b.shape):
            text += f" strides({', '.join(map(str, b.strides))})"
        if b.alignment:
            text += f" align {b.alignment}"
        return text

    def kernel(self, k: Kernel) -> str:
        params = []
        for p in k.params:
            if isinstance(p, Buffer):
                params.append(f"{self.buffer_decl(p)} {p.role}")
            else:
                params.append(f"{self.name(p)}: {p.type}")
        header = f"kernel {k.name}({', '.join(params)})"
        if k.fast_math:
            header += f" fast_math({', '.join(k.fast_math)})"
        lines = [header + ":"]
        lines += [f"  constant {self.buffer_decl(c)}" for c in constants_of(k)]
        lines += self.stmt(k.body, 1)
        return "\n".join(lines)


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    from lowering.loop_ir import contiguous_strides
    return contiguous_strides(shape)


def _printer_class(cls: type) -> type:
    return Microkernel if issubclass(cls, Microkernel) else cls


def _imm_int(p: Printer, e: IntImm) -> str:
    if e.type == i1:
        return "true" if e.value else "false"
    return str(e.value) if e.type == i64 else f"{e.value}:{e.type}"


def _imm_float(p: Printer, e: FloatImm) -> str:
    text = repr(float(e.value))
    return text if e.type == f32 else f"{text}:{e.type}"


def _binary(p: Printer, e: Binary) -> str:
    if e.op in INFIX:
        return f"{p.operand(e.a)} {INFIX[e.op]} {p.operand(e.b)}"
    return f"{e.op}({p.args(e.a, e.b)})"


def _cast(p: Printer, e: Cast) -> str:
    mode = "" if e.mode == "exact" else f", {e.mode}"
    return f"cast<{e.target}{mode}>({p.expr(e.value)})"


def _microkernel(p: Printer, e: Microkernel) -> str:
    text = f"{e.mnemonic}({p.args(e.acc, e.a, e.b)}"
    if isinstance(e, DotU8I8Saturating):
        text += f"; {e.justification!r}"
    return text + ")"


_EXPR_PRINTERS: dict[type, Callable[[Printer, Expr], str]] = {
    Var: lambda p, e: p.name(e),
    IntImm: _imm_int,
    FloatImm: _imm_float,
    Binary: _binary,
    Compare: lambda p, e: f"{p.operand(e.a)} {INFIX[e.op]} {p.operand(e.b)}",
    Select: lambda p, e: f"select({p.args(e.cond, e.t, e.f)})",
    Cast: _cast,
    Call: lambda p, e: f"{e.func}({p.args(*e.args)})",
    Load: lambda p, e: f"{e.buffer.name}[{p.args(*e.indices)}]",
    Broadcast: lambda p, e: f"bcast({p.expr(e.value)}, {e.lanes})",
    Ramp: lambda p, e: f"ramp({p.expr(e.base)}, {e.stride}, {e.lanes})",
    Shuffle: lambda p, e: f"shuffle({p.args(*e.vectors)}, [{', '.join(map(str, e.indices))}])",
    ReduceLanes: lambda p, e: f"reduce_{e.op}({p.expr(e.value)})",
    Microkernel: _microkernel,
}


def _pad(indent: int) -> str:
    return "  " * indent


def _for(p: Printer, s: For, indent: int) -> list[str]:
    kind = "" if s.kind.name == "serial" else f" {s.kind}"
    head = f"{_pad(indent)}for {p.name(s.var)} in range({s.extent}){kind}:"
    return [head] + p.stmt(s.body, indent + 1)


def _seq(p: Printer, s: Seq, indent: int) -> list[str]:
    lines = [line for child in s.stmts for line in p.stmt(child, indent)]
    return lines or [f"{_pad(indent)}pass"]


def _if(p: Printer, s: If, indent: int) -> list[str]:
    lines = [f"{_pad(indent)}if {p.expr(s.cond)}:"] + p.stmt(s.then, indent + 1)
    if s.otherwise is not None:
        lines += [f"{_pad(indent)}else:"] + p.stmt(s.otherwise, indent + 1)
    return lines


def _binding(keyword: str) -> Callable[[Printer, Stmt, int], list[str]]:
    def emit(p: Printer, s: Let | LocalVar, indent: int) -> list[str]:
        value = s.value if isinstance(s, Let) else s.init
        head = f"{_pad(indent)}{keyword} {p.name(s.var)}: {s.var.type} = {p.expr(value)}"
        return [head] + p.stmt(s.body, indent)
    return emit


_STMT_PRINTERS: dict[type, Callable[[Printer, Stmt, int], list[str]]] = {
    Store: lambda p, s, ind: [
        f"{_pad(ind)}{s.buffer.name}[{p.args(*s.indices)}] = {p.expr(s.value)}"],
    For: _for,
    Seq: _seq,
    Let: _binding("let"),
    LocalVar: _binding("var"),
    Assign: lambda p, s, ind: [f"{_pad(ind)}{p.name(s.var)} = {p.expr(s.value)}"],
    If: _if,
    Allocate: lambda p, s, ind: [f"{_pad(ind)}allocate {p.buffer_decl(s.buffer)}"]
    + p.stmt(s.body, ind),
    BoundsCheck: lambda p, s, ind: [
        (f"{_pad(ind)}check 0 <= {p.expr(s.index)} < {_extent(s.buffer, s.dim)}"
         f"  # {s.buffer.name} dim {s.dim}, site {s.site} -> {s.record.name}")],
}


def _extent(buffer: Buffer, dim: int) -> str:
    return str(buffer.shape[dim]) if 0 <= dim < buffer.rank else "?"


def print_expr(e: Expr) -> str:
    """One expression as text."""
    return Printer().expr(e)


def print_stmt(s: Stmt) -> str:
    """One statement (and its body) as text."""
    return "\n".join(Printer().stmt(s))


def print_kernel(k: Kernel) -> str:
    """A whole kernel: header, constants, body."""
    return Printer().kernel(k)


def describe_stmt(s: Stmt, printer: Printer | None = None) -> str:
    """The first line of ``s`` (for error messages), without indentation."""
    return (printer or Printer()).stmt(s)[0].strip()
