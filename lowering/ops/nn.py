"""Float lowerings of Convolution, GroupConvolution (incl. depthwise) and MatMul.

* Convolution / GroupConvolution: a direct convolution written as an implicit GEMM per output
  row (``lowering.ops.nn_conv``): output channels are the broadcast rows of an FMA register
  tile, output pixels along the width its vectors; weights are repacked at compile time to
  ``[G][OC/rows][IC][k...][rows]``; padding and width strides go through a zero-padded,
  phase-split copy of the input so the inner loop has neither branches nor gathers.
  Depthwise convolutions (one input and one output channel per group) get their own kernel.
* MatMul (``lowering.ops.nn_matmul``): a register-tiled GEMM; a constant ``B`` is packed at
  compile time into column panels, a transposed activation ``B`` is packed at run time.

Every output goes through the group's ``Epilogue`` (bias, activations, FakeQuantize fuse).
Weights must be compile-time constants: a weight subgraph of constants only (e.g. a
FakeQuantize or Convert of a Constant) is evaluated at compile time by the reference executor.
"""

from __future__ import annotations

import math

import numpy as np

from lowering.loop_ir import Kernel
from lowering.lower_graph import Epilogue, LoweringContext, lowering
from lowering.ops.nn_conv import ConvGeometry, lower_conv
from lowering.ops.nn_conv_channels import lower_conv_by_channels
from lowering.ops.nn_depthwise import lower_depthwise
from lowering.ops.nn_matmul import lower_matmul
from lowering.ops.nn_schedules import default_conv_schedule
from lpjit.errors import LoweringError
from lpjit.graph import Constant, Node, Value
from lpjit.ops.nn import Convolution, GroupConvolution, MatMul


def constant_operand(value: Value) -> np.ndarray | None:
    """The data of ``value`` when it only depends on Constants (folded by the reference
    executor), else ``None``."""
    node = value.node
    if isinstance(node, Constant):
        return np.asarray(node.data)
    if not node.inputs:
        return None
    arrays = []
    for v in node.inputs:
        data = constant_operand(v)
        if data is None:
            return None
        arrays.append(data)
    from lpjit.reference import evaluate_node

    return evaluate_node(node, arrays)[value.index]


def _require_f32(node: Node) -> None:
    for v in (*node.inputs, *node.outputs):
        if v.dtype.name != "f32":
            raise LoweringError(f"the float {node.kind} lowering needs f32 tensors, got "
                                f"{v.dtype} (convert the model to f32)", node.origin)


@lowering(Convolution, GroupConvolution)
def lower_convolution(ctx: LoweringContext, node: Node, epilogue: Epilogue) -> list[Kernel]:
    """Direct convolution (depthwise specialised) with constant, compile-time packed weights."""
    _require_f32(node)
    weights = constant_operand(node.inputs[1])
    if weights is None:
        raise LoweringError("convolution weights must be constants (or a subgraph of "
                            "constants); activation weights are not supported", node.origin)
    geometry = ConvGeometry.of(node)
    weights = weights.astype(np.float32).reshape(geometry.weights_shape)
    if geometry.is_depthwise and geometry.spatial_rank == 2:
        return [lower_depthwise(ctx, node, epilogue, geometry, weights)]
    schedule = default_conv_schedule(ctx.target, geometry.group_out, geometry.out_spatial,
                                     geometry.group_in * math.prod(geometry.kernel),
                                     ctx.options.threads)
    if schedule.vectorize == "channels":
        return [lower_conv_by_channels(ctx, node, epilogue, geometry, weights, schedule)]
    return [lower_conv(ctx, node, epilogue, geometry, weights, schedule)]


@lowering(MatMul)
def lower_matmul_op(ctx: LoweringContext, node: Node, epilogue: Epilogue) -> list[Kernel]:
    """Register-tiled GEMM; constant B packed at compile time."""
    _require_f32(node)
    b_constant = constant_operand(node.inputs[1])
    if b_constant is not None:
        b_constant = b_constant.astype(np.float32)
    return [lower_matmul(ctx, node, epilogue, b_constant)]
