"""``lower_program_to_llvm``: a whole ``Program`` as one LLVM module with one entry point.

The module holds every kernel of the program (``lower_kernels_to_llvm``) and the entry
function ::

    void lpjit_run(ptr inputs, ptr outputs, ptr arena, i32 threads)

``inputs`` and ``outputs`` are arrays of data pointers in Program input / output order (the
model's Parameter / Result order); ``arena`` is the scratch memory of the ``MemoryPlan``
(64-byte aligned, ``plan.arena_bytes`` long); ``threads`` is the OpenMP team size passed on to
every kernel.  The entry calls the steps' kernels in order, each with the root pointer of each
buffer parameter: an input or output pointer from the arrays, ``arena + offset`` for scratch,
and for a view the pointer of the buffer that owns its memory (kernels add the view offset).
One call runs the whole model: no Python between the kernels.  Kernels are ``noinline``: the
entry stays a list of calls (each kernel compiled once, a clear boundary for profiles).

A checked program (``lowering.bounds_checks``) has an error record, which lives right after
the arena (``arena + plan.arena_bytes``; the caller provides ``RECORD_BYTES`` more): the entry
clears its site slot first, and after each kernel that reports a failure there it writes the
step's index into the record and returns without running the remaining steps.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from llvmlite import ir

from lowering.bounds_checks import SITE, STEP, program_record, record_of
from lowering.codegen_llvm import CodegenOptions, LoweredModule, lower_kernels_to_llvm
from lowering.codegen_ops import I8, I32, I64, PTR
from lowering.loop_ir import Buffer, Kernel
from lowering.program import Program
from lpjit.errors import CodegenError
from runtime.memory import MemoryPlan

ENTRY_POINT = "lpjit_run"


@attrs.frozen(eq=False)
class ProgramModule:
    """The LLVM module of a whole program: its kernels, entry point and memory plan."""

    lowered: LoweredModule
    program: Program
    plan: MemoryPlan
    entry: str = ENTRY_POINT

    @property
    def ir_module(self) -> ir.Module:
        """The llvmlite module (kernels and entry point)."""
        return self.lowered.ir_module


def lower_program_to_llvm(program: Program, plan: MemoryPlan,
                          options: CodegenOptions | None = None,
                          entry: str = ENTRY_POINT,
                          sink: Callable[[str], object] | None = None) -> ProgramModule:
    """Every kernel of ``program`` plus the entry function ``entry`` (module docstring).

    ``sink``: emit the kernels in parts, each handed to ``sink`` as soon as it is built
    (``lower_kernels_to_llvm``); the entry point then stays in the module that declares
    them."""
    kernels = _unique_kernels(program)
    if any(k.name == entry for k in kernels):
        raise CodegenError(f"program '{program.name}': a kernel is named '{entry}', the name "
                           "of the entry point")
    lowered = lower_kernels_to_llvm(kernels, options or CodegenOptions(),
                                    name=program.name or "lpjit", sink=sink)
    emit_entry_point(lowered.ir_module, program, plan, entry)
    return ProgramModule(lowered, program, plan, entry)


def _unique_kernels(program: Program) -> list[Kernel]:
    kernels: dict[int, Kernel] = {}
    for step in program.steps:
        kernels.setdefault(id(step.kernel), step.kernel)
    return list(kernels.values())


def emit_entry_point(module: ir.Module, program: Program, plan: MemoryPlan,
                     name: str = ENTRY_POINT) -> ir.Function:
    """Define ``void name(ptr inputs, ptr outputs, ptr arena, i32 threads)`` in ``module``
    (which already defines the program's kernels), calling each step's kernel in order."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, I32]), name)
    fn.attributes.add("nounwind")
    inputs, outputs, arena, threads = fn.args
    for arg, arg_name in zip(fn.args, ("inputs", "outputs", "arena", "threads")):
        arg.name = arg_name
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    pointers = _RootPointers(builder, program, plan, inputs, outputs, arena)
    clear_error_record(builder, pointers, program)
    for index, step in enumerate(program.steps):
        kernel = step.kernel
        callee = module.get_global(kernel.name)
        if not isinstance(callee, ir.Function):
            raise CodegenError(f"entry point: kernel '{kernel.name}' is not in the module")
        if kernel.scalar_params:
            raise CodegenError(f"entry point: kernel '{kernel.name}' of step '{step.label}' "
                               "takes scalar parameters; program kernels take buffers only")
        callee.attributes.add("noinline")  # one copy of each kernel, a boundary per step
        builder.call(callee, [pointers.of(b) for b in kernel.buffer_params] + [threads])
        return_if_failed(builder, pointers, kernel, index)
    builder.ret_void()
    return fn


def clear_error_record(builder: ir.IRBuilder, pointers: _RootPointers, program: Program
                       ) -> None:
    """Checked programs: clear the error record's site slot (before the first step)."""
    record = program_record(program)
    if record is not None:
        _store_slot(builder, pointers.of(record), SITE, 0)


def return_if_failed(builder: ir.IRBuilder, pointers: _RootPointers, kernel: Kernel,
                     step: int) -> None:
    """After step ``step`` of a checked program: if its kernel recorded a failure, note the
    step in the record and return."""
    record = record_of(kernel)
    if record is not None:
        _return_if_failed(builder, pointers.of(record), step)


def _slot(builder: ir.IRBuilder, record: ir.Value, slot: int) -> ir.Value:
    return builder.gep(record, [ir.Constant(I64, slot)], source_etype=I64)


def _store_slot(builder: ir.IRBuilder, record: ir.Value, slot: int, value: int) -> None:
    builder.store(ir.Constant(I64, value), _slot(builder, record, slot))


def _return_if_failed(builder: ir.IRBuilder, record: ir.Value, step: int) -> None:
    """After step ``step``: if its kernel recorded a failure, note the step and return."""
    site = builder.load(_slot(builder, record, SITE), typ=I64)
    failed = builder.icmp_unsigned("!=", site, ir.Constant(I64, 0))
    with builder.if_then(failed, likely=False):
        _store_slot(builder, record, STEP, step)
        builder.ret_void()


class _RootPointers:
    """The data pointer of every root buffer, loaded or computed once at the top of the entry."""

    def __init__(self, builder: ir.IRBuilder, program: Program, plan: MemoryPlan,
                 inputs: ir.Argument, outputs: ir.Argument, arena: ir.Argument) -> None:
        self.builder, self.plan, self.arena = builder, plan, arena
        self.slots = {id(b): (inputs, i) for i, b in enumerate(program.inputs)}
        self.slots.update({id(b): (outputs, i) for i, b in enumerate(program.outputs)})
        self.values: dict[int, ir.Value] = {}

    def of(self, buffer: Buffer) -> ir.Value:
        """The pointer a kernel receives for ``buffer``: its root's memory."""
        root = buffer.root
        if id(root) not in self.values:
            self.values[id(root)] = self._compute(root)
        return self.values[id(root)]

    def _compute(self, root: Buffer) -> ir.Value:
        bld = self.builder
        if root.role in ("input", "output"):
            if id(root) not in self.slots:
                raise CodegenError(f"entry point: {root.role} buffer '{root.name}' is not "
                                   f"among the program's {root.role}s")
            array, index = self.slots[id(root)]
            slot = bld.gep(array, [ir.Constant(I64, index)], source_etype=PTR,
                           name=f"{root.name}.slot")
            return bld.load(slot, typ=PTR, name=root.name)
        if root.role == "scratch":
            offset = ir.Constant(I64, self.plan.offset(root))
            return bld.gep(self.arena, [offset], source_etype=I8, name=root.name)
        if root.role == "error":
            offset = ir.Constant(I64, self.plan.arena_bytes)
            return bld.gep(self.arena, [offset], source_etype=I8, name=root.name)
        raise CodegenError(f"entry point: buffer '{root.name}' has role '{root.role}', which "
                           "a kernel cannot take as a parameter")
