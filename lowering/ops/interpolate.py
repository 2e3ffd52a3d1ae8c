"""Interpolate-4/11 (nearest, linear, linear_onnx, cubic) lowered to loops.

Every implemented mode is separable, and the source position of each output index depends
only on the attributes and shapes, so the taps (input index and weight per output index) are
computed at compile time, per axis, by the reference's own float32 coordinate rules
(``lpjit.reference.interpolate``: nearest-mode ties depend on the last bit, so they are not
re-derived here), and embedded as constant tables.  The zero padding is folded into them: a
tap in the padding gets weight 0 and a clamped index.

The kernel loops over the output (innermost axis vectorized); per output element it sums
``w_0[t_0, o_0] * w_1[t_1, o_1] * ... * x[i_0[t_0, o_0], i_1[t_1, o_1], ...]`` over the tap
loops of the resampled axes.  An axis is one of:

* ``direct``: output index = input index (not resized, not padded): no table;
* ``gather``: one tap of weight 1 (nearest without padding): an index table only;
* ``weighted``: index and weight tables.

Without weighted axes the element is copied exactly (integer data too); otherwise the float32
sum is rounded half to even and saturated for integer outputs, as the reference.
"""

from __future__ import annotations

import contextlib

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import SERIAL, Buffer, Cast, Expr, Load, as_expr, f32, from_dtype, value_type
from lowering.lower_graph import (
    Epilogue,
    LoweringContext,
    kernel_builder,
    lowering,
    make_kernel,
)
from lowering.ops.reductions import output_loops
from lpjit.ops import interpolate as ops
from lpjit.reference import interpolate as semantics


@attrs.frozen(eq=False)
class AxisTaps:
    """How one output axis reads the input: ``index``/``weight`` are ``[taps, out]`` tables
    (``None`` for a direct axis; ``weight`` ``None`` for a gather)."""

    index: np.ndarray | None = None
    weight: np.ndarray | None = None

    @property
    def taps(self) -> int:
        return 1 if self.index is None else self.index.shape[0]


def axis_taps(node: ops.Interpolate, axis: int) -> AxisTaps:
    """The taps of ``axis`` in data coordinates (padding folded into zero weights)."""
    in_len = node.input_type(0).shape[axis]
    padded = node.padded_shape[axis]
    out_len = node.output_types[0].shape[axis]
    begin = node.pads_begin[axis]
    if axis in node.axes:
        scale = node.scales[node.axes.index(axis)]
        c = semantics.source_coordinates(node.coordinate_transformation_mode, out_len, padded,
                                         scale)
        taps = semantics.TAPS[node.mode](node, c, padded, scale)
    else:
        taps = [(np.arange(out_len), np.ones(out_len))]
    index = np.stack([np.asarray(i, np.int64) for i, _ in taps]) - begin
    weight = np.stack([np.asarray(w, np.float64) for _, w in taps])
    weight = np.where((index >= 0) & (index < in_len), weight, 0.0)
    index = np.clip(index, 0, in_len - 1)
    useful = np.any(weight != 0, axis=1)
    if useful.any():
        index, weight = index[useful], weight[useful]
    else:
        index, weight = index[:1], weight[:1]
    if index.shape[0] == 1 and np.all(weight == 1.0):
        if out_len == in_len and np.array_equal(index[0], np.arange(out_len)):
            return AxisTaps()
        return AxisTaps(index)
    return AxisTaps(index, weight.astype(np.float32))


@lowering(ops.InterpolateV4, ops.InterpolateV11)
def lower_interpolate(ctx: LoweringContext, node: ops.Interpolate, epilogue: Epilogue) -> list:
    """One kernel over the output (see the module docstring)."""
    source = ctx.buffer(node.inputs[0])
    out_shape = node.output_types[0].shape
    name = node.origin.name
    plans = [axis_taps(node, axis) for axis in range(len(out_shape))]
    tables = [_tables(ctx, f"{name}_axis{axis}", plan) for axis, plan in enumerate(plans)]
    weighted = any(plan.weight is not None for plan in plans)
    out_type = value_type(from_dtype(node.output_types[0].dtype))
    b = kernel_builder(ctx, node)
    with output_loops(ctx, b, out_shape) as outs:
        total = b.local(as_expr(0.0, f32), "total") if weighted else None
        with contextlib.ExitStack() as stack:
            indices, weights = [], []
            for axis, (o, (index_table, weight_table)) in enumerate(zip(outs, tables)):
                if index_table is None:
                    indices.append(o)
                    continue
                t = (stack.enter_context(b.for_range(index_table.shape[0], SERIAL, "t"))
                     if index_table.shape[0] > 1 else 0)
                limit = source.shape[axis] - 1
                indices.append(lb.min_(lb.max_(Load(index_table, (t, o)), 0), limit))
                if weight_table is not None:
                    weights.append(Load(weight_table, (t, o)))
            x = Load(source, tuple(indices))
            if total is None:
                value: Expr = x
            else:
                term = _as_f32(x)
                for w in weights:
                    term = term * w
                b.assign(total, total + term)
        if total is not None:
            value = total if out_type.is_float else Cast(total, out_type, "round_even_sat")
        epilogue.store(b, outs, value)
    return [make_kernel(b)]


def _tables(ctx: LoweringContext, name: str, plan: AxisTaps
            ) -> tuple[Buffer | None, Buffer | None]:
    index = None if plan.index is None else ctx.constant(name + "_index", plan.index)
    weight = None if plan.weight is None else ctx.constant(name + "_weight", plan.weight)
    return index, weight


def _as_f32(x: Expr) -> Expr:
    t = x.type.elem
    if t == f32:
        return x
    return Cast(x, f32, "exact" if t.bits < 24 else "nearest")
