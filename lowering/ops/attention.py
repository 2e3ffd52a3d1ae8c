"""ScaledDotProductAttention-13 lowered to loops: ``softmax(q @ k^T * scale + bias) @ v``.

One kernel; per batch index (batch dims broadcast as numpy does; the first longer than one
iteration is ``parallel``):

1. ``k`` is transposed into a scratch ``[E, S]`` so that logits are dense along ``S``.
2. Per query row ``l``: ``logits[s] = sum_e q[l, e] * kT[e, s] * scale + bias[l, s]``
   (vectorized over ``s``, accumulated over ``e`` in registers) into a scratch row; the bias
   is ``-inf`` above the diagonal when ``causal``, else the mask (boolean: ``-inf`` where
   False; float: added).
3. The row's max, then ``exp(logit - max)`` kept in the row while summing.
4. ``out[l, ev] = sum_s row[s] * v[s, ev] / total`` (vectorized over ``ev``).

Float32 throughout, where the reference computes in float64; a row masked entirely gives NaN
as the reference does.  The default scale is ``1 / sqrt(E)`` rounded to float32.
"""

from __future__ import annotations

import contextlib
import math

from lowering import builder as lb
from lowering.loop_ir import SERIAL, Expr, IntImm, Load, Select, as_expr, f32, vectorized
from lowering.lower_graph import (
    Epilogue,
    LoweringContext,
    kernel_builder,
    lowering,
    make_kernel,
)
from lowering.ops.reductions import Frame, parallel_kind, splat
from lpjit.ops import attention as ops

NEG_INF = -math.inf


@lowering(ops.ScaledDotProductAttention)
def lower_attention(ctx: LoweringContext, node: ops.ScaledDotProductAttention,
                    epilogue: Epilogue) -> list:
    """The kernel of the module docstring."""
    q, k, v = (node.inputs[i] for i in (ops.QUERY, ops.KEY, ops.VALUE))
    out_shape = node.output_types[0].shape
    length, features = q.shape[-2:]
    source_length, value_features = v.shape[-2], v.shape[-1]
    b = kernel_builder(ctx, node)
    taken = [False]
    with contextlib.ExitStack() as stack:
        batch = [stack.enter_context(b.for_range(n, parallel_kind(ctx, n, taken), "b"))
                 for n in out_shape[:-2]]
        keys = b.allocate("keys_t", f32, (features, source_length))
        with b.for_range(source_length, SERIAL, "s") as s, \
                b.for_range(features, vectorized(ctx.lanes), "e") as e:
            b.store(keys, (e, s), ctx.load(k, [*batch, s, e]))
        scale = b.let(_scale(ctx, node, features), "scale")
        with b.for_range(length, SERIAL, "l") as row_index:
            row = b.allocate("logits", f32, (source_length,))
            with b.for_range(source_length, vectorized(ctx.lanes), "s") as s:
                dot = b.local(as_expr(0.0, f32), "dot")
                with b.for_range(features, SERIAL, "e") as e:
                    b.assign(dot, dot + ctx.load(q, [*batch, row_index, e]) * keys[e, s])
                b.store(row, (s,), _biased(ctx, node, dot * scale, [*batch, row_index, s]))
            frame = Frame(b, row, (0,), (None,), ctx.lanes)
            peak = b.let(frame.reduce("max"), "peak")
            total = b.let(frame.reduce("add", lambda x: lb.call("exp", x - splat(peak, x)),
                                       keep=row), "total")
            with b.for_range(value_features, vectorized(ctx.lanes), "ev") as ev:
                acc = b.local(as_expr(0.0, f32), "acc")
                with b.for_range(source_length, SERIAL, "s") as s:
                    b.assign(acc, acc + row[s] * ctx.load(v, [*batch, s, ev]))
                epilogue.store(b, [*batch, row_index, ev], acc / total)
    return [make_kernel(b)]


def _scale(ctx: LoweringContext, node: ops.ScaledDotProductAttention, features: int) -> Expr:
    if not node.has_scale:
        return as_expr(float(f32.numpy.type(1.0 / math.sqrt(features))), f32)
    buffer = ctx.buffer(node.inputs[ops.SCALE])
    return Load(buffer, tuple(IntImm(0) for _ in buffer.shape))


def _biased(ctx: LoweringContext, node: ops.ScaledDotProductAttention, logit: Expr,
            index: list[Expr]) -> Expr:
    """``logit`` plus the causal or mask bias at ``[batch..., l, s]``."""
    *_, row_index, s = index
    minus_inf = as_expr(NEG_INF, f32)
    if node.causal:
        return Select(lb.gt(s, row_index), minus_inf, logit)
    if not node.has_mask:
        return logit
    mask = ctx.load(node.inputs[ops.MASK], index)
    if mask.type.elem.is_bool:
        return Select(mask, logit, minus_inf)
    return logit + mask
