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

import math

import attrs
import numpy as np

from lowering.loop_ir import Kernel
from lowering.lower_graph import Epilogue, LoweringContext, lowering
from lowering.microkernels import DotU8I8Saturating, Microkernel
from lowering.ops import nn as float_nn
from lowering.ops.lowp_conv import (
    conv_weight_pairs,
    epilogue_tables,
    lower_q_conv,
    q_conv_geometry,
    scheduled_geometry,
)
from lowering.ops.lowp_conv_channels import lower_q_conv_by_channels
from lowering.ops.lowp_depthwise import depthwise_weight_pairs, lower_q_depthwise
from lowering.ops.lowp_matmul import (
    lower_compressed_matmul,
    lower_q_activation_matmul,
    lower_q_matmul,
    matmul_geometry,
)
from lowering.ops.lowp_tiles import (
    DOT_GROUPS,
    DotStep,
    choose_dot_step,
    integer_tile,
    integer_tile_cost,
)
from lowering.ops.nn_conv import ConvGeometry
from lowering.ops.nn_schedules import RegisterTile, default_matmul_schedule
from lowering.program import Program
from lowering.target import Target
from lowering.traversal import walk
from lpjit.errors import LoweringError
from lpjit.graph import Constant, Node, Value, constant_value
from lpjit.ops import lowp
from lpjit.passes.propagate_dequantize import RULES as LEVEL_PRESERVING_OPS
from lpjit.reference.lowp import decompress

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
    """Integer direct convolution (``lowp_conv``) with the target's dot step; 2-D depthwise
    convolutions get the per-channel kernel of ``lowp_depthwise``."""
    weights, scale, step, low = _constants(node, range(1, 5))
    weights = weights.astype(np.int8)
    g = q_conv_geometry(node)
    tables = epilogue_tables(ctx, node, g, weights, scale, step, low)
    parallel = ctx.options.threads != 1
    activations = max_level(node.inputs[0])
    if g.is_depthwise and g.spatial_rank == 2:
        dot = choose_dot_step(ctx.target,
                              lambda: depthwise_weight_pairs(weights, DOT_GROUPS["quad"]),
                              activations)
        return [lower_q_depthwise(ctx, node, epilogue, g, weights, tables, dot, parallel,
                                  activations)]
    dot = choose_dot_step(ctx.target, lambda: conv_weight_pairs(weights, DOT_GROUPS["quad"]),
                          activations)
    layout, tile = q_conv_schedule(ctx.target, dot,
                                   scheduled_geometry(ctx, node, g, epilogue, dot))
    lower = lower_q_conv_by_channels if layout == "channels" else lower_q_conv
    return [lower(ctx, node, epilogue, g, weights, tables, dot, tile, parallel)]


# Instructions per output element of the epilogue: per vector (width layout), plus a store
# per lane (channel layout: channels are H*W apart in NCHW).
_EPILOGUE = 6


def q_conv_schedule(target: Target, dot: DotStep, g: ConvGeometry
                    ) -> tuple[str, RegisterTile]:
    """``("width" | "channels", tile)``: the layout whose tiles cost less over the whole
    output (``integer_tile_cost`` per reduction step times the steps, plus the epilogue)."""
    steps = -(-g.group_in // dot.group) * math.prod(g.kernel)
    outputs = g.group_out * math.prod(g.out_spatial)
    rows = math.prod(g.out_spatial[:-1])
    cost, width_tile = integer_tile_cost(target, dot, g.group_out, g.out_spatial[-1])
    width = cost * rows * steps + outputs * _EPILOGUE / width_tile.lanes
    if g.group_out < 2:
        return "width", width_tile
    cost, channel_tile = integer_tile_cost(target, dot, math.prod(g.out_spatial), g.group_out)
    channels = cost * steps + outputs * (1 + _EPILOGUE / channel_tile.lanes)
    return ("channels", channel_tile) if channels < width else ("width", width_tile)


@lowering(lowp.QMatMul)
def lower_q_matmul_op(ctx: LoweringContext, node: lowp.QMatMul,
                      epilogue: Epilogue) -> list[Kernel]:
    """Integer GEMM with constant i8 weights ``[N, K]`` (``lowp_matmul``)."""
    weights, scale, step, low = _constants(node, range(1, 5))
    weights = weights.astype(np.int8)
    g = matmul_geometry(node, weights.shape, True)
    dot = choose_dot_step(ctx.target, lambda: matmul_weight_pairs(weights, DOT_GROUPS["quad"]),
                          max_level(node.inputs[0]))
    tile = integer_tile(ctx.target, dot, g.rows, g.columns)
    parallel = ctx.options.threads != 1
    return [lower_q_matmul(ctx, node, epilogue, weights, scale, float(step[0]),
                           float(low[0]), dot, tile, parallel)]


def matmul_weight_pairs(weights: np.ndarray, group: int) -> np.ndarray:
    """The weight pairs a quad step multiplies, ``[N, pairs, 2]`` (K zero-padded)."""
    rows, depth = weights.shape
    padded = np.zeros((rows, -(-depth // group) * group), weights.dtype)
    padded[:, :depth] = weights
    return padded.reshape(rows, -1, 2)


@lowering(lowp.QActivationMatMul)
def lower_q_activation_matmul_op(ctx: LoweringContext, node: lowp.QActivationMatMul,
                                 epilogue: Epilogue) -> list[Kernel]:
    """Integer GEMM of two u8 activations with exact row/column-sum compensation."""
    constants = [float(c[0]) for c in _constants(node, range(2, 6))]
    g = matmul_geometry(node, node.input_type(1).shape, node.transpose_b)
    dot = choose_dot_step(ctx.target, None, MAX_LEVEL)
    tile = integer_tile(ctx.target, dot, g.rows, g.columns)
    parallel = ctx.options.threads != 1
    return [lower_q_activation_matmul(ctx, node, epilogue, constants, dot, tile, parallel)]


def _require_f32_data(node: Node) -> None:
    for value in (node.inputs[0], node.outputs[0]):
        if value.dtype.name != "f32":
            raise LoweringError(f"the weight-only compressed {node.kind} lowering needs f32 "
                                f"activations, got {value.dtype}", node.origin)


@lowering(lowp.CompressedMatMul)
def lower_compressed_matmul_op(ctx: LoweringContext, node: lowp.CompressedMatMul,
                               epilogue: Epilogue) -> list[Kernel]:
    """f32 GEMM; the i8/u8 (i4/u4 held as i8/u8) weights are decompressed on the fly."""
    _require_f32_data(node)
    weights, scale, *zero_point = _constants(node, range(1, len(node.inputs)))
    g = matmul_geometry(node, weights.shape, True)
    tile = default_matmul_schedule(ctx.target, g.rows, g.columns, ctx.options.threads).tile
    parallel = ctx.options.threads != 1
    return [lower_compressed_matmul(ctx, node, epilogue, _stored(weights), scale,
                                    zero_point[0] if zero_point else None, tile, parallel)]


def _stored(weights: np.ndarray) -> np.ndarray:
    """Low-precision weights as they stay in memory: i8 or u8 (4-bit values unpacked)."""
    return weights.astype(np.uint8 if weights.dtype.kind == "u" else np.int8)


@lowering(lowp.CompressedConvolution)
def lower_compressed_convolution(ctx: LoweringContext, node: lowp.CompressedConvolution,
                                 epilogue: Epilogue) -> list[Kernel]:
    """The float direct convolution on weights decompressed at compile time (in f32, as the
    reference): convolution weights are small next to activations, so they are kept as f32."""
    _require_f32_data(node)
    weights, scale, *zero_point = _constants(node, range(1, len(node.inputs)))
    channel = (*weights.shape[:2], *(1,) * (weights.ndim - 2))
    points = zero_point[0].reshape(channel) if zero_point else None
    values = decompress(weights, scale.reshape(channel), points)
    g = q_conv_geometry(node)
    # The float kernels, through the names ``lowering.ops.nn`` dispatches to.
    if g.is_depthwise and g.spatial_rank == 2:
        return [float_nn.lower_depthwise(ctx, node, epilogue, g, values)]
    schedule = float_nn.default_conv_schedule(ctx.target, g.group_out, g.out_spatial,
                                              g.group_in * math.prod(g.kernel),
                                              ctx.options.threads)
    if schedule.vectorize == "channels":
        return [float_nn.lower_conv_by_channels(ctx, node, epilogue, g, values, schedule)]
    return [float_nn.lower_conv(ctx, node, epilogue, g, values, schedule)]


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
