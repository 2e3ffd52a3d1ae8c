"""The second executor of loop IR: generated Python source compiled with ``numba.njit``.

This is the executable definition of loop-IR semantics, written independently of the LLVM
code generator, so tests that run a kernel on both catch a code generation bug.  Every buffer
becomes a flat 1-D numpy array (views and strides become offset arithmetic); a scalar value
is a numpy scalar re-wrapped in its type after each operation (so integer arithmetic wraps);
a vector value is a small numpy array, never mutated in place.  Parallel and vectorized loops
run serially.  f16 buffers are held as f32 and every store rounds to the nearest f16.
Helpers (``_rsat``, ``_dot_pairs``, ...) give microkernels and casts their semantics.

The kernel runs as given: ``vectorized`` loops are *not* widened first, so the LLVM path
(which widens them with ``vectorize_loops``) is checked against the scalar meaning.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable

import attrs
import numba
import numpy as np

from lowering import numba_helpers as helpers
from lowering.abi import bind_arguments
from lowering.loop_ir import (
    Allocate,
    Assign,
    Binary,
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
    Type,
    Var,
    f16,
)
from lowering.microkernels import DotI8Pairs, DotU8I8Quad, DotU8I8Saturating, Microkernel
from lowering.traversal import constants_of
from lowering.verifier import verify_kernel

_PY_OPS = {"add": "+", "sub": "-", "mul": "*", "and": "&", "or": "|", "xor": "^", "shl": "<<",
           "shr": ">>", "floordiv": "//", "mod": "%"}
_CMP_OPS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_MATH = {"exp": "np.exp", "log": "np.log", "sqrt": "np.sqrt", "tanh": "np.tanh",
         "floor": "np.floor", "ceil": "np.ceil", "round_half_even": "np.rint", "abs": "np.abs",
         "erf": "_erf"}
_MICROKERNELS = {DotI8Pairs: "_dot_pairs", DotU8I8Quad: "_dot_quad",
                 DotU8I8Saturating: "_dot_saturating"}


def _np(t: Type) -> str:
    return "np.bool_" if t.elem.is_bool else f"np.{t.elem.numpy.name}"


class _SourceEmitter:
    """Turns one kernel into the text of a Python function."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.names: dict[int, str] = {}
        self.taken: set[str] = set(dir(helpers)) | {"np", "math"}
        self.lines: list[str] = []
        self.globals: dict[str, np.ndarray] = {}

    def name(self, thing: Var | Buffer) -> str:
        key = id(thing)
        if key not in self.names:
            base = re.sub(r"\W", "_", thing.name) or "v"
            base = f"v_{base}" if base[0].isdigit() or base[0] == "_" else base
            base = f"{base}_" if keyword.iskeyword(base) else base
            candidate, count = base, 0
            while candidate in self.taken:
                count += 1
                candidate = f"{base}_{count}"
            self.taken.add(candidate)
            self.names[key] = candidate
        return self.names[key]

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    # -- program ---------------------------------------------------------------------------
    def function(self) -> str:
        k = self.kernel
        params = [self.name(p.root if isinstance(p, Buffer) else p) for p in k.params]
        params += [self.name(c) for c in constants_of(k)]
        self.emit(0, f"def {self.name(Var(k.name))}({', '.join(params)}):")
        self.stmt(k.body, 1)
        self.emit(1, "return")
        return "\n".join(self.lines) + "\n"

    # -- statements ------------------------------------------------------------------------
    def stmt(self, s: Stmt, indent: int) -> None:
        _STMTS[type(s)](self, s, indent)

    def store(self, s: Store, indent: int) -> None:
        value = self.expr(s.value)
        if s.buffer.dtype == f16:
            value = f"_f16_v({value})" if s.value.type.lanes > 1 else f"_f16({value})"
        self.emit(indent, f"{self.address(s.buffer, s.indices)} = {value}")

    def for_loop(self, s: For, indent: int) -> None:
        self.emit(indent, f"for {self.name(s.var)} in range({s.extent}):")
        self.block(s.body, indent + 1)

    def block(self, s: Stmt, indent: int) -> None:
        before = len(self.lines)
        self.stmt(s, indent)
        if len(self.lines) == before:
            self.emit(indent, "pass")

    def if_stmt(self, s: If, indent: int) -> None:
        self.emit(indent, f"if {self.expr(s.cond)}:")
        self.block(s.then, indent + 1)
        if s.otherwise is not None:
            self.emit(indent, "else:")
            self.block(s.otherwise, indent + 1)

    def binding(self, s: Let | LocalVar, indent: int) -> None:
        value = s.value if isinstance(s, Let) else s.init
        self.emit(indent, f"{self.name(s.var)} = {self.expr(value)}")
        self.stmt(s.body, indent)

    def allocate(self, s: Allocate, indent: int) -> None:
        b = s.buffer
        dtype = "np.float32" if b.dtype == f16 else _np(b.dtype)
        self.emit(indent, f"{self.name(b)} = np.empty({b.span}, {dtype})")
        self.stmt(s.body, indent)

    # -- memory ----------------------------------------------------------------------------
    def address(self, buffer: Buffer, indices: tuple[Expr, ...]) -> str:
        """``array[offset]``, ``array[start:stop]`` (dense) or ``array[offsets]`` (gather)."""
        array = self.name(buffer.root)
        lanes = max(i.type.lanes for i in indices) if indices else 1
        last = indices[-1] if indices else None
        dense = (lanes > 1 and isinstance(last, Ramp) and last.stride == 1
                 and buffer.strides[-1] == 1 and all(i.type.lanes == 1 for i in indices[:-1]))
        if lanes == 1 or dense:
            scalar_indices = (*indices[:-1], last.base) if dense else indices
            offset = self.offset(buffer, [self.expr(i) for i in scalar_indices])
            return f"{array}[{offset}:{offset} + {lanes}]" if dense else f"{array}[{offset}]"
        parts = [f"{self.expr(i)}.astype(np.int64)" if i.type.lanes > 1 else self.expr(i)
                 for i in indices]
        return f"{array}[{self.offset(buffer, parts)}]"

    @staticmethod
    def offset(buffer: Buffer, indices: list[str]) -> str:
        terms = [str(buffer.root_offset)] if buffer.root_offset else []
        for index, stride in zip(indices, buffer.strides):
            terms.append(index if stride == 1 else f"{index} * {stride}")
        if not terms:
            return "0"
        return terms[0] if len(terms) == 1 else f"({' + '.join(terms)})"

    # -- expressions -----------------------------------------------------------------------
    def expr(self, e: Expr) -> str:
        kind = Microkernel if isinstance(e, Microkernel) else type(e)
        return _EXPRS[kind](self, e)

    def load(self, e: Load) -> str:
        text = self.address(e.buffer, e.indices)
        if e.type.lanes > 1:
            text = f"{text}.copy()" if ":" in text else text
        return text

    def binary(self, e: Binary) -> str:
        a, b, t = self.expr(e.a), self.expr(e.b), e.type
        vector = t.lanes > 1
        if e.op in ("min", "max"):
            cmp = "<" if e.op == "min" else ">"
            return (f"np.where({a} {cmp} {b}, {a}, {b})" if vector
                    else f"_select({a} {cmp} {b}, {a}, {b})")
        if e.op in ("add_sat", "sub_sat"):
            sign = 1 if e.op == "add_sat" else -1
            if vector:
                return f"_saturate_v({a}, {b}, {sign}, {t.min}, {t.max}).astype({_np(t)})"
            return f"{_np(t)}(_saturate({a}, {b}, {sign}, {t.min}, {t.max}))"
        if e.op == "div":
            if t.elem.is_float:
                return f"({a} / {b})" if vector else f"{_np(t)}({a} / {b})"
            return (f"_tdiv_v({a}, {b})" if vector else f"{_np(t)}(_tdiv({a}, {b}))")
        if e.op == "floordiv" and t.elem.is_float:
            return f"np.floor({a} / {b})" if vector else f"{_np(t)}(np.floor({a} / {b}))"
        text = f"({a} {_PY_OPS[e.op]} {b})"
        return text if vector else f"{_np(t)}{text}"

    def cast(self, e: Cast) -> str:
        value, t = self.expr(e.value), e.type
        if e.mode == "round_even_sat":
            lo, hi = float(t.min), float(t.max)
            return (f"_rsat_v({value}, {lo}, {hi}).astype({_np(t)})" if t.lanes > 1
                    else f"{_np(t)}(_rsat({value}, {lo}, {hi}))")
        if t.lanes > 1:
            return f"{value}.astype({_np(t)})"
        return f"bool({value})" if t.elem.is_bool else f"{_np(t)}({value})"

    def call(self, e: Call) -> str:
        args = [self.expr(a) for a in e.args]
        vector = e.type.lanes > 1
        if e.func == "fma":
            if vector:
                return f"_fma_v({', '.join(args)}).astype({_np(e.type)})"
            return f"{_np(e.type)}(_fma({', '.join(args)}))"
        if e.func == "pow":
            return self.power(e, args)
        func = _MATH[e.func]
        if e.func == "erf" and vector:
            func = "_erf_v"
        return f"{func}({args[0]})" if vector else f"{_np(e.type)}({func}({args[0]}))"

    def power(self, e: Call, args: list[str]) -> str:
        """Float: ``np.power`` (libm ``pow``); integer: square-and-multiply over the bits."""
        t, (a, b) = e.type, args
        if t.elem.is_float:
            return f"np.power({a}, {b})" if t.lanes > 1 else f"{_np(t)}(np.power({a}, {b}))"
        if t.lanes > 1:
            lanes = ", ".join(f"_ipow({a}[{k}], {b}[{k}], {t.elem.bits})" for k in range(t.lanes))
            return f"np.array([{lanes}]).astype({_np(t)})"
        return f"{_np(t)}(_ipow({a}, {b}, {t.elem.bits}))"

    def immediate(self, e: IntImm | FloatImm) -> str:
        if e.type.is_bool:
            return "True" if e.value else "False"
        value = repr(e.value) if isinstance(e, IntImm) else f"{float(e.value)!r}"
        value = {"inf": "np.inf", "-inf": "-np.inf", "nan": "np.nan"}.get(value, value)
        return f"{_np(e.type)}({value})"

    def shuffle(self, e: Shuffle) -> str:
        table = f"_shuffle{len(self.globals)}"
        self.globals[table] = np.array(e.indices, dtype=np.int64)
        parts = ", ".join(self.expr(v) for v in e.vectors)
        return f"np.concatenate(({parts},))[{table}]"

    def reduce(self, e: ReduceLanes) -> str:
        return f"{_np(e.type)}(_reduce_{e.op}({self.expr(e.value)}))"


_STMTS: dict[type, Callable[[_SourceEmitter, Stmt, int], None]] = {
    Store: _SourceEmitter.store, For: _SourceEmitter.for_loop,
    Seq: lambda g, s, ind: [g.stmt(x, ind) for x in s.stmts] and None,
    Let: _SourceEmitter.binding, LocalVar: _SourceEmitter.binding,
    Assign: lambda g, s, ind: g.emit(ind, f"{g.name(s.var)} = {g.expr(s.value)}"),
    If: _SourceEmitter.if_stmt, Allocate: _SourceEmitter.allocate,
}

_EXPRS: dict[type, Callable[[_SourceEmitter, Expr], str]] = {
    Var: lambda g, e: g.name(e),
    IntImm: _SourceEmitter.immediate,
    FloatImm: _SourceEmitter.immediate,
    Binary: _SourceEmitter.binary,
    Compare: lambda g, e: f"({g.expr(e.a)} {_CMP_OPS[e.op]} {g.expr(e.b)})",
    Select: lambda g, e: (f"np.where({g.expr(e.cond)}, {g.expr(e.t)}, {g.expr(e.f)})"
                          if e.cond.type.lanes > 1
                          else f"_select({g.expr(e.cond)}, {g.expr(e.t)}, {g.expr(e.f)})"),
    Cast: _SourceEmitter.cast,
    Call: _SourceEmitter.call,
    Load: _SourceEmitter.load,
    Broadcast: lambda g, e: f"np.full({e.lanes}, {g.expr(e.value)}, {_np(e.type)})",
    Ramp: lambda g, e: (f"(np.arange({e.lanes}) * {e.stride} + {g.expr(e.base)})"
                        f".astype({_np(e.type)})"),
    Shuffle: _SourceEmitter.shuffle,
    ReduceLanes: _SourceEmitter.reduce,
    Microkernel: lambda g, e: (f"{_MICROKERNELS[type(e)]}({g.expr(e.acc)}, {g.expr(e.a)}, "
                               f"{g.expr(e.b)})"),
}


def lower_kernel_to_python(kernel: Kernel) -> tuple[str, dict[str, np.ndarray]]:
    """The Python source of ``kernel`` and the constant tables it refers to."""
    emitter = _SourceEmitter(kernel)
    source = emitter.function()
    return source, emitter.globals


@attrs.frozen(eq=False)
class NumbaKernel:
    """A kernel compiled through numba: call it with the arguments of ``lowering.abi``."""

    kernel: Kernel
    source: str
    function: Callable

    def __call__(self, *args: object) -> None:
        bound = bind_arguments(self.kernel, args)
        call_args, writebacks = [], []
        for param, value in zip(self.kernel.params, bound):
            if isinstance(param, Buffer) and param.dtype == f16:
                wide = value.astype(np.float32)
                if param.role == "output":
                    writebacks.append((value, wide))
                value = wide
            call_args.append(value)
        for constant in constants_of(self.kernel):
            data = constant.data.reshape(-1)
            call_args.append(data.astype(np.float32) if constant.dtype == f16 else data)
        self.function(*call_args)
        for target, wide in writebacks:
            target[...] = wide.astype(np.float16)


def compile_numba(kernel: Kernel, verify: bool = True) -> NumbaKernel:
    """Generate, ``exec`` and ``numba.njit`` the Python source of ``kernel``."""
    if verify:
        verify_kernel(kernel)
    source, tables = lower_kernel_to_python(kernel)
    namespace = {name: getattr(helpers, name) for name in helpers.__all__}
    namespace.update(np=np, **tables)
    # Executing generated source is this executor's purpose; the source is ours, not user text.
    exec(compile(source, f"<loop-ir {kernel.name}>", "exec"), namespace)  # noqa: S102
    python_function = namespace[source.split("(", 1)[0].removeprefix("def ")]
    return NumbaKernel(kernel, source, numba.njit(python_function))
