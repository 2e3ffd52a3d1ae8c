"""SoftMax-1/8, LogSoftmax-5, MVN-2/6, NormalizeL2-1 and BatchNormInference-1/5 as loops.

The first four are reduce-then-map kernels (``reductions.reduction_frames``): per group of
elements sharing their kept-axis indices, the statistics (max and sum of exponentials, mean
and variance, sum of squares) are reduced over the group, then every element of the group is
stored through the epilogue.  The order of operations follows ``lpjit.reference``
(``exp(x - max) / sum``, ``(x - mean) / sqrt(var + eps)``, ...); sums accumulate in float32
where the reference uses float64.  BatchNormInference is a per-channel elementwise kernel.
"""

from __future__ import annotations

import numpy as np

from lowering import builder as lb
from lowering.loop_ir import Buffer, Expr, IntImm, as_expr, f32
from lowering.lower_graph import (
    Epilogue,
    LoweringContext,
    kernel_builder,
    lowering,
    make_kernel,
)
from lowering.ops.reductions import (
    Frame,
    Term,
    combine,
    horizontal,
    identity,
    output_loops,
    reduction_frames,
    splat,
)
from lowering.vector_math import exp_nonpositive
from lpjit.graph import constant_value
from lpjit.ops import activations as act
from lpjit.ops import normalization as norm


def _f32(value: float, like: Expr) -> Expr:
    """The float32 rounding of ``value`` as a constant of ``like``'s type."""
    return as_expr(float(np.float32(value)), like.type)


def _frame_kernel(ctx: LoweringContext, node, axes, body) -> list:
    """One kernel over the data input (port 0) running ``body(b, frame)`` per group."""
    source = ctx.buffer(node.inputs[0])
    b = kernel_builder(ctx, node)
    with reduction_frames(ctx, b, source, axes) as frame:
        body(b, frame)
    return [make_kernel(b)]


# -- SoftMax / LogSoftmax ---------------------------------------------------------------------

@lowering(act.SoftmaxV1, act.SoftmaxV8)
def lower_softmax(ctx: LoweringContext, node: act.AxisActivation, epilogue: Epilogue) -> list:
    """``exp(x - max) * (1 / sum(exp(x - max)))``: a max pass, a sum pass, a store pass.

    The reciprocal of the sum is taken once per group (an ulp from the reference's
    division).  Along the innermost axis the passes use vector accumulators combined by a
    tree of lane halves (``_row_reduce``)."""

    # The exponentials are kept in the output buffer between the passes when it holds f32.
    keep = epilogue.output if epilogue.output.dtype == f32 else None

    def body(b: lb.KernelBuilder, frame: Frame) -> None:
        def exp_shifted(x: Expr) -> Expr:
            return exp_nonpositive(x - splat(peak, x))

        peak = b.let(_row_reduce(frame, "max"), "peak")
        total = _row_reduce(frame, "add", exp_shifted, keep)
        scale = b.let(as_expr(1.0, f32) / total, "scale")
        with frame.map() as index:
            if keep is not None:
                e = keep[tuple(index)]
            else:
                e = exp_nonpositive(frame.source[tuple(index)] - peak)
            epilogue.store(b, index, e * splat(scale, e))

    return _frame_kernel(ctx, node, (node.normalized_axis,), body)


def _row_reduce(frame: Frame, op: str, term: Term = lambda x: x,
                keep: Buffer | None = None) -> Expr:
    """``frame.reduce(op, term, keep)``; when the one reduced axis is the innermost and holds
    a vector or more, a vector accumulator over it, a scalar tail, and the accumulator's
    lanes combined pairwise (``_tree``: log2(lanes) steps instead of a serial chain)."""
    rank = len(frame.fixed)
    length = frame.source.shape[-1]
    lanes = frame.lanes
    if frame.axes != (rank - 1,) or lanes < 2 or length < lanes:
        return frame.reduce(op, term, keep)
    b = frame.b
    head = frame.indices({rank - 1: IntImm(0)})[:-1]
    vacc = b.local(identity(op, f32.with_lanes(lanes)), "vacc")
    acc = b.local(identity(op, f32), "acc")
    full, tail = divmod(length, lanes)

    def step(accumulator: Expr, index: tuple[Expr, ...]) -> None:
        value = term(frame.source[index])
        if keep is not None:
            value = b.let(value, "kept")
            b.store(keep, index, value)
        b.assign(accumulator, combine(op, accumulator, value))

    with b.for_range(full, name="v") as v:
        step(vacc, (*head, lb.ramp(v * lanes, lanes)))
    if tail:
        with b.for_range(tail, name="t") as t:
            step(acc, (*head, t + full * lanes))
    return combine(op, _tree(op, vacc), acc)


def _tree(op: str, vector: Expr) -> Expr:
    """The lanes of ``vector`` combined by ``op``: halves, then quarters, ... (reassociated:
    a few ulp for sums, exact for max)."""
    while vector.type.lanes > 2:
        half = vector.type.lanes // 2
        vector = combine(op, lb.shuffle(vector, range(half)),
                         lb.shuffle(vector, range(half, 2 * half)))
    return horizontal(op, vector)


@lowering(act.LogSoftmax)
def lower_log_softmax(ctx: LoweringContext, node: act.LogSoftmax, epilogue: Epilogue) -> list:
    """``(x - max) - log(sum(exp(x - max)))``."""

    def body(b: lb.KernelBuilder, frame: Frame) -> None:
        peak = b.let(frame.reduce("max"), "peak")
        total = frame.reduce("add", lambda x: lb.call("exp", x - splat(peak, x)))
        log_total = b.let(lb.call("log", total), "log_total")
        with frame.map() as index:
            x = frame.source[tuple(index)]
            epilogue.store(b, index, (x - peak) - log_total)

    return _frame_kernel(ctx, node, (node.normalized_axis,), body)


# -- MVN ---------------------------------------------------------------------------------------

@lowering(norm.MVNV2, norm.MVNV6)
def lower_mvn(ctx: LoweringContext, node: norm.MVNV2 | norm.MVNV6, epilogue: Epilogue
              ) -> list:
    """``d = x - mean``; ``var = mean(d * d)``; ``d / sqrt(var + eps)`` (``inside_sqrt``, and
    always for MVN-2) or ``d / (sqrt(var) + eps)`` (``outside_sqrt``); ``d`` alone without
    ``normalize_variance``.  The division is a multiply by the group's reciprocal (an ulp
    from the reference's, as SoftMax's); along the innermost axis the sums use
    ``_row_reduce``."""
    eps_mode = getattr(node, "eps_mode", "inside_sqrt")

    def body(b: lb.KernelBuilder, frame: Frame) -> None:
        count = float(frame.count)
        mean = b.let(_row_reduce(frame, "add") / as_expr(count, f32), "mean")
        scale = None
        if node.normalize_variance:
            def square(x: Expr) -> Expr:
                d = x - splat(mean, x)
                return d * d
            var = _row_reduce(frame, "add", square) / as_expr(count, f32)
            eps = _f32(node.eps, var)
            if eps_mode == "inside_sqrt":
                denominator = lb.call("sqrt", var + eps)
            else:
                denominator = lb.call("sqrt", var) + eps
            scale = b.let(as_expr(1.0, f32) / denominator, "scale")
        with frame.map() as index:
            d = frame.source[tuple(index)] - mean
            epilogue.store(b, index, d if scale is None else d * splat(scale, d))

    return _frame_kernel(ctx, node, node.axes, body)


# -- NormalizeL2 -------------------------------------------------------------------------------

@lowering(norm.NormalizeL2)
def lower_normalize_l2(ctx: LoweringContext, node: norm.NormalizeL2, epilogue: Epilogue
                       ) -> list:
    """``x / sqrt(sum(x^2) + eps)`` (``add``) or ``x / sqrt(max(sum(x^2), eps))`` (``max``);
    empty axes give ``x == 0 ? 0 : 1``."""
    axes = node.axes

    def body(b: lb.KernelBuilder, frame: Frame) -> None:
        if not axes:
            x = frame.source[tuple(frame.indices({}))]
            epilogue.store(b, frame.indices({}),
                           lb.select(lb.eq(x, 0.0), as_expr(0.0, x.type), as_expr(1.0, x.type)))
            return
        total = frame.reduce("add", lambda x: x * x)
        eps = _f32(node.eps, total)
        guarded = total + eps if node.eps_mode == "add" else lb.max_(total, eps)
        norm_value = b.let(lb.call("sqrt", guarded), "norm")
        with frame.map() as index:
            epilogue.store(b, index, frame.source[tuple(index)] / norm_value)

    return _frame_kernel(ctx, node, axes, body)


# -- BatchNormInference ------------------------------------------------------------------------

@lowering(norm.BatchNormInferenceV1, norm.BatchNormInferenceV5)
def lower_batch_norm(ctx: LoweringContext, node: norm.BatchNormInference, epilogue: Epilogue
                     ) -> list:
    """``(x - mean) / sqrt(variance + epsilon) * gamma + beta`` per channel (axis 1), in the
    reference's float32 order; with a constant variance the square root is computed once
    at compile time (numpy's float32 ``sqrt`` is correctly rounded, as the kernel's)."""
    data = node.inputs[node.port("data")]
    shape = data.shape
    variance = node.inputs[node.port("variance")]
    known = constant_value(variance)
    denominator = None
    if known is not None:
        values = known.astype(np.float32) + np.float32(node.epsilon)
        denominator = ctx.constant(node.origin.name + "_sqrt_var", np.sqrt(values))
    b = kernel_builder(ctx, node)
    with output_loops(ctx, b, shape) as indices:
        channel = [indices[1]]

        def per_channel(name: str) -> Expr:
            return ctx.load(node.inputs[node.port(name)], channel)

        x = ctx.load(data, indices)
        if denominator is not None:
            root = denominator[indices[1]]
        else:
            var = per_channel("variance")
            root = lb.call("sqrt", var + _f32(node.epsilon, var))
        value = (x - per_channel("mean")) / root * per_channel("gamma") + per_channel("beta")
        epilogue.store(b, indices, value)
    return [make_kernel(b)]
