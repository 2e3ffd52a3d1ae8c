"""The second executor of loop IR: generated Python source compiled with ``numba.njit``.

This is the executable definition of loop-IR semantics, written independently of the LLVM
code generator, so tests that run a kernel on both catch a code generation bug.

* Every buffer is a flat 1-D numpy array: views and strides become offset arithmetic.
* A scalar value is a numpy scalar re-wrapped in its type after each operation, so integer
  arithmetic wraps.  The scalar rules are written once (``_scalar_*``).
* A vector value is a small numpy array computed lane by lane with the *same* scalar rules:
  ``materialize`` emits ``t = np.empty(lanes); for k in range(lanes): t[k] = <lane k>``.  A
  vector store first materializes its value, so every lane is read before any is written.
* A ``BoundsCheck`` (checked mode) tests each lane of its index and, on failure, writes the
  error record (if still free) and ``return``s, as the native code does.
* Parallel and vectorized loops run serially; f16 buffers are held as f32 and every store
  rounds to the nearest f16.  Helpers (``_rsat``, ``_dot_pairs``, ...) in ``numba_helpers``
  give casts, reductions and microkernels their meaning.

The kernel runs as given: ``vectorized`` loops are *not* widened first, so the LLVM path
(which widens them with ``vectorize_loops``) is checked against the scalar meaning.  The
generated code is plain loops and scalar operations, which numba compiles quickly.
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
from lowering.bounds_checks import raise_recorded_failure
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
    ScalarType,
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
from lowering.traversal import children, constants_of
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


# -- scalar rules (operands are Python source strings) -----------------------------------------

def _scalar_binary(op: str, a: str, b: str, t: ScalarType) -> str:
    """``a op b`` for scalars of type ``t`` (see ``loop_ir.Binary`` for the semantics)."""
    if op in ("min", "max"):
        return f"_select({a} {'<' if op == 'min' else '>'} {b}, {a}, {b})"
    if op in ("add_sat", "sub_sat"):
        sign = 1 if op == "add_sat" else -1
        return f"{_np(t)}(_saturate({a}, {b}, {sign}, {t.min}, {t.max}))"
    if op == "div":
        return f"{_np(t)}({a} / {b})" if t.is_float else f"{_np(t)}(_tdiv({a}, {b}))"
    if op == "floordiv" and t.is_float:
        return f"{_np(t)}(np.floor({a} / {b}))"
    if t.name == "i64" and op in ("add", "sub", "mul"):
        return f"({a} {_PY_OPS[op]} {b})"          # numba's own integers are i64 already
    return f"{_np(t)}({a} {_PY_OPS[op]} {b})"


def _scalar_cast(value: str, target: ScalarType, mode: str) -> str:
    if mode == "round_even_sat":
        return f"{_np(target)}(_rsat({value}, {float(target.min)}, {float(target.max)}))"
    return f"bool({value})" if target.is_bool else f"{_np(target)}({value})"


def _scalar_call(func: str, args: list[str], t: ScalarType) -> str:
    if func == "fma":
        return f"{_np(t)}(_fma{t.bits}({', '.join(args)}))"
    if func == "pow":   # libm pow on floats; square-and-multiply over the bits on integers
        if t.is_float:
            return f"{_np(t)}(np.power({args[0]}, {args[1]}))"
        return f"{_np(t)}(_ipow({args[0]}, {args[1]}, {t.bits}))"
    return f"{_np(t)}({_MATH[func]}({args[0]}))"


class _SourceEmitter:
    """Turns one kernel into the text of a Python function."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.names: dict[int, str] = {}
        self.taken: set[str] = set(dir(helpers)) | {"np", "math"}
        self.lines: list[str] = []
        self.globals: dict[str, np.ndarray] = {}
        self.indent = 0
        self.temporaries = 0
        self.prepared: dict[int, str] = {}

    def name(self, thing: Var | Buffer) -> str:
        key = id(thing)
        if key not in self.names:
            self.names[key] = self.fresh(thing.name)
        return self.names[key]

    def fresh(self, wanted: str) -> str:
        base = re.sub(r"\W", "_", wanted) or "v"
        base = f"v_{base}" if base[0].isdigit() or base[0] == "_" else base
        base = f"{base}_" if keyword.iskeyword(base) else base
        candidate, count = base, 0
        while candidate in self.taken:
            count += 1
            candidate = f"{base}_{count}"
        self.taken.add(candidate)
        return candidate

    def temporary(self, prefix: str) -> str:
        self.temporaries += 1
        return f"_{prefix}{self.temporaries}"

    def emit(self, text: str) -> None:
        self.lines.append("    " * self.indent + text)

    # -- program ---------------------------------------------------------------------------
    def function(self) -> str:
        k = self.kernel
        params, seen = [], set()
        for p in k.params:
            thing = p.root if isinstance(p, Buffer) else p
            params.append(self.name(thing) if id(thing) not in seen else self.fresh("alias"))
            seen.add(id(thing))
        params += [self.name(c) for c in constants_of(k)]
        self.emit(f"def {self.fresh(k.name)}({', '.join(params)}):")
        self.block(k.body)
        self.emit("    return")
        return "\n".join(self.lines) + "\n"

    # -- statements ------------------------------------------------------------------------
    def stmt(self, s: Stmt) -> None:
        _STMTS[type(s)](self, s)

    def block(self, s: Stmt) -> None:
        """``s`` one level deeper (``pass`` if it emits nothing)."""
        self.indent += 1
        before = len(self.lines)
        self.stmt(s)
        if len(self.lines) == before:
            self.emit("pass")
        self.indent -= 1

    def store(self, s: Store) -> None:
        lanes = s.value.type.lanes
        rounding = "_f16" if s.buffer.dtype == f16 else ""
        if lanes == 1:
            value = self.expr(s.value)
            self.emit(f"{self.element(s.buffer, s.indices, None)} = {rounding}({value})")
            return
        value = self.materialize(s.value)
        k = self.temporary("k")
        self.emit(f"for {k} in range({lanes}):")
        self.indent += 1
        self.emit(f"{self.element(s.buffer, s.indices, k)} = {rounding}({value}[{k}])")
        self.indent -= 1

    def for_loop(self, s: For) -> None:
        if s.extent == 1:
            self.emit(f"{self.name(s.var)} = 0")
            self.stmt(s.body)
            return
        self.emit(f"for {self.name(s.var)} in range({s.extent}):")
        self.block(s.body)

    def if_stmt(self, s: If) -> None:
        self.emit(f"if {self.expr(s.cond)}:")
        self.block(s.then)
        if s.otherwise is not None:
            self.emit("else:")
            self.block(s.otherwise)

    def bind(self, var: Var, value: Expr) -> None:
        text = self.materialize(value) if value.type.lanes > 1 else self.expr(value)
        self.emit(f"{self.name(var)} = {text}")

    def binding(self, s: Let | LocalVar) -> None:
        self.bind(s.var, s.value if isinstance(s, Let) else s.init)
        self.stmt(s.body)

    def bounds_check(self, s: BoundsCheck) -> None:
        """``if not 0 <= index < extent: record the failure; return`` for each lane."""
        extent, record = s.buffer.shape[s.dim], self.name(s.record.root)
        lanes = s.index.type.lanes
        if lanes == 1:
            index = self.temporary("x")
            self.emit(f"{index} = np.int64({self.expr(s.index)})")
        else:
            vector, k = self.materialize(s.index), self.temporary("k")
            index = self.temporary("x")
            self.emit(f"for {k} in range({lanes}):")
            self.indent += 1
            self.emit(f"{index} = np.int64({vector}[{k}])")
        self.emit(f"if {index} < 0 or {index} >= {extent}:")
        self.emit(f"    if {record}[0] == 0:")
        self.emit(f"        {record}[0] = {s.site}")
        self.emit(f"        {record}[1] = {index}")
        self.emit("    return")
        if lanes > 1:
            self.indent -= 1

    def allocate(self, s: Allocate) -> None:
        b = s.buffer
        dtype = "np.float32" if b.dtype == f16 else _np(b.dtype)
        self.emit(f"{self.name(b)} = np.empty({b.span}, {dtype})")
        self.stmt(s.body)

    # -- memory ----------------------------------------------------------------------------
    def element(self, buffer: Buffer, indices: tuple[Expr, ...], lane: str | None) -> str:
        """``array[offset]`` of one element (of lane ``lane`` for a vector access)."""
        parts = [self.expr(i) if lane is None or i.type.lanes == 1 else self.lane(i, lane)
                 for i in indices]
        terms = [str(buffer.root_offset)] if buffer.root_offset else []
        for index, stride in zip(parts, buffer.strides):
            terms.append(index if stride == 1 else f"{index} * {stride}")
        offset = " + ".join(terms) if terms else "0"
        return f"{self.name(buffer.root)}[{offset}]"

    # -- vectors ---------------------------------------------------------------------------
    def materialize(self, e: Expr) -> str:
        """Emit the lanes of vector ``e`` into a new array; return its name."""
        if isinstance(e, Var) or type(e) not in _LANES:
            return self.array(e)
        saved, self.prepared = self.prepared, dict(self.prepared)
        self.prepare(e)
        name, k = self.temporary("v"), self.temporary("k")
        self.emit(f"{name} = np.empty({e.type.lanes}, {_np(e.type)})")
        self.emit(f"for {k} in range({e.type.lanes}):")
        self.indent += 1
        self.emit(f"{name}[{k}] = {self.lane(e, k)}")
        self.indent -= 1
        self.prepared = saved
        return name

    def prepare(self, e: Expr) -> None:
        """Compute, before a lane loop, the vector parts whose lanes interact (shuffles,
        microkernels): they become arrays that the loop indexes."""
        for child in children(e):
            if not isinstance(child, Expr) or child.type.lanes == 1:
                continue
            if type(child) in _LANES:
                self.prepare(child)
            elif id(child) not in self.prepared:
                self.prepared[id(child)] = self.array(child)

    def lane(self, e: Expr, k: str) -> str:
        """The scalar source of lane ``k`` of ``e`` (scalars are the same in every lane)."""
        if e.type.lanes == 1:
            return self.expr(e)
        rule = _LANES.get(type(e))
        if rule is not None:
            return rule(self, e, k)
        return f"{self.prepared.get(id(e)) or self.array(e)}[{k}]"

    def array(self, e: Expr) -> str:
        """A name holding vector ``e`` (computed by a helper where lanes interact)."""
        if isinstance(e, Var):
            return self.name(e)
        if isinstance(e, Shuffle):
            table = f"_shuffle{len(self.globals)}"
            self.globals[table] = np.array(e.indices, dtype=np.int64)
            parts = [self.materialize(v) if v.type.lanes > 1 else self.lift(v)
                     for v in e.vectors]
            source = self.temporary("s")
            self.emit(f"{source} = np.concatenate(({', '.join(parts)},))")
            name, k = self.temporary("v"), self.temporary("k")
            self.emit(f"{name} = np.empty({e.type.lanes}, {_np(e.type)})")
            self.emit(f"for {k} in range({e.type.lanes}):")
            self.emit(f"    {name}[{k}] = {source}[{table}[{k}]]")
            return name
        if isinstance(e, Microkernel):
            args = ", ".join(self.materialize(x) for x in (e.acc, e.a, e.b))
            name = self.temporary("v")
            self.emit(f"{name} = {_MICROKERNELS[type(e)]}({args})")
            return name
        return self.materialize(e)

    def lift(self, scalar: Expr) -> str:
        """A one-lane array holding ``scalar`` (a shuffle operand)."""
        name = self.temporary("v")
        self.emit(f"{name} = np.empty(1, {_np(scalar.type)})")
        self.emit(f"{name}[0] = {self.expr(scalar)}")
        return name

    # -- scalar expressions ----------------------------------------------------------------
    def expr(self, e: Expr) -> str:
        if e.type.lanes > 1:
            raise AssertionError(f"vector {e!r} used as a scalar")
        return _EXPRS[type(e)](self, e)

    def immediate(self, e: IntImm | FloatImm) -> str:
        if e.type.is_bool:
            return "True" if e.value else "False"
        if e.type.name == "i64":
            return repr(e.value)
        value = repr(e.value) if isinstance(e, IntImm) else f"{float(e.value)!r}"
        value = {"inf": "np.inf", "-inf": "-np.inf", "nan": "np.nan"}.get(value, value)
        return f"{_np(e.type)}({value})"

    def load(self, e: Load) -> str:
        return self.element(e.buffer, e.indices, None)

    def reduce(self, e: ReduceLanes) -> str:
        return f"{_np(e.type)}(_reduce_{e.op}({self.materialize(e.value)}))"


def _lane_ops(rule: Callable[..., str]) -> Callable[[_SourceEmitter, Expr, str], str]:
    """Lift a rule over operand strings to the lanes of a vector expression."""
    return lambda g, e, k: rule(g, e, lambda x: g.lane(x, k))


def _binary(g: _SourceEmitter, e: Binary, operand) -> str:
    return _scalar_binary(e.op, operand(e.a), operand(e.b), e.type.elem)


def _compare(g: _SourceEmitter, e: Compare, operand) -> str:
    return f"({operand(e.a)} {_CMP_OPS[e.op]} {operand(e.b)})"


def _select(g: _SourceEmitter, e: Select, operand) -> str:
    return f"_select({operand(e.cond)}, {operand(e.t)}, {operand(e.f)})"


def _cast(g: _SourceEmitter, e: Cast, operand) -> str:
    return _scalar_cast(operand(e.value), e.target, e.mode)


def _call(g: _SourceEmitter, e: Call, operand) -> str:
    return _scalar_call(e.func, [operand(a) for a in e.args], e.type.elem)


def _ramp_lane(base: str, k: str, stride: int, t: ScalarType) -> str:
    step = k if stride == 1 else f"{k} * {stride}"
    text = f"{base} + {step}"
    return f"({text})" if t.name == "i64" else f"{_np(t)}({text})"


def _load_lane(g: _SourceEmitter, e: Load, k: str) -> str:
    return g.element(e.buffer, e.indices, k)


_STMTS: dict[type, Callable[[_SourceEmitter, Stmt], None]] = {
    Store: _SourceEmitter.store,
    For: _SourceEmitter.for_loop,
    Seq: lambda g, s: [g.stmt(x) for x in s.stmts] and None,
    Let: _SourceEmitter.binding,
    LocalVar: _SourceEmitter.binding,
    Assign: lambda g, s: g.bind(s.var, s.value),
    If: _SourceEmitter.if_stmt,
    Allocate: _SourceEmitter.allocate,
    BoundsCheck: _SourceEmitter.bounds_check,
}

_EXPRS: dict[type, Callable[[_SourceEmitter, Expr], str]] = {
    Var: lambda g, e: g.name(e),
    IntImm: _SourceEmitter.immediate,
    FloatImm: _SourceEmitter.immediate,
    Binary: lambda g, e: _binary(g, e, g.expr),
    Compare: lambda g, e: _compare(g, e, g.expr),
    Select: lambda g, e: _select(g, e, g.expr),
    Cast: lambda g, e: _cast(g, e, g.expr),
    Call: lambda g, e: _call(g, e, g.expr),
    Load: _SourceEmitter.load,
    ReduceLanes: _SourceEmitter.reduce,
}

_LANES: dict[type, Callable[[_SourceEmitter, Expr, str], str]] = {
    Var: lambda g, e, k: f"{g.name(e)}[{k}]",
    Binary: _lane_ops(_binary),
    Compare: _lane_ops(_compare),
    Select: _lane_ops(_select),
    Cast: _lane_ops(_cast),
    Call: _lane_ops(_call),
    Load: _load_lane,
    Broadcast: lambda g, e, k: g.expr(e.value),
    Ramp: lambda g, e, k: _ramp_lane(g.expr(e.base), k, e.stride, e.type.elem),
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
        raise_recorded_failure(self.kernel, bound)


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
    # IEEE float division (x/0 = inf, 0/0 = NaN) as in LLVM, not Python's ZeroDivisionError.
    return NumbaKernel(kernel, source, numba.njit(python_function, error_model="numpy"))
