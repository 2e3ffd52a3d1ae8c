"""Structural fingerprints of kernels: which kernels are the same code over other constants.

ResNet-18 has ten 3x3 convolutions of four shapes; their kernels differ only in the weights,
scales and biases they read.  Two kernels are **identical up to constants** when their loop
IR is the same tree after

* every variable is replaced by its number in order of first appearance (names are ignored,
  identity is kept: one ``Var`` bound once and used twice stays one number);
* every root buffer is replaced by its number in order of first appearance plus everything
  about it but its name and data (role, element type, shape, strides, alignment); a view by
  its shape, strides and offset over its base's number;
* every float immediate is replaced by its type and its number in order of first
  appearance (its value is kept apart, see below).

Such kernels can share one compiled function that takes the constants as arguments
(``lowering.codegen_llvm``).  Their float immediates are compared by bits (``-0.0`` is not
``0.0``): the slots where the kernels disagree (a requantization scale folded into the code)
become scalar arguments of the shared function too; the others stay immediates.  ``group_identical_kernels`` computes the groups by hash-consing:
every node is interned as a tuple of its class and its fields' numbers, so equal trees get
equal numbers in time linear in the number of distinct nodes (a shared sub-expression is
visited once per kernel).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

import attrs

from lowering.loop_ir import Buffer, Expr, FloatImm, Kernel, Stmt, Var


@attrs.frozen(eq=False)
class KernelGroup:
    """Kernels identical up to constants; ``constants[i]`` are the constant root buffers of
    ``kernels[i]`` and ``immediates[i]`` its float immediates, each in corresponding order
    (the same position plays the same role in every kernel)."""

    kernels: tuple[Kernel, ...]
    constants: tuple[tuple[Buffer, ...], ...]
    immediates: tuple[tuple[FloatImm, ...], ...] = ()

    @property
    def varying(self) -> tuple[int, ...]:
        """The immediate slots whose value (bit pattern) is not the same in every kernel."""
        if len(self.kernels) < 2:
            return ()
        columns = zip(*self.immediates)
        return tuple(slot for slot, column in enumerate(columns)
                     if len({_bits(imm.value) for imm in column}) > 1)


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


@functools.cache
def _init_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(cls) if f.init)


class _Fingerprinter:
    """Numbers the nodes of one kernel, interning them in a table shared between kernels."""

    def __init__(self, table: dict[tuple, int]) -> None:
        self.table = table
        self.memo: dict[int, int] = {}
        self.variables: dict[int, int] = {}
        self.roots: dict[int, int] = {}
        self.constants: list[Buffer] = []
        self.immediates: list[FloatImm] = []

    def intern(self, key: tuple) -> int:
        return self.table.setdefault(key, len(self.table))

    def kernel(self, kernel: Kernel) -> int:
        params = tuple(self.value(p) for p in kernel.params)
        return self.intern(("kernel", params, self.value(kernel.body),
                            tuple(kernel.fast_math), kernel.optimization))

    def value(self, value: object) -> object:
        if isinstance(value, (Expr, Stmt, Buffer)):
            return self.node(value)
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        if isinstance(value, float):
            return ("float", _bits(value))
        if isinstance(value, bool):
            return ("bool", value)
        return value        # ints, strings, None and frozen value types (types, loop kinds)

    def node(self, node: Expr | Stmt | Buffer) -> int:
        number = self.memo.get(id(node))
        if number is None:
            if isinstance(node, Buffer):
                number = self.intern(self.buffer(node))
            elif isinstance(node, Var):
                order = self.variables.setdefault(id(node), len(self.variables))
                number = self.intern(("var", order, node.var_type))
            elif isinstance(node, FloatImm):
                self.immediates.append(node)
                number = self.intern(("float", len(self.immediates) - 1, node.imm_type))
            else:
                fields = tuple(self.value(getattr(node, name))
                               for name in _init_fields(type(node)))
                number = self.intern((type(node), fields))
            self.memo[id(node)] = number
        return number

    def buffer(self, buffer: Buffer) -> tuple:
        if buffer.base is not None:
            return ("view", buffer.dtype, buffer.shape, buffer.strides, buffer.offset,
                    self.node(buffer.base))
        if id(buffer) not in self.roots:
            self.roots[id(buffer)] = len(self.roots)
            if buffer.role == "constant":
                self.constants.append(buffer)
        return ("root", self.roots[id(buffer)], buffer.role, buffer.dtype, buffer.shape,
                buffer.strides, buffer.alignment)


def group_identical_kernels(kernels: Sequence[Kernel]) -> list[KernelGroup]:
    """``kernels`` partitioned into groups identical up to constants (module docstring),
    in order of each group's first kernel."""
    table: dict[tuple, int] = {}
    groups: dict[int, list[_Fingerprinter]] = {}
    members: dict[int, list[Kernel]] = {}
    for kernel in kernels:
        fingerprinter = _Fingerprinter(table)
        number = fingerprinter.kernel(kernel)
        groups.setdefault(number, []).append(fingerprinter)
        members.setdefault(number, []).append(kernel)
    return [KernelGroup(tuple(members[number]), tuple(tuple(f.constants) for f in found),
                        tuple(tuple(f.immediates) for f in found))
            for number, found in groups.items()]


__all__ = ["KernelGroup", "group_identical_kernels"]
