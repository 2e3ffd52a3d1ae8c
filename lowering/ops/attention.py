"""ScaledDotProductAttention-13 lowered to loops: ``softmax(q @ k^T * scale + bias) @ v``.

One kernel; per batch index (batch dims broadcast as numpy does; the first longer than one
iteration is ``parallel``):

1. ``k`` is transposed into a scratch ``[E, S]`` so that logits are dense along ``S``.
2. Per block of ``ROW_BLOCK`` query rows ``l``:
   ``logits[l, s] = sum_e q[l, e] * kT[e, s] * scale + bias[l, s]`` (vectorized over ``s``,
   one register accumulator per row, fused multiply-adds) into scratch rows; the bias is ``-inf`` above the
   diagonal when ``causal``, else the mask (boolean: ``-inf`` where False; float: added).
3. Each row's max, then ``exp(logit - max)`` kept in the row while summing.
4. ``out[l, ev] = sum_s logits[l, s] * v[s, ev] / total[l]`` (vectorized over ``ev``).

Float32 throughout, where the reference computes in float64; a row masked entirely gives NaN
as the reference does.  The default scale is ``1 / sqrt(E)`` rounded to float32.
"""

from __future__ import annotations

import contextlib
import math

import attrs

from lowering import builder as lb
from lowering.loop_ir import (
    SERIAL,
    Buffer,
    Expr,
    IntImm,
    Load,
    Select,
    as_expr,
    f32,
    vectorized,
)
from lowering.lower_graph import (
    Epilogue,
    LoweringContext,
    kernel_builder,
    lowering,
    make_kernel,
)
from lowering.ops.reductions import Frame, parallel_kind, splat
from lowering.vector_math import exp_nonpositive
from lpjit.ops import attention as ops

NEG_INF = -math.inf


# Query rows computed together: independent accumulators hide the add latency and share
# each load of the keys and values.
ROW_BLOCK = 4


@attrs.frozen(eq=False)
class _Attention:
    """What the row blocks of one batch index share."""

    ctx: LoweringContext
    node: ops.ScaledDotProductAttention
    epilogue: Epilogue
    b: lb.KernelBuilder
    batch: tuple[Expr, ...]
    keys: Buffer              # k transposed: [E, S]
    scale: Expr

    def rows(self, first: Expr, count: int) -> None:
        """Query rows ``first .. first+count-1``: logits, softmax, weighted values."""
        b, ctx, node = self.b, self.ctx, self.node
        q, v = node.inputs[ops.QUERY], node.inputs[ops.VALUE]
        features, source_length = self.keys.shape
        value_features = v.shape[-1]
        index = [first + r if r else first for r in range(count)]
        logits = b.allocate("logits", f32, (count, source_length))
        with b.for_range(source_length, vectorized(ctx.lanes), "s") as s:
            dots = [b.local(as_expr(0.0, f32), "dot") for _ in range(count)]
            with b.for_range(features, SERIAL, "e") as e:
                key = b.let(self.keys[e, s], "key")
                for dot, row in zip(dots, index):
                    b.assign(dot, lb.fma(ctx.load(q, [*self.batch, row, e]), key, dot))
            for r, (dot, row) in enumerate(zip(dots, index)):
                b.store(logits, (r, s), _biased(ctx, node, dot * self.scale,
                                                [*self.batch, row, s]))
        totals = []
        for r in range(count):
            frame = Frame(b, logits, (1,), (IntImm(r), None), ctx.lanes)
            peak = b.let(frame.reduce("max"), "peak")
            totals.append(b.let(frame.reduce(
                "add", lambda x, peak=peak: exp_nonpositive(x - splat(peak, x)), keep=logits),
                "total"))
        with b.for_range(value_features, vectorized(ctx.lanes), "ev") as ev:
            accs = [b.local(as_expr(0.0, f32), "acc") for _ in range(count)]
            with b.for_range(source_length, SERIAL, "s") as s:
                value = b.let(ctx.load(v, [*self.batch, s, ev]), "value")
                for r, acc in enumerate(accs):
                    b.assign(acc, lb.fma(logits[r, s], value, acc))
            for acc, total, row in zip(accs, totals, index):
                self.epilogue.store(b, [*self.batch, row, ev], acc / total)


@lowering(ops.ScaledDotProductAttention)
def lower_attention(ctx: LoweringContext, node: ops.ScaledDotProductAttention,
                    epilogue: Epilogue) -> list:
    """The kernel of the module docstring."""
    q, k = node.inputs[ops.QUERY], node.inputs[ops.KEY]
    out_shape = node.output_types[0].shape
    length, features = q.shape[-2:]
    source_length = k.shape[-2]
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
        attention = _Attention(ctx, node, epilogue, b, tuple(batch), keys, scale)
        blocks, rest = divmod(length, ROW_BLOCK)
        if blocks:
            with b.for_range(blocks, SERIAL, "l") as block:
                attention.rows(block * ROW_BLOCK, ROW_BLOCK)
        if rest:
            attention.rows(as_expr(blocks * ROW_BLOCK), rest)
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
