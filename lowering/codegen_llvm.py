"""``lower_kernels_to_llvm``: loop IR -> an ``llvmlite.ir`` module, one function per kernel.

Pipeline per kernel: ``verify_kernel`` -> ``vectorize_loops`` -> ``verify_kernel`` -> emit.

ABI: ``void @name(ptr noalias A, ..., <scalars>, i32 threads)``; buffer pointers address the
root memory of each parameter; constants are private globals (embedded) or external symbols
the JIT binds to the numpy data (large ones, to keep the IR text small).  Loops are basic
blocks with a phi; ``unrolled`` loops are emitted ``extent`` times; ``parallel`` loops are
outlined into a chunk function (``noalias`` arguments, ``[begin, end)``) called from a worker
that ``GOMP_parallel`` runs on every thread: each thread claims pieces of its own static share
of the iteration space, then what is left of the others' (``worker_function``), so a thread
that is descheduled does not hold the others at the barrier (``threads == 1`` calls the chunk
directly; without OpenMP the loop runs serially).  Fast-math
flags are only those listed on the kernel.

Instructions are built by a ``NumberingBuilder`` (``lowering.value_numbering``): index
arithmetic is folded and numbered as it is emitted, so the text handed to LLVM stays close to
what it would keep.  Kernels identical up to their constants (``share_kernels``: the 3x3
convolutions of one ResNet stage) are emitted once, as ``<first>.shared`` taking the
constants as extra pointer arguments; each kernel's own function forwards to it with its
constants, so every kernel keeps its name and ABI.

A ``BoundsCheck`` (checked mode) compares every lane of its index, as i64, with the extent
(unsigned, so negative indices fail too); on failure a cold block claims the error record
with an atomic compare-and-swap on its site slot (the first failure wins, even among threads),
writes the index, frees the live heap scratch and returns.  After a parallel loop containing
checks, the kernel returns as well if the record holds a failure.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import struct
from collections.abc import Callable, Iterator, Sequence

import attrs
import numpy as np
from llvmlite import ir

from lowering.codegen_microkernels import MICROKERNEL_EMITTERS
from lowering.codegen_ops import (
    I8,
    I32,
    I64,
    PTR,
    OpContext,
    binary_table,
    constant,
    emit_cast,
    emit_compare,
    emit_math,
    llvm_type,
    mangle,
    storage_type,
)
from lowering.kernel_fingerprint import KernelGroup, group_identical_kernels
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
    f16,
    value_type,
)
from lowering.microkernels import Microkernel
from lowering.traversal import children, rewrite, uses
from lowering.value_numbering import (
    NumberingBuilder,
    remove_dead_instructions,
    scalar_int,
    shared_constant,
)
from lowering.vectorize import vectorize_loops
from lowering.verifier import verify_kernel
from lpjit.errors import CodegenError

STACK_LIMIT = 256 * 1024          # bytes; larger scratch buffers are heap-allocated
_symbol_ids = itertools.count()


@attrs.frozen
class CodegenOptions:
    """Code generation choices (data, not environment): target features, OpenMP, constants.

    ``share_kernels``: kernels identical up to their constants share one compiled body
    (``lowering.kernel_fingerprint``); each keeps its own function name and ABI.
    ``part_instructions``: the size of the parts a program is emitted in when a code
    generator compiles them while the rest is emitted (``lower_kernels_to_llvm``'s sink)."""

    features: frozenset[str] = frozenset()
    openmp: bool = True
    embed_constants_up_to: int = 1 << 16
    triple: str = ""
    data_layout: str = ""
    share_kernels: bool = True
    part_instructions: int = 6000


@attrs.frozen(eq=False)
class LoweredModule:
    """An LLVM module, the kernels it defines (their ABI) and constants to bind by symbol.

    ``parts``: when emitted in parts (``lower_kernels_to_llvm(..., sink=...)``), the IR text
    of each further module, compiled separately and linked with ``ir_module``, which then
    only declares the kernels; ``part_levels``: the optimisation each part's kernels need
    (``Kernel.optimization``), ``level``: the one ``ir_module``'s kernels need."""

    ir_module: ir.Module
    kernels: tuple[Kernel, ...]
    symbols: tuple[tuple[str, np.ndarray], ...]
    parts: tuple[str, ...] = ()
    part_levels: tuple[str, ...] = ()
    level: str = "full"

    def text(self) -> str:
        """All the IR as text: ``ir_module``, then each part."""
        return "\n".join((str(self.ir_module), *self.parts))

    def kernel(self, name: str) -> Kernel:
        for k in self.kernels:
            if k.name == name:
                return k
        raise CodegenError(f"module has no kernel '{name}'")


def aligned_copy(data: np.ndarray, alignment: int) -> np.ndarray:
    """A read-only copy of ``data`` whose first byte is ``alignment``-aligned.

    A constant bound by symbol is declared with that alignment, and LLVM relies on it
    (aligned vector loads), so numpy's default alignment is not enough.
    """
    raw = np.empty(data.nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    view = raw[start:start + data.nbytes].view(data.dtype).reshape(data.shape)
    view[...] = data
    view.flags.writeable = False
    return view


class _ConstantPool:
    """The constants bound by symbol, shared by every module of one lowering: each gets one
    symbol (and one aligned copy of its data), however many modules declare it."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.symbols: list[tuple[str, np.ndarray]] = []

    def symbol(self, buffer: Buffer, data: np.ndarray) -> str:
        if id(buffer) not in self.names:
            name = f"lpjit.const.{next(_symbol_ids)}.{buffer.name}"
            self.names[id(buffer)] = name
            self.symbols.append((name, aligned_copy(data, 64)))
        return self.names[id(buffer)]


class _ModuleState:
    """Per-module state shared by the function emitters: constants and counters."""

    def __init__(self, module: ir.Module, options: CodegenOptions,
                 pool: _ConstantPool | None = None) -> None:
        self.module, self.options = module, options
        self.pool = pool or _ConstantPool()
        self.constants: dict[int, ir.GlobalVariable] = {}
        self.outlined = itertools.count()

    def constant_global(self, buffer: Buffer) -> ir.GlobalVariable:
        key = id(buffer)
        if key not in self.constants:
            data = np.ascontiguousarray(buffer.data)
            array_type = ir.ArrayType(I8, max(data.nbytes, 1))
            if data.nbytes <= self.options.embed_constants_up_to:
                g = ir.GlobalVariable(self.module, array_type,
                                      self.module.get_unique_name(f"const.{buffer.name}"))
                g.initializer = ir.Constant(array_type, bytearray(data.tobytes() or b"\0"))
                g.global_constant, g.linkage, g.unnamed_addr = True, "private", True
            else:
                g = ir.GlobalVariable(self.module, array_type, self.pool.symbol(buffer, data))
                g.global_constant, g.linkage = True, "external"
            g.align = 64
            self.constants[key] = g
        return self.constants[key]


class _FunctionEmitter:
    """Emits statements and expressions into one LLVM function."""

    def __init__(self, state: _ModuleState, kernel: Kernel, function: ir.Function) -> None:
        self.state, self.kernel, self.function = state, kernel, function
        entry = function.append_basic_block("entry")
        self.entry = ir.IRBuilder(entry)
        self.builder = NumberingBuilder(function.append_basic_block("body"))
        self.ctx = OpContext(self.builder, state.module, tuple(kernel.fast_math),
                             state.options.features)
        self.values: dict[Var, ir.Value] = {}
        self.locals: dict[Var, ir.Value] = {}
        self.buffers: dict[int, ir.Value] = {}
        self.heap: list[ir.Value] = []           # live heap scratch, freed when leaving early
        self.threads: ir.Value = ir.Constant(I32, 1)
        self.constant_arguments: set[int] | None = None   # shared kernels: bound constants
        self._counters: ir.Value | None = None          # claim_counters

    def finish(self) -> None:
        self.builder.ret_void()
        self.entry.branch(self.function.basic_blocks[1])
        remove_dead_instructions(self.function)

    # -- values ------------------------------------------------------------------------------
    def expr(self, e: Expr) -> ir.Value:
        kind = Microkernel if isinstance(e, Microkernel) else type(e)
        return _EXPRS[kind](self, e)

    def var(self, v: Var) -> ir.Value:
        if v in self.locals:
            return self.builder.load(self.locals[v], typ=llvm_type(v.type))
        if v in self.values:
            return self.values[v]
        raise CodegenError(f"kernel '{self.kernel.name}': variable '{v.name}' has no value")

    def claim_counters(self) -> ir.Value:
        """The claim counters of this function's parallel loops (they run one after another:
        one array, ``MAX_SHARES`` cache lines, in the entry block)."""
        if self._counters is None:
            self._counters = self.entry_alloca(I64, MAX_SHARES * COUNTER_STRIDE, 64)
        return self._counters

    def entry_alloca(self, typ: ir.Type, count: int = 1, align: int = 0) -> ir.Value:
        """An ``alloca`` in the entry block (so mem2reg/SROA can promote it)."""
        slot = self.entry.alloca(typ, size=None if count == 1 else ir.Constant(I64, count))
        if align:
            slot.align = align
        return slot

    # -- memory ------------------------------------------------------------------------------
    def root_pointer(self, buffer: Buffer) -> ir.Value:
        root = buffer.root
        if id(root) not in self.buffers:
            if root.role != "constant" or self.constant_arguments is not None:
                raise CodegenError(f"kernel '{self.kernel.name}': buffer '{root.name}' is "
                                   "not available here")
            self.buffers[id(root)] = self.state.constant_global(root)
        return self.buffers[id(root)]

    def flat_offset(self, buffer: Buffer, indices: Sequence[ir.Value]) -> ir.Value:
        offset: ir.Value = ir.Constant(I64, buffer.root_offset)
        for index, stride in zip(indices, buffer.strides):
            index = self.to_i64(index)
            term = index if stride == 1 else self.builder.mul(index, constant(index.type, stride))
            if isinstance(term.type, ir.VectorType) and not isinstance(offset.type,
                                                                        ir.VectorType):
                offset = self.splat(offset, term.type.count)
            elif isinstance(offset.type, ir.VectorType) and not isinstance(term.type,
                                                                            ir.VectorType):
                term = self.splat(term, offset.type.count)
            offset = self.builder.add(offset, term)
        return offset

    def to_i64(self, index: ir.Value) -> ir.Value:
        t = index.type
        element = t.element if isinstance(t, ir.VectorType) else t
        if element.width == 64:
            return index
        target = ir.VectorType(I64, t.count) if isinstance(t, ir.VectorType) else I64
        return self.builder.sext(index, target)

    def splat(self, value: ir.Value, lanes: int) -> ir.Value:
        if isinstance(value, ir.Constant):
            return splat_constant(value, lanes)
        vector_type = ir.VectorType(value.type, lanes)
        inserted = self.builder.insert_element(undefined(vector_type), value,
                                               ir.Constant(I32, 0))
        mask = shuffle_mask((0,) * lanes)
        return self.builder.shuffle_vector(inserted, undefined(vector_type),
                                           mask)

    def element_pointer(self, buffer: Buffer, offset: ir.Value) -> ir.Value:
        return self.builder.gep(self.root_pointer(buffer), [offset],
                                source_etype=storage_type(buffer.dtype))

    def access(self, buffer: Buffer, indices: tuple[Expr, ...]
               ) -> tuple[ir.Value, int, int | None]:
        """``(where, lanes, step)`` of a load/store.

        ``step`` 1 (dense: a scalar, or one index a ``Ramp`` whose stride times the
        dimension's stride is one element) or another integer (strided: lane ``k`` at ``k *
        step`` elements): ``where`` points at lane 0.  ``step`` None (a gather/scatter):
        ``where`` is the vector of lane offsets."""
        lanes = max((i.type.lanes for i in indices), default=1)
        vector_dims = [d for d, i in enumerate(indices) if i.type.lanes > 1]
        if lanes == 1:
            offset = self.flat_offset(buffer, [self.expr(i) for i in indices])
            return self.element_pointer(buffer, offset), 1, 1
        if len(vector_dims) == 1 and isinstance(indices[vector_dims[0]], Ramp):
            ramp = indices[vector_dims[0]]
            scalars = [ramp.base if d == vector_dims[0] else i for d, i in enumerate(indices)]
            offset = self.flat_offset(buffer, [self.expr(i) for i in scalars])
            return (self.element_pointer(buffer, offset), lanes,
                    ramp.stride * buffer.strides[vector_dims[0]])
        return self.flat_offset(buffer, [self.expr(i) for i in indices]), lanes, None

    def lane_pointers(self, buffer: Buffer, where: ir.Value, lanes: int, step: int | None
                      ) -> list[ir.Value]:
        """The address of each lane of a strided or gathered access (see ``access``)."""
        bld = self.builder
        if step is not None:
            element = storage_type(buffer.dtype)
            return [bld.gep(where, [ir.Constant(I64, lane * step)], source_etype=element)
                    for lane in range(lanes)]
        return [self.element_pointer(buffer, bld.extract_element(where, ir.Constant(I32, k)))
                for k in range(lanes)]

    def read(self, buffer: Buffer, pointer: ir.Value, typ: ir.Type, align: int | None
             ) -> ir.Value:
        """A load; loads of constants are numbered (the same constant read once)."""
        if buffer.root.role == "constant":
            return self.builder.invariant_load(pointer, typ, align)
        return self.builder.load(pointer, typ=typ, align=align)

    def load(self, e: Load) -> ir.Value:
        buffer, bld = e.buffer, self.builder
        element = storage_type(buffer.dtype)
        where, lanes, step = self.access(buffer, e.indices)
        if step == 1:
            typ = element if lanes == 1 else ir.VectorType(element, lanes)
            raw = self.read(buffer, where, typ, buffer.dtype.nbytes)
        else:
            raw = undefined(ir.VectorType(element, lanes))
            for lane, pointer in enumerate(self.lane_pointers(buffer, where, lanes, step)):
                raw = bld.insert_element(raw, self.read(buffer, pointer, element, None),
                                         ir.Constant(I32, lane))
        return self.from_storage(raw, buffer, lanes)

    def from_storage(self, raw: ir.Value, buffer: Buffer, lanes: int) -> ir.Value:
        if buffer.dtype == f16:
            return self.builder.fpext(raw, llvm_type(value_type(f16).with_lanes(lanes)))
        if buffer.dtype.is_bool:
            return self.builder.icmp_unsigned("!=", raw, constant(raw.type, 0))
        return raw

    def to_storage(self, value: ir.Value, buffer: Buffer) -> ir.Value:
        lanes = value.type.count if isinstance(value.type, ir.VectorType) else 1
        element = storage_type(buffer.dtype)
        target = element if lanes == 1 else ir.VectorType(element, lanes)
        if buffer.dtype == f16:
            return self.builder.fptrunc(value, target)
        if buffer.dtype.is_bool:
            return self.builder.zext(value, target)
        return value

    # -- statements --------------------------------------------------------------------------
    def stmt(self, s: Stmt) -> None:
        _STMTS[type(s)](self, s)

    def store(self, s: Store) -> None:
        value = self.to_storage(self.expr(s.value), s.buffer)
        where, lanes, step = self.access(s.buffer, s.indices)
        bld = self.builder
        if step == 1:
            _store(bld, value, where, s.buffer.dtype.nbytes)
            return
        for lane, pointer in enumerate(self.lane_pointers(s.buffer, where, lanes, step)):
            _store(bld, bld.extract_element(value, ir.Constant(I32, lane)), pointer, 0)

    def loop(self, var: Var, start: ir.Value, stop: ir.Value, body: Stmt) -> None:
        """``for var in [start, stop)`` as header/body/latch blocks with a phi."""
        bld = self.builder
        preheader = bld.block
        header = self.function.append_basic_block(f"{var.name}.header")
        body_block = self.function.append_basic_block(f"{var.name}.body")
        exit_block = self.function.append_basic_block(f"{var.name}.exit")
        self.hoist_invariants(body, var)
        bld.enter_dominated()                 # the preheader dominates the loop and its exit
        bld.branch(header)
        bld.position_at_end(header)
        index = bld.phi(I64, name=var.name)
        index.add_incoming(start, preheader)
        bld.cbranch(bld.icmp_signed("<", index, stop), body_block, exit_block)
        bld.enter_dominated()                 # so does the header
        bld.position_at_end(body_block)
        first, last = bld.range_of(start), bld.range_of(stop)
        if first is not None and last is not None:
            bld.assume_range(index, first[0], last[1] - 1)     # inside the body only
        self.values[var] = index
        with bld.scope():
            self.stmt(body)
        del self.values[var]
        following = bld.add(index, ir.Constant(I64, 1), flags=("nsw",))
        index.add_incoming(following, bld.block)
        bld.branch(header)
        bld.position_at_end(exit_block)

    def hoist_invariants(self, body: Stmt, var: Var) -> None:
        """Compute the loop invariants of ``body`` (``loop_invariants``) here, before the
        loop: each once per iteration of the unrolled loops it depends on."""
        bound: list[Var] = []
        for let, value, loops in loop_invariants(body, var, self):
            for point in itertools.product(*(range(f.extent) for f in loops)):
                for f, k in zip(loops, point):
                    self.values[f.var] = ir.Constant(I64, k)
                computed = self.expr(value)
                if let is not None:
                    self.values[let] = computed
                    bound.append(let)
            for f in loops:
                del self.values[f.var]
        for let in bound:                     # bound again (to the same value) by the Let
            del self.values[let]

    def for_loop(self, s: For) -> None:
        kind = s.kind.name
        if kind == "vectorized":
            raise CodegenError(f"kernel '{self.kernel.name}': vectorized loop "
                               f"'{s.var.name}' reached code generation (run vectorize_loops)")
        if kind == "unrolled":
            for k in range(s.extent):
                self.values[s.var] = ir.Constant(I64, k)
                self.stmt(s.body)
            self.values.pop(s.var, None)
        elif kind == "parallel" and self.state.options.openmp and s.extent > 1:
            _ParallelOutliner(self, s).emit()
        else:
            self.loop(s.var, ir.Constant(I64, 0), ir.Constant(I64, s.extent), s.body)

    def let(self, s: Let) -> None:
        self.values[s.var] = self.expr(s.value)
        self.stmt(s.body)
        del self.values[s.var]

    def local(self, s: LocalVar) -> None:
        slot = self.entry_alloca(llvm_type(s.var.type))
        _store(self.builder, self.expr(s.init), slot, 0)
        self.locals[s.var] = slot
        self.stmt(s.body)
        del self.locals[s.var]

    def if_stmt(self, s: If) -> None:
        cond, bld = self.expr(s.cond), self.builder
        decided = scalar_int(cond)
        if decided is not None:             # folded: only the arm that runs
            taken = s.then if decided else s.otherwise
            if taken is not None:
                self.stmt(taken)
            return
        bld.enter_dominated()
        if s.otherwise is None:
            with bld.if_then(cond), bld.scope():
                self.stmt(s.then)
            return
        with bld.if_else(cond) as (then, otherwise):
            with then, bld.scope():
                self.stmt(s.then)
            with otherwise, bld.scope():
                self.stmt(s.otherwise)

    def allocate(self, s: Allocate) -> None:
        b = s.buffer
        element = storage_type(b.dtype)
        nbytes = b.span * b.dtype.nbytes
        if nbytes <= STACK_LIMIT:
            self.buffers[id(b)] = self.entry_alloca(element, max(b.span, 1), 64)
            self.stmt(s.body)
        else:
            malloc = self.ctx.intrinsic("aligned_alloc", PTR, [I64, I64])
            free = self.ctx.intrinsic("free", ir.VoidType(), [PTR])
            size = ir.Constant(I64, (nbytes + 63) // 64 * 64)
            self.buffers[id(b)] = self.builder.call(malloc, [ir.Constant(I64, 64), size])
            self.heap.append(self.buffers[id(b)])
            self.stmt(s.body)
            self.heap.pop()
            self.builder.call(free, [self.buffers[id(b)]])
        del self.buffers[id(b)]

    # -- checked mode ------------------------------------------------------------------------
    def bounds_check(self, s: BoundsCheck) -> None:
        """Leave the kernel, recording ``s.site`` and the index, if any lane is out of range."""
        bld = self.builder
        index = self.to_i64(self.expr(s.index))
        bad = bld.icmp_unsigned(">=", index, constant(index.type, s.buffer.shape[s.dim]))
        lanes = index.type.count if isinstance(index.type, ir.VectorType) else 1
        failed = bad if lanes == 1 else bld.icmp_unsigned(
            "!=", bld.bitcast(bad, ir.IntType(lanes)), ir.Constant(ir.IntType(lanes), 0))
        fail_block = self.function.append_basic_block("bounds.fail")
        ok_block = self.function.append_basic_block("bounds.ok")
        bld.enter_dominated()
        bld.cbranch(failed, fail_block, ok_block)
        bld.position_at_end(fail_block)
        with bld.scope():
            value = index
            if lanes > 1:      # the first failing lane's index
                value = bld.extract_element(index, ir.Constant(I32, lanes - 1))
                for lane in reversed(range(lanes - 1)):
                    at = ir.Constant(I32, lane)
                    value = bld.select(bld.extract_element(bad, at),
                                       bld.extract_element(index, at), value)
            self.record_failure(s.record, s.site, value)
        bld.position_at_end(ok_block)

    def record_failure(self, record: Buffer, site: int, index: ir.Value) -> None:
        """Claim the error record (if still free), write the index there, leave."""
        bld = self.builder
        claim = bld.cmpxchg(self.element_pointer(record, ir.Constant(I64, 0)),
                            ir.Constant(I64, 0), ir.Constant(I64, site), "monotonic")
        with bld.if_then(bld.extract_value(claim, 1)):
            _store(bld, index, self.element_pointer(record, ir.Constant(I64, 1)), 8)
        self.leave()

    def leave(self) -> None:
        """Return from the function early: free the live heap scratch, ``ret void``."""
        free = self.ctx.intrinsic("free", ir.VoidType(), [PTR])
        for pointer in reversed(self.heap):
            self.builder.call(free, [pointer])
        self.builder.ret_void()

    def leave_if_failed(self, record: Buffer) -> None:
        """Return early when the error record holds a failure (after a parallel loop)."""
        bld = self.builder
        site = bld.load(self.element_pointer(record, ir.Constant(I64, 0)), typ=I64)
        fail_block = self.function.append_basic_block("bounds.failed")
        ok_block = self.function.append_basic_block("bounds.ok")
        bld.enter_dominated()
        bld.cbranch(bld.icmp_unsigned("!=", site, ir.Constant(I64, 0)), fail_block, ok_block)
        bld.position_at_end(fail_block)
        with bld.scope():
            self.leave()
        bld.position_at_end(ok_block)

    # -- expressions -------------------------------------------------------------------------
    def binary(self, e: Binary) -> ir.Value:
        return binary_table(e.type.elem)[e.op](self.ctx, self.expr(e.a), self.expr(e.b))

    def cast(self, e: Cast) -> ir.Value:
        return emit_cast(self.ctx, self.expr(e.value), e.value.type.elem, e.target, e.mode,
                         llvm_type(e.type))

    def broadcast(self, e: Broadcast) -> ir.Value:
        return self.splat(self.expr(e.value), e.lanes)

    def ramp(self, e: Ramp) -> ir.Value:
        element = llvm_type(e.base.type)
        base = self.expr(e.base)
        first = scalar_int(base)
        if first is not None:
            return ir.Constant(ir.VectorType(element, e.lanes),
                               [ir.Constant(element, first + e.stride * k)
                                for k in range(e.lanes)])
        steps = ir.Constant(ir.VectorType(element, e.lanes),
                            [ir.Constant(element, e.stride * k) for k in range(e.lanes)])
        return self.builder.add(self.splat(base, e.lanes), steps)

    def shuffle(self, e: Shuffle) -> ir.Value:
        vectors = [self.as_vector(self.expr(v)) for v in e.vectors]
        if len(vectors) > 2 or any(v.type != vectors[0].type for v in vectors):
            raise CodegenError(f"kernel '{self.kernel.name}': shuffle needs one or two "
                               "vectors of the same type")
        second = vectors[1] if len(vectors) == 2 else undefined(vectors[0].type)
        mask = shuffle_mask(tuple(e.indices))
        return self.builder.shuffle_vector(vectors[0], second, mask)

    def as_vector(self, value: ir.Value) -> ir.Value:
        if isinstance(value.type, ir.VectorType):
            return value
        return self.builder.insert_element(
            undefined(ir.VectorType(value.type, 1)), value, ir.Constant(I32, 0))

    def reduce(self, e: ReduceLanes) -> ir.Value:
        """Lanes combined in order, left to right (like the numba executor)."""
        vector, bld = self.expr(e.value), self.builder
        elem = e.type.elem
        if e.op in ("min", "max") and not elem.is_float:     # order-free: one intrinsic
            kind = ("s" if elem.is_signed else "u") + e.op
            return self.ctx.call(f"llvm.vector.reduce.{kind}.{mangle(vector.type)}",
                                 vector.type.element, vector)
        total = bld.extract_element(vector, ir.Constant(I32, 0))
        table = binary_table(e.type.elem)
        for lane in range(1, e.value.type.lanes):
            total = table[e.op](self.ctx, total, bld.extract_element(vector,
                                                                     ir.Constant(I32, lane)))
        return total

    def microkernel(self, e: Microkernel) -> ir.Value:
        emitter = MICROKERNEL_EMITTERS[type(e)]
        return emitter(self.ctx, e, self.expr(e.acc), self.expr(e.a), self.expr(e.b))


class SplatConstant(ir.Constant):
    """A vector constant of one repeated element, printed as LLVM's ``splat (<element>)``
    rather than element by element (a 16-lane float literal is 20 times shorter)."""

    def __init__(self, vector_type: ir.VectorType, element: ir.Constant) -> None:
        self.type, self.element = vector_type, element
        self.constant = [element] * vector_type.count

    def _get_reference(self) -> str:
        return f"splat ({self.element})"


class UndefVector(ir.Constant):
    """The ``undef`` vector of a type, printed as ``undef`` (not lane by lane)."""

    def __init__(self, vector_type: ir.VectorType) -> None:
        self.type = vector_type
        self.constant = [ir.Constant(vector_type.element, ir.Undefined)] * vector_type.count

    def _get_reference(self) -> str:
        return "undef"


@functools.lru_cache(maxsize=1024)
def undefined(vector_type: ir.VectorType) -> ir.Constant:
    """The ``undef`` vector of ``vector_type`` (one shared object: cheap to number, printed
    once)."""
    return shared_constant(UndefVector(vector_type))


_SPLATS: dict[tuple, ir.Constant] = {}


def splat_constant(value: ir.Constant, lanes: int) -> ir.Constant:
    """The vector of ``lanes`` copies of scalar constant ``value``: one shared object per
    type, bit pattern and width (numbered and printed once, not rebuilt per use)."""
    raw = value.constant
    if isinstance(raw, float):
        bits: object = struct.pack("<d", raw)       # -0.0 and NaN payloads kept apart
    elif isinstance(raw, int):
        bits = int(raw)
    else:
        return ir.Constant(ir.VectorType(value.type, lanes), [value] * lanes)
    key = (str(value.type), bits, lanes)
    found = _SPLATS.get(key)
    if found is None:
        if len(_SPLATS) >= 16384:
            _SPLATS.clear()
        found = _SPLATS[key] = shared_constant(
            SplatConstant(ir.VectorType(value.type, lanes), value))
    return found


@functools.lru_cache(maxsize=4096)
def shuffle_mask(indices: tuple[int, ...]) -> ir.Constant:
    """The ``shufflevector`` mask ``<i32 indices...>`` (one shared object per mask)."""
    return shared_constant(ir.Constant(ir.VectorType(I32, len(indices)),
                                       [int(i) for i in indices]))


def _store(builder: ir.IRBuilder, value: ir.Value, pointer: ir.Value, align: int) -> None:
    """``store`` through a pointer llvmlite types as pointing to one element.

    llvmlite's typed-pointer layer (on by default, for numba) gives allocas and GEPs element
    pointer types and refuses a vector store through them; LLVM itself has opaque pointers.
    """
    instruction = ir.instructions.StoreInstr(builder.block, value, pointer)
    instruction.align = align or None
    builder._insert(instruction)


def _immediate(g: _FunctionEmitter, e: IntImm | FloatImm) -> ir.Value:
    return ir.Constant(llvm_type(e.type), e.value)


_EXPRS = {
    Var: _FunctionEmitter.var,
    IntImm: _immediate,
    FloatImm: _immediate,
    Binary: _FunctionEmitter.binary,
    Compare: lambda g, e: emit_compare(g.ctx, e.op, e.a.type.elem, g.expr(e.a), g.expr(e.b)),
    Select: lambda g, e: g.builder.select(g.expr(e.cond), g.expr(e.t), g.expr(e.f)),
    Cast: _FunctionEmitter.cast,
    Call: lambda g, e: emit_math(g.ctx, e.func, [g.expr(a) for a in e.args]),
    Load: _FunctionEmitter.load,
    Broadcast: _FunctionEmitter.broadcast,
    Ramp: _FunctionEmitter.ramp,
    Shuffle: _FunctionEmitter.shuffle,
    ReduceLanes: _FunctionEmitter.reduce,
    Microkernel: _FunctionEmitter.microkernel,
}

_STMTS = {
    Store: _FunctionEmitter.store,
    For: _FunctionEmitter.for_loop,
    Seq: lambda g, s: [g.stmt(x) for x in s.stmts] and None,
    Let: _FunctionEmitter.let,
    LocalVar: _FunctionEmitter.local,
    Assign: lambda g, s: _store(g.builder, g.expr(s.value), g.locals[s.var], 0),
    If: _FunctionEmitter.if_stmt,
    Allocate: _FunctionEmitter.allocate,
    BoundsCheck: _FunctionEmitter.bounds_check,
}


# Integer operations that cannot trap whatever their operands (a division only by a nonzero
# constant): computing one before the loop whose body guards it is safe.
_HOISTABLE = (Binary, Compare, Select, Cast)
_DIVISIONS = frozenset({"div", "floordiv", "mod"})


def loop_invariants(body: Stmt, var: Var, emitter: _FunctionEmitter
                    ) -> list[tuple[Var | None, Expr, tuple[For, ...]]]:
    """The largest scalar integer expressions of a loop's ``body`` that do not depend on the
    loop: arithmetic, comparisons, selects and casts of constants, of variables bound outside
    the loop or by a ``Let`` of such a value inside it, and of the variables of unrolled
    loops inside it (no loads, no mutable locals, no division by a variable).  In program
    order, as ``(None, expression, unrolled)`` or, for a ``Let`` of ``v`` whose value depends
    neither on the loop nor on an unrolled loop, ``(v, value, ())``; ``unrolled``: the
    unrolled loops whose variables the value depends on (it is computed for each of their
    iterations, at most ``MAX_HOISTED_COPIES`` times).

    The emitter computes them in the loop's preheader; value numbering then finds them when
    the body asks for them again, so index arithmetic of outer loop variables (``unravel``
    of a row index, the column offsets of a register tile) is computed once per outer
    iteration instead of in every inner one.  LLVM's LICM does this too, but only at
    "full" optimisation; a "cleanup" kernel (``Kernel.optimization``) relies on this.
    Parallel loops inside the body are left out (they become functions of their own)."""
    return _Invariants(var, emitter).of(body)


class _Invariants:
    """``loop_invariants`` of one loop (a class, not closures: nested functions calling each
    other form a reference cycle that would keep the emitter, and its module, alive until the
    cyclic collector runs)."""

    def __init__(self, var: Var, emitter: _FunctionEmitter) -> None:
        self.values, self.locals = emitter.values, emitter.locals
        self.inside: set[int] = {id(var)}
        self.unrolled: dict[int, For] = {}      # variable -> its unrolled loop in the body
        self.lets: set[int] = set()             # variables of Lets the loop does not change
        self.depends: dict[int, tuple[For, ...] | None] = {}   # None: depends on the loop
        self.found: dict[int, tuple[Var | None, Expr, tuple[For, ...]]] = {}

    def of(self, body: Stmt) -> list[tuple[Var | None, Expr, tuple[For, ...]]]:
        self.visit(body)
        return list(self.found.values())

    def check(self, e: Expr) -> tuple[For, ...] | None:
        """The unrolled loops ``e`` depends on, or None if it depends on the loop (or is not
        an expression to hoist); hoists the largest invariant parts of what is not."""
        key = id(e)
        if key in self.depends:
            return self.depends[key]
        kind = type(e)
        result: tuple[For, ...] | None
        if kind is IntImm:
            result = ()
        elif kind is Var:
            if key in self.lets:
                result = ()
            elif key in self.unrolled:
                result = (self.unrolled[key],)
            else:
                result = () if key not in self.inside and e not in self.locals \
                    and e in self.values else None
        elif kind in _HOISTABLE and e.type.lanes == 1 and (e.type.is_int or e.type.is_bool):
            parts = children(e)
            results = [self.check(c) for c in parts]
            result = None if None in results or (
                kind is Binary and e.op in _DIVISIONS
                and not (type(e.b) is IntImm and e.b.value != 0)) \
                else tuple(dict.fromkeys(f for r in results for f in r))
            if result is None:
                for c in parts:
                    self.hoist(c)
        else:
            result = None
            for c in children(e):
                self.hoist(c)
        self.depends[key] = result
        return result

    def hoist(self, e: Expr) -> None:
        loops = self.check(e)
        if loops is not None and type(e) not in (IntImm, Var) and \
                math.prod(f.extent for f in loops) <= MAX_HOISTED_COPIES:
            self.found[id(e)] = (None, e, loops)

    def visit(self, node: Stmt) -> None:
        kind = type(node)
        if kind is Let:
            if self.check(node.value) == ():    # one value: the Let's variable is invariant
                self.lets.add(id(node.var))
                self.found[id(node.var)] = (node.var, node.value, ())
            else:                               # a value per unrolled iteration, or variant
                self.hoist(node.value)
                self.inside.add(id(node.var))
            self.visit(node.body)
            return
        if kind is For:
            if node.kind.name == "unrolled":
                self.unrolled[id(node.var)] = node
            else:
                self.inside.add(id(node.var))
            if node.kind.name == "parallel":
                return
        elif kind is LocalVar:
            self.inside.add(id(node.var))
        for child in children(node):
            if isinstance(child, Expr):
                if child is not getattr(node, "var", None):
                    self.hoist(child)
            else:
                self.visit(child)


# The most copies of one loop invariant computed before a loop (one per iteration of the
# unrolled loops it depends on).
MAX_HOISTED_COPIES = 64


class _ParallelOutliner:
    """Outlines one parallel loop: chunk function, OpenMP worker, and the fork in the parent."""

    def __init__(self, parent: _FunctionEmitter, loop: For) -> None:
        self.parent, self.loop = parent, loop
        self.uses = uses(loop)                  # one walk of the loop
        inner = {id(b) for b in self.uses.allocated}
        bound = parent.constant_arguments or set()
        self.buffers = [b for b in _unique_roots(self.uses.buffers)
                        if (b.role != "constant" or id(b) in bound) and id(b) not in inner]
        self.vars = [v for v in self.uses.free_vars if v is not loop.var]
        number = next(parent.state.outlined)
        self.name = f"{parent.function.name}.parallel{number}"

    def emit(self) -> None:
        chunk = self.chunk_function()
        # the captured buffers and variables, then the claim counters and their count
        fields = [PTR] * len(self.buffers) + [llvm_type(v.type) for v in self.vars] + [PTR, I64]
        context_type = ir.LiteralStructType(fields)
        worker = self.worker_function(chunk, context_type)
        parent, bld = self.parent, self.parent.builder
        args = [parent.buffers[id(b)] for b in self.buffers] + [parent.var(v) for v in self.vars]
        extent = ir.Constant(I64, self.loop.extent)
        bld.enter_dominated()
        with bld.if_else(bld.icmp_signed("==", parent.threads, ir.Constant(I32, 1))) as (
                serial, forked):
            with serial, bld.scope():
                bld.call(chunk, args + [ir.Constant(I64, 0), extent])
            with forked, bld.scope():
                context = parent.entry_alloca(context_type)
                counters = parent.claim_counters()
                ranges = self.ranges(bld, parent.threads)
                for k, value in enumerate(args + [counters, ranges]):
                    slot = bld.gep(context, [ir.Constant(I32, 0), ir.Constant(I32, k)],
                                   source_etype=context_type)
                    _store(bld, value, slot, 0)
                self.reset_counters(bld, counters, ranges)
                gomp = parent.ctx.intrinsic("GOMP_parallel", ir.VoidType(),
                                            [PTR, PTR, I32, I32])
                bld.call(gomp, [worker, context, parent.threads, ir.Constant(I32, 0)])
        checks = self.uses.bounds_checks
        if checks:
            parent.leave_if_failed(checks[0].record)

    def chunk_function(self) -> ir.Function:
        """``void chunk(ptr noalias bufs..., vars..., i64 begin, i64 end)`` running the loop.

        ``noinline``: the parent (when ``threads == 1``) and the worker both call it; inlined,
        LLVM optimised and compiled the loop twice or three times (ResNet-18 INT8 at 2
        threads: 1.7k of 49k lines of assembly, 0.3 s of 4.5 s of LLVM time), for no gain:
        the call is made once per thread and loop."""
        parent = self.parent
        types = [PTR] * len(self.buffers) + [llvm_type(v.type) for v in self.vars] + [I64, I64]
        fn = ir.Function(parent.state.module, ir.FunctionType(ir.VoidType(), types),
                         f"{self.name}.chunk")
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")
        for arg, buffer in zip(fn.args, self.buffers):
            arg.add_attribute("noalias")
            arg.name = buffer.name
        emitter = _FunctionEmitter(parent.state, parent.kernel, fn)
        if parent.constant_arguments is not None:
            emitter.constant_arguments = parent.constant_arguments
        for arg, buffer in zip(fn.args, self.buffers):
            emitter.buffers[id(buffer)] = arg
        for arg, var in zip(fn.args[len(self.buffers):], self.vars):
            arg.name = var.name
            emitter.values[var] = arg
        begin, end = fn.args[-2], fn.args[-1]
        begin.name, end.name = "begin", "end"
        for bound in (begin, end):          # the worker passes a share of [0, extent]
            emitter.builder.assume_range(bound, 0, self.loop.extent)
        emitter.loop(self.loop.var, begin, end, self.loop.body)
        emitter.finish()
        return fn

    def ranges(self, bld: ir.IRBuilder, threads: ir.Value) -> ir.Value:
        """The number of static shares (i64): the team size, at most ``MAX_SHARES``, at
        most the extent."""
        team = bld.sext(threads, I64)
        cap = ir.Constant(I64, min(MAX_SHARES, self.loop.extent))
        return bld.select(bld.icmp_signed("<", team, cap), team, cap)

    def share_size(self, bld: ir.IRBuilder, ranges: ir.Value) -> ir.Value:
        """Iterations per share: ``ceil(extent / ranges)``."""
        extent = ir.Constant(I64, self.loop.extent)
        return bld.sdiv(bld.add(extent, bld.sub(ranges, ir.Constant(I64, 1))), ranges)

    def share(self, bld: ir.IRBuilder, ranges: ir.Value, k: ir.Value
              ) -> tuple[ir.Value, ir.Value]:
        """``[begin, end)`` of share ``k`` of ``ranges`` (the static partition)."""
        extent = ir.Constant(I64, self.loop.extent)
        size = self.share_size(bld, ranges)
        begin = bld.mul(k, size)
        end = bld.add(begin, size)
        return begin, bld.select(bld.icmp_signed("<", end, extent), end, extent)

    def reset_counters(self, bld: ir.IRBuilder, counters: ir.Value, ranges: ir.Value) -> None:
        """Counter ``k`` (each on its own cache line) = the first iteration of share ``k``."""
        with _count_up(bld, ranges, f"{self.name}.reset") as k:
            begin, _ = self.share(bld, ranges, k)
            bld.store(begin, _counter(bld, counters, k))

    def worker_function(self, chunk: ir.Function, context_type: ir.Type) -> ir.Function:
        """``void worker(ptr context)``: claims pieces of the iteration space and runs them.

        The space is cut into one static share per thread (``ranges`` of them); each share
        has a counter (``claim_counters``), and a piece is claimed by an atomic add of the
        piece size (a ``1 / PIECES`` of a share) to it.  Thread ``t`` claims the pieces of
        share ``t`` first, in order, then those left in the other shares.  On an idle machine
        every thread runs its own share, as a static partition would, and its data stays in
        its core's cache from one loop to the next; when a thread is descheduled (another
        process, a virtual CPU preempted), the others finish its share instead of waiting at
        the barrier for it."""
        module = self.parent.state.module
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), f"{self.name}.worker")
        fn.linkage = "internal"
        bld = ir.IRBuilder(fn.append_basic_block("entry"))
        ctx = OpContext(bld, module)
        count = len(chunk.args) - 2
        fields = []
        for k, field in enumerate(context_type.elements):
            slot = bld.gep(fn.args[0], [ir.Constant(I32, 0), ir.Constant(I32, k)],
                           source_etype=context_type)
            fields.append(bld.load(slot, typ=field))
        args, (counters, ranges) = fields[:count], fields[count:]
        thread = bld.sext(ctx.call("omp_get_thread_num", I32), I64)
        piece = bld.sdiv(bld.add(self.share_size(bld, ranges), ir.Constant(I64, PIECES - 1)),
                         ir.Constant(I64, PIECES))
        with _count_up(bld, ranges, "share") as j:          # share (thread + j) % ranges
            k = bld.srem(bld.add(thread, j), ranges)
            _, end = self.share(bld, ranges, k)
            slot = _counter(bld, counters, k)
            claim = bld.append_basic_block("claim")
            run = bld.append_basic_block("run")
            exhausted = bld.append_basic_block("exhausted")
            bld.branch(claim)
            bld.position_at_end(claim)
            begin = bld.atomic_rmw("add", slot, piece, "monotonic")
            bld.cbranch(bld.icmp_signed("<", begin, end), run, exhausted)
            bld.position_at_end(run)
            stop = bld.add(begin, piece)
            bld.call(chunk, args + [begin, bld.select(bld.icmp_signed("<", stop, end), stop,
                                                     end)])
            bld.branch(claim)
            bld.position_at_end(exhausted)
        bld.ret_void()
        return fn


@contextlib.contextmanager
def _count_up(bld: ir.IRBuilder, limit: ir.Value, name: str) -> Iterator[ir.Value]:
    """``for k in range(limit)`` (i64) as basic blocks: yields ``k``; the body's code goes
    where the builder is, and may end in another block than it began."""
    before = bld.block
    header = bld.append_basic_block(name)
    body = bld.append_basic_block(f"{name}.body")
    done = bld.append_basic_block(f"{name}.done")
    bld.branch(header)
    bld.position_at_end(header)
    k = bld.phi(I64)
    k.add_incoming(ir.Constant(I64, 0), before)
    bld.cbranch(bld.icmp_signed("<", k, limit), body, done)
    bld.position_at_end(body)
    yield k
    k.add_incoming(bld.add(k, ir.Constant(I64, 1)), bld.block)
    bld.branch(header)
    bld.position_at_end(done)


def _counter(bld: ir.IRBuilder, counters: ir.Value, k: ir.Value) -> ir.Value:
    """The address of claim counter ``k`` (``COUNTER_STRIDE`` i64s apart)."""
    return bld.gep(counters, [bld.mul(k, ir.Constant(I64, COUNTER_STRIDE))], source_etype=I64)


# Pieces per static share that threads claim (``_ParallelOutliner.worker_function``), the
# most shares (threads beyond claim pieces of the others' shares), and the i64s between two
# claim counters (one 64-byte cache line each: the owner's adds never contend with another's).
PIECES = 4
MAX_SHARES = 64
COUNTER_STRIDE = 8


def _unique_roots(buffers: Sequence[Buffer]) -> list[Buffer]:
    out: list[Buffer] = []
    for b in buffers:
        if all(b.root is not o for o in out):
            out.append(b.root)
    return out


def emit_kernel(state: _ModuleState, kernel: Kernel, name: str | None = None,
                constants: Sequence[Buffer] | None = None) -> ir.Function:
    """Emit one (verified, vectorized) kernel as an external function of the module.

    With ``constants`` (a shared kernel), the function ``name`` takes those constant buffers
    as pointer arguments after the kernel's parameters (``noalias``, 64-byte aligned,
    dereferenceable) instead of reading module globals, and reads no other constant."""
    params = [PTR if isinstance(p, Buffer) else llvm_type(p.type) for p in kernel.params]
    extra = [PTR] * len(constants or ())
    fn = ir.Function(state.module, ir.FunctionType(ir.VoidType(), params + extra + [I32]),
                     name or kernel.name)
    fn.attributes.add("nounwind")
    emitter = _FunctionEmitter(state, kernel, fn)
    for arg, param in zip(fn.args, kernel.params):
        arg.name = param.name
        if isinstance(param, Buffer):
            arg.add_attribute("noalias")
            if param.alignment:
                arg.attributes.align = param.alignment
            emitter.buffers[id(param.root)] = arg
        else:
            emitter.values[param] = arg
    if constants is not None:
        emitter.constant_arguments = {id(c) for c in constants}
        for arg, buffer in zip(fn.args[len(params):], constants):
            arg.name = buffer.name
            arg.add_attribute("noalias")
            arg.attributes.align = 64
            arg.attributes.dereferenceable = max(buffer.span * buffer.dtype.nbytes, 1)
            emitter.buffers[id(buffer)] = arg
    fn.args[-1].name = "threads"
    emitter.threads = fn.args[-1]
    emitter.stmt(kernel.body)
    emitter.finish()
    return fn


def emit_forwarder(state: _ModuleState, kernel: Kernel, shared: ir.Function,
                   constants: Sequence[Buffer], immediates: Sequence[ir.Constant] = ()
                   ) -> ir.Function:
    """``kernel``'s function (its own name and ABI) as a tail call of the ``shared`` one with
    ``kernel``'s ``immediates`` and ``constants`` (module globals) appended to the
    arguments."""
    params = [PTR if isinstance(p, Buffer) else llvm_type(p.type) for p in kernel.params]
    fn = ir.Function(state.module, ir.FunctionType(ir.VoidType(), params + [I32]), kernel.name)
    fn.attributes.add("nounwind")
    for arg, param in zip(fn.args, kernel.params):
        arg.name = param.name
    fn.args[-1].name = "threads"
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    globals_ = [state.constant_global(c) for c in constants]
    builder.call(shared, [*fn.args[:-1], *immediates, *globals_, fn.args[-1]], tail=True)
    builder.ret_void()
    return fn


def emit_kernel_group(state: _ModuleState, group: KernelGroup) -> int:
    """One function per kernel; kernels identical up to constants share one body
    (``<first>.shared``) that each kernel's function calls with its constants (and its values
    of the float immediates the kernels disagree on).  Returns the number of instructions
    emitted."""
    before = len(state.module.functions)
    first = group.kernels[0]
    if len(group.kernels) == 1:
        emit_kernel(state, verify_kernel(vectorize_loops(verify_kernel(first))))
    else:
        varying = group.varying
        body = with_immediates_as_parameters(first, [group.immediates[0][k] for k in varying])
        body = verify_kernel(vectorize_loops(verify_kernel(body)))
        shared = emit_kernel(state, body, f"{first.name}.shared", group.constants[0])
        shared.linkage = "internal"
        shared.attributes.add("noinline")       # one body, however many kernels call it
        for kernel, constants, immediates in zip(group.kernels, group.constants,
                                                 group.immediates):
            values = [ir.Constant(llvm_type(immediates[k].type), immediates[k].value)
                      for k in varying]
            emit_forwarder(state, kernel, shared, constants, values)
    return sum(len(block.instructions) for fn in state.module.functions[before:]
               for block in fn.blocks)


def with_immediates_as_parameters(kernel: Kernel, immediates: Sequence[FloatImm]) -> Kernel:
    """``kernel`` with each of the float immediates ``immediates`` (nodes of its body)
    replaced by a new scalar parameter, appended to its parameters in that order."""
    if not immediates:
        return kernel
    parameters = {id(imm): Var(f"immediate{k}", imm.imm_type)
                  for k, imm in enumerate(immediates)}
    body = rewrite(kernel.body, lambda node: parameters.get(id(node))
                   if isinstance(node, FloatImm) else None)
    return attrs.evolve(kernel, params=(*kernel.params, *parameters.values()), body=body)


def lower_kernels_to_llvm(kernels: Sequence[Kernel], options: CodegenOptions = CodegenOptions(),
                          name: str = "lpjit",
                          sink: Callable[[str, str], object] | None = None) -> LoweredModule:
    """One LLVM module defining every kernel (verified before and after vectorization);
    with ``options.share_kernels``, kernels identical up to constants share one body.

    With a ``sink``, kernels are emitted in parts: whenever a module being filled holds
    ``options.part_instructions`` instructions, its text is handed to ``sink`` with the
    optimisation its kernels need (``Kernel.optimization``: a part holds kernels of one
    level, so kernels of each level fill a module of their own), kept in ``parts``, and a new
    module is started; once a program is split (or holds kernels of both levels), its last
    kernels form parts as well.  The module left over is the returned ``ir_module`` (all the
    kernels of a small program of one level, or of any program without a sink; else none);
    it declares the kernels defined in the parts.  Its ``level`` is what its kernels need
    (O3 for a mix)."""
    names = [k.name for k in kernels]
    if len(set(names)) != len(names):
        raise CodegenError(f"kernel names must be unique in a module, got {names}")
    pool = _ConstantPool()
    groups = (group_identical_kernels(kernels) if options.share_kernels
              else [KernelGroup((k,), ((),)) for k in kernels])
    parts: list[str] = []
    levels: list[str] = []
    elsewhere: list[Kernel] = []            # kernels defined in parts already handed on
    filling: dict[str, _Filling] = {}

    def hand_on(level: str) -> None:
        fill = filling.pop(level)
        parts.append(str(fill.state.module))
        levels.append(level)
        sink(parts[-1], level)
        release_module(fill.state.module)
        elsewhere.extend(fill.kernels)

    for group in groups:
        level = group.kernels[0].optimization if sink is not None else "one module"
        if level not in filling:
            module = _new_module(f"{name}.{len(parts) + len(filling) + 1}", options)
            filling[level] = _Filling(_ModuleState(module, options, pool))
        fill = filling[level]
        fill.size += emit_kernel_group(fill.state, group)
        fill.kernels.extend(group.kernels)
        if sink is not None and fill.size >= options.part_instructions:
            hand_on(level)
    # A program split in parts hands on its last kernels too: the module left for the caller
    # then holds only what it adds (the entry point).
    if parts or len(filling) > 1:
        for level in list(filling):
            hand_on(level)
    fill = next(iter(filling.values()), None)
    module = fill.state.module if fill is not None else _new_module(name, options)
    inside = {k.optimization for k in fill.kernels} if fill is not None else set()
    level = inside.pop() if len(inside) == 1 else "full"      # a mix needs O3
    module.name = name
    for kernel in elsewhere:
        declare_kernel(module, kernel)
    return LoweredModule(module, tuple(kernels), tuple(pool.symbols), tuple(parts),
                         tuple(levels), level)


@attrs.define
class _Filling:
    """A module being filled with kernels of one optimisation level, its size in
    instructions and the kernels it defines."""

    state: _ModuleState
    size: int = 0
    kernels: list[Kernel] = attrs.Factory(list)


def release_module(module: ir.Module) -> None:
    """Break the reference cycles of a module nothing will use again (a part, once printed):
    functions and their blocks, blocks and their instructions, functions and their
    arguments and return value, and instructions and their operands (a loop's phi and
    increment use each other).  Reference counting then frees it at once; left to Python's cyclic collector,
    the parts of ResNet-18 INT8 (330k objects) were collected in one pause of 0.2 s after
    the compile (``lpjit.pipeline`` pauses the collector while compiling)."""
    for value in module.globals.values():
        if isinstance(value, ir.Function):
            for block in value.blocks:
                for instruction in block.instructions:
                    instruction.operands = []
                    if isinstance(instruction, ir.PhiInstr):
                        instruction.incomings = []
                block.instructions.clear()
                block.terminator = None
            value.blocks.clear()
            value.args, value.return_value = (), None
    module.globals.clear()


def _new_module(name: str, options: CodegenOptions) -> ir.Module:
    module = ir.Module(name)
    if options.triple:
        module.triple = options.triple
    if options.data_layout:
        module.data_layout = options.data_layout
    return module


def declare_kernel(module: ir.Module, kernel: Kernel) -> ir.Function:
    """A declaration of ``kernel``'s function (defined in another module) in ``module``."""
    params = [PTR if isinstance(p, Buffer) else llvm_type(p.type) for p in kernel.params]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), params + [I32]), kernel.name)
    fn.attributes.add("nounwind")
    return fn


__all__ = ["CodegenOptions", "LoweredModule", "emit_kernel", "lower_kernels_to_llvm",
           "release_module"]
