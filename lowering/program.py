"""A ``Program``: the whole graph as loop IR -- kernels called in order over shared buffers.

Buffers are the program's tensors: ``input`` buffers are the caller's input arrays, ``output``
buffers the caller's output arrays, ``constant`` buffers carry their data (weights, packed at
compile time), ``scratch`` buffers are intermediates that the memory planner places in one
arena.  A view buffer (``base`` set) aliases another buffer's memory (Reshape, Squeeze, ...).

Every ``Step`` runs one kernel whose buffer parameters *are* program buffers (so the step
needs no argument list of its own) and records the graph layers it computes, so that profiles
and errors name what the user knows.
"""

from __future__ import annotations

import functools

import attrs

from lowering.loop_ir import Buffer, Kernel
from lowering.traversal import constants_of
from lpjit.graph import Origin


@attrs.frozen(eq=False)
class Step:
    """Run ``kernel`` on its buffer parameters; it computes graph ``layers`` (a fused group, in
    graph order); ``anchor`` is the layer whose lowering made the kernel (the group's
    convolution, say, when an input Quantize inlined into it comes first; None: the first)."""

    kernel: Kernel
    layers: tuple[Origin, ...] = attrs.field(converter=tuple)
    anchor: Origin | None = None

    @property
    def buffers(self) -> tuple[Buffer, ...]:
        return self.kernel.buffer_params

    @property
    def label(self) -> str:
        """``conv1 + relu1``: the layer names of the fused group."""
        return " + ".join(origin.name for origin in self.layers) or self.kernel.name

    def __repr__(self) -> str:
        return f"<Step {self.kernel.name}: {self.label}>"


@attrs.frozen(eq=False)
class Program:
    """Inputs and outputs (in model order) and the steps that compute the outputs."""

    name: str
    inputs: tuple[Buffer, ...] = attrs.field(converter=tuple)
    outputs: tuple[Buffer, ...] = attrs.field(converter=tuple)
    steps: tuple[Step, ...] = attrs.field(converter=tuple)

    @functools.cached_property
    def roots(self) -> tuple[Buffer, ...]:
        """Every memory-owning buffer: inputs, outputs, then others in first-use order."""
        seen: dict[int, Buffer] = {}
        for buffer in (*self.inputs, *self.outputs):
            seen.setdefault(id(buffer.root), buffer.root)
        for step in self.steps:
            for buffer in (*step.buffers, *constants_of(step.kernel)):
                seen.setdefault(id(buffer.root), buffer.root)
        return tuple(seen.values())

    @property
    def constants(self) -> tuple[Buffer, ...]:
        return tuple(b for b in self.roots if b.role == "constant")

    @property
    def scratch(self) -> tuple[Buffer, ...]:
        return tuple(b for b in self.roots if b.role == "scratch")

    def with_steps(self, steps: tuple[Step, ...]) -> Program:
        return attrs.evolve(self, steps=steps)

    def __repr__(self) -> str:
        return (f"<Program '{self.name}': {len(self.steps)} steps, {len(self.inputs)} inputs, "
                f"{len(self.outputs)} outputs, {len(self.constants)} constants>")


def print_program(program: Program) -> str:
    """Readable text of a whole program: its buffers, then each step's kernel."""
    from lowering.printer import print_kernel

    lines = [f"program {program.name}"]
    for buffer in program.roots:
        lines.append(f"  buffer {buffer!r}")
    for step in program.steps:
        lines.append(f"# step {step.kernel.name}: {step.label}")
        lines.append(print_kernel(step.kernel))
    return "\n".join(lines)
