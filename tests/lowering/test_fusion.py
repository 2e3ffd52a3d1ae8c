"""``partition_graph``'s inlining: an elementwise op whose only consumer is an elementwise op of
the same shape is computed inside that consumer's kernel (the residual branch of a block); a
stand-alone input Quantize is computed by the integer convolution that reads it."""

from __future__ import annotations

import numpy as np
from lowp_graphs import add, const, conv, graph, parameter, relu

from lowering.emitters import is_elementwise
from lowering.fusion import partition_graph
from lowering.lower_graph import EPILOGUE_ANCHORS, LoweringOptions, lower_graph_to_loops
from lowering.program_exec import llvm_compiler, run_program
from lpjit import reference

F32 = np.float32
RNG = np.random.default_rng(7)


def _fusable(node) -> bool:
    return type(node) in EPILOGUE_ANCHORS or is_elementwise(node)


def _residual_block(shared: bool = False):
    x = parameter((1, 4, 6, 7), "x")
    skip = parameter((1, 4, 6, 7), "skip")
    weights = const(RNG.normal(0, 0.3, (4, 4, 3, 3)).astype(F32), "w")
    branch = relu(skip.output, "skip_relu")
    y = relu(add(conv(x.output, weights), branch, "residual"), "out_relu")
    outputs = (y, add(branch, branch, "twice")) if shared else (y,)
    return graph([x, skip], *outputs), [RNG.normal(0, 1, p) .astype(F32) for p in
                                       [(1, 4, 6, 7), (1, 4, 6, 7)]]


def test_residual_branch_is_inlined_into_the_conv_epilogue():
    import lowering.ops  # noqa: F401  (registers the lowerings)

    g, data = _residual_block()
    groups = partition_graph(g, is_elementwise, _fusable)
    assert [n.origin.name for n in groups[0].nodes] == ["conv", "residual", "out_relu"]
    assert [n.origin.name for n in groups[0].inlined] == ["skip_relu"]
    program = lower_graph_to_loops(g, LoweringOptions(threads=1))
    assert len(program.steps) == 1
    order = [n.origin.name for n in g.nodes]            # the step lists its layers in graph order
    layers = [o.name for o in program.steps[0].layers]
    assert sorted(layers) == ["conv", "out_relu", "residual", "skip_relu"]
    assert layers == sorted(layers, key=order.index)
    expected, = reference.run(g, data)
    actual, = run_program(program, data, llvm_compiler)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_a_value_with_two_consumers_is_stored_not_inlined():
    import lowering.ops  # noqa: F401

    g, data = _residual_block(shared=True)
    groups = partition_graph(g, is_elementwise, _fusable)
    inlined = {n.origin.name for group in groups for n in group.inlined}
    assert "skip_relu" not in inlined
    assert any(group.anchor.origin.name == "skip_relu" for group in groups)
    program = lower_graph_to_loops(g, LoweringOptions(threads=1))
    for e, a in zip(reference.run(g, data), run_program(program, data, llvm_compiler),
                    strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def test_large_standalone_elementwise_kernels_run_in_parallel():
    """A stand-alone elementwise kernel of >= 2^16 elements gets a PARALLEL outer loop when
    threads are allowed (same results on 1 and 2 threads); a small one, or threads=1, none."""
    from lowering.loop_ir import For
    from lowering.lower_graph import PARALLEL_ELEMENTWISE_MIN

    def parallel_loops(program) -> int:
        from lowering.traversal import walk

        return sum(1 for s in program.steps for n in walk(s.kernel.body)
                   if isinstance(n, For) and n.kind.name == "parallel")

    for shape, expected in (((1, 32, 48, 48), 1), ((1, 4, 8, 8), 0)):
        x = parameter(shape, "x")
        g = graph([x], relu(x.output))
        data = [RNG.normal(0, 1, shape).astype(F32)]
        assert (np.prod(shape) >= PARALLEL_ELEMENTWISE_MIN) == bool(expected)
        outputs = []
        for threads, loops in ((2, expected), (1, 0)):
            program = lower_graph_to_loops(g, LoweringOptions(threads=threads))
            assert parallel_loops(program) == loops
            outputs.append(run_program(program, data, llvm_compiler)[0])
        np.testing.assert_array_equal(outputs[0], outputs[1])
        np.testing.assert_array_equal(outputs[0], np.maximum(data[0], 0))


def _quantized_conv(kernel: int = 3, consumers: int = 1, producer=None):
    """f32 ``x`` [-> ``producer``] -> Quantize -> QConvolution ``kernel x kernel`` (and, with
    ``consumers=2``, the Quantize's output also returned)."""
    from lowp_graphs import origin

    from lpjit.ops import lowp

    x = parameter((1, 4, 6, 7), "x")
    source = x.output if producer is None else producer(x.output)
    q = lowp.Quantize(origin=origin("q", "FakeQuantize"),
                      inputs=(source, const(np.full((1, 1, 1, 1), -0.5, F32)),
                              const(np.full((1, 1, 1, 1), 1.5, F32))), levels=256).output
    pad = kernel // 2
    node = lowp.QConvolution(
        origin=origin("qconv", "Convolution"),
        inputs=(q, const(RNG.integers(-128, 128, (1, 5, 4, kernel, kernel)).astype(np.int8)),
                const(RNG.uniform(0.001, 0.02, 5).astype(F32)), const(np.array([2 / 255], F32)),
                const(np.array([-0.5], F32))),
        strides=(1, 1), pads_begin=(pad, pad), pads_end=(pad, pad), dilations=(1, 1))
    outputs = (node.output, q) if consumers == 2 else (node.output,)
    return graph([x], *outputs), [RNG.uniform(-1, 2, (1, 4, 6, 7)).astype(F32)]


def test_input_quantize_is_inlined_into_the_integer_convolution():
    """A stand-alone Quantize whose only consumer is a 3x3 QConvolution (and the elementwise
    op inlined into it) is computed in the conv's kernel: one group, one step listing every
    layer, the reference's results."""
    import lowering.ops  # noqa: F401

    g, data = _quantized_conv(producer=lambda v: relu(v, "pre_relu"))
    groups = partition_graph(g, is_elementwise, _fusable)
    assert len(groups) == 1
    assert [n.origin.name for n in groups[0].inlined] == ["pre_relu", "q"]
    program = lower_graph_to_loops(g, LoweringOptions(threads=1))
    assert [[o.name for o in s.layers] for s in program.steps] == [["pre_relu", "q", "qconv"]]
    expected, = reference.run(g, data)
    actual, = run_program(program, data, llvm_compiler)
    np.testing.assert_array_equal(actual, expected)


def test_input_quantize_with_two_consumers_or_a_pointwise_conv_is_stored():
    """The Quantize keeps its own group when its output is also a model output, or when the
    convolution is pointwise (its image is regrouped through views of a stored input)."""
    import lowering.ops  # noqa: F401

    for g, data in (_quantized_conv(consumers=2), _quantized_conv(kernel=1)):
        groups = partition_graph(g, is_elementwise, _fusable)
        assert [group.anchor.origin.name for group in groups] == ["q", "qconv"]
        assert not any(group.inlined for group in groups)
        program = lower_graph_to_loops(g, LoweringOptions(threads=1))
        for e, a in zip(reference.run(g, data), run_program(program, data, llvm_compiler),
                        strict=True):
            np.testing.assert_array_equal(a, e)
