"""Lowerings of the integer and weight-only compressed ops of ``lpjit.ops.lowp``.

* ``QConvolution`` (plain, grouped, depthwise): exact ``u8 x i8 -> i32`` direct convolution
  (``lowp_conv``; depthwise: ``lowp_depthwise``).
* ``QMatMul`` (constant i8 weights) and ``QActivationMatMul`` (u8 x u8, attention): exact
  integer GEMMs (``lowp_matmul``).
* ``CompressedMatMul``: f32 GEMM whose i8/u8 weights are decompressed on the fly;
  ``CompressedConvolution``: weights decompressed at compile time into the float conv kernel.

The dot step of the integer tiles (``lowp_tiles.choose_dot_step``) follows the ``Target``:
VNNI ``vpdpbusd``; AVX2 ``vpmaddwd`` on 16-bit values, or ``vpmaddubsw`` where the compiler
proves from the constant weights and the largest level index of the input (``max_level``) that
no pair of products can saturate; a portable multiply-add otherwise.  ``integer_kernels``
lists, per program step, the steps used and the proofs (for the precision report).
"""

from __future__ import annotations

import attrs
import numpy as np

from lowering.loop_ir import Kernel
from lowering.lower_graph import Epilogue, LoweringContext, lowering
from lowering.microkernels import DotU8I8Saturating, Microkernel
from lowering.ops.lowp_conv import (
    conv_weight_pairs,
    epilogue_tables,
    lower_q_conv,
    q_conv_geometry,
)
from lowering.ops.lowp_tiles import DOT_GROUPS, choose_dot_step, integer_tile
from lowering.program import Program
from lowering.traversal import walk
from lpjit.errors import LoweringError
from lpjit.graph import Constant, Node, Value, constant_value
from lpjit.ops import lowp
from lpjit.passes.propagate_dequantize import RULES as LEVEL_PRESERVING_OPS

MAX_LEVEL = 255


def max_level(value: Value) -> int:
    """The largest level index ``value`` (u8) can hold: ``levels - 1`` of the Quantize that
    made it, through ops that only move or select level indices (MaxPool, Reshape, Concat,
    ...); 255 when unknown."""
    node = value.node
    if isinstance(node, lowp.Quantize):
        return node.levels - 1
    if isinstance(node, Constant):
        return int(np.max(node.data, initial=0))
    if type(node) in LEVEL_PRESERVING_OPS:
        sources = [v for v in node.inputs if v.dtype.name == "u8"]
        if sources:
            return max(max_level(v) for v in sources)
    return MAX_LEVEL


def _constants(node: Node, ports: range) -> list[np.ndarray]:
    arrays = []
    for port in ports:
        data = constant_value(node.inputs[port])
        if data is None:
            raise LoweringError(f"input {port} must be a constant", node.origin)
        arrays.append(np.asarray(data))
    return arrays


@lowering(lowp.QConvolution)
def lower_q_convolution(ctx: LoweringContext, node: lowp.QConvolution,
                        epilogue: Epilogue) -> list[Kernel]:
    """Integer direct convolution (``lowp_conv``) with the target's dot step."""
    weights, scale, step, low = _constants(node, range(1, 5))
    weights = weights.astype(np.int8)
    g = q_conv_geometry(node)
    dot = choose_dot_step(ctx.target, lambda: conv_weight_pairs(weights, DOT_GROUPS["quad"]),
                          max_level(node.inputs[0]))
    tile = integer_tile(ctx.target, dot, g.group_out, g.out_spatial[-1])
    tables = epilogue_tables(ctx, node, g, weights, scale, step, low)
    parallel = ctx.options.threads != 1
    return [lower_q_conv(ctx, node, epilogue, g, weights, tables, dot, tile, parallel)]


# -- what ran where --------------------------------------------------------------------------

@attrs.frozen
class IntegerKernel:
    """One program step with integer dot products: its layers, the dot steps it uses and,
    for ``vpmaddubsw``, the proof that it cannot saturate."""

    label: str
    microkernels: tuple[str, ...]
    justifications: tuple[str, ...]

    def __str__(self) -> str:
        text = f"{self.label}: {', '.join(self.microkernels)}"
        return text + "".join(f"\n    proof: {j}" for j in self.justifications)


def integer_kernels(program: Program) -> tuple[IntegerKernel, ...]:
    """The steps of ``program`` that contain integer microkernels (see ``IntegerKernel``)."""
    found = []
    for step in program.steps:
        nodes = [n for n in walk(step.kernel.body) if isinstance(n, Microkernel)]
        if not nodes:
            continue
        names = tuple(dict.fromkeys(n.mnemonic for n in nodes))
        proofs = tuple(dict.fromkeys(n.justification for n in nodes
                                     if isinstance(n, DotU8I8Saturating)))
        found.append(IntegerKernel(step.label, names, proofs))
    return tuple(found)


__all__ = ["IntegerKernel", "integer_kernels", "lower_q_convolution", "max_level"]
