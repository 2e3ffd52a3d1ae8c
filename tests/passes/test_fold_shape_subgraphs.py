"""fold_shape_subgraphs: shape computations become Constants; float chains never fold."""

from __future__ import annotations

import numpy as np
import pytest

from lpjit import dtypes, reference
from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Result, Value
from lpjit.ops.core import Convert
from lpjit.ops.elementwise import Add, Equal, Multiply
from lpjit.ops.movement import Concat, Gather
from lpjit.ops.nn import MatMul
from lpjit.ops.quantize import FakeQuantize
from lpjit.ops.shape import ShapeOf, ShapeOfV3
from lpjit.passes import fold_constant_node, fold_shape_subgraphs
from lpjit.passes.fold_shape_subgraphs import FoldShapeSubgraphsOptions

_ids = iter(range(1000, 10**6))


def origin(name: str, type_: str) -> Origin:
    return Origin(str(next(_ids)), name, type_)


def const(values, name: str = "c", element_type=None) -> Value:
    return Constant.of(np.asarray(values), origin(name, "Const"), element_type).output


def parameter(shape, dtype=dtypes.f32, name: str = "x") -> Parameter:
    return Parameter(origin=origin(name, "Parameter"), inputs=(), tensor_names=((name,),),
                     element_type=dtype, shape=shape)


def graph(parameters: list[Parameter], *outputs: Value) -> Graph:
    results = [Result(origin=origin(f"r{i}", "Result"), inputs=(v,))
               for i, v in enumerate(outputs)]
    return Graph("g", parameters, results)


def kinds(g: Graph) -> list[str]:
    return [n.kind for n in g.nodes]


def test_shape_subgraph_folds_to_one_constant():
    """ShapeOf -> Gather -> Concat (before) becomes one i64 Constant (expected) that keeps the
    last node's origin and tensor names and the reference value."""
    x = parameter((2, 3, 5))
    shape = ShapeOf(origin=origin("shape", "ShapeOf"), inputs=(x.output,))
    dims = Gather(origin=origin("dims", "Gather"),
                  inputs=(shape.output, const(np.array([0, 2], np.int64)),
                          const(np.int64(0))))
    target = Concat(origin=origin("target", "Concat"), inputs=(dims.output,
                                                               const(np.array([-1], np.int64))),
                    tensor_names=(("target_shape",),), axis=0)
    before = graph([x], target.output)
    rng = np.random.default_rng(0)
    expected = reference.run(before, [rng.standard_normal((2, 3, 5)).astype(np.float32)])
    after = fold_shape_subgraphs(before)
    assert kinds(after) == ["Parameter", "Constant", "Result"]
    folded = after.nodes[1]
    assert isinstance(folded, Constant) and folded.element_type == dtypes.i64
    assert folded.origin == target.origin and folded.tensor_names == (("target_shape",),)
    np.testing.assert_array_equal(folded.data, [2, 5, -1])
    np.testing.assert_array_equal(reference.run(after, [np.ones((2, 3, 5), np.float32)])[0],
                                  expected[0])
    assert not folded.data.flags.writeable


def test_shape_of_v3_folds_with_its_output_type():
    x = parameter((4, 1))
    shape = ShapeOfV3(origin=origin("shape", "ShapeOf"), inputs=(x.output,),
                      output_type=dtypes.i32)
    folded = fold_constant_node(shape)
    assert isinstance(folded, Constant) and folded.element_type == dtypes.i32
    np.testing.assert_array_equal(folded.data, np.array([4, 1], np.int32))


def test_integer_and_boolean_constant_expressions_fold():
    rng = np.random.default_rng(1)
    a = rng.integers(-50, 50, (3, 4)).astype(np.int32)
    b = rng.integers(-50, 50, (4,)).astype(np.int32)
    product = Multiply(origin=origin("mul", "Multiply"), inputs=(const(a), const(b)))
    folded = fold_constant_node(product)
    assert isinstance(folded, Constant) and folded.origin == product.origin
    np.testing.assert_array_equal(folded.data, a * b)
    same = Equal(origin=origin("eq", "Equal"), inputs=(const(a), const(a.copy())))
    folded_equal = fold_constant_node(same)
    assert isinstance(folded_equal, Constant) and folded_equal.element_type == dtypes.boolean
    assert folded_equal.data.all()


def _weight_chain() -> tuple[Graph, list[Node]]:
    """Weight decompression: Const(i8) -> Convert(f32) -> Multiply(scale), then FakeQuantize."""
    rng = np.random.default_rng(2)
    q = const(rng.integers(-128, 128, (4, 3)).astype(np.int8), "q")
    deq = Convert(origin=origin("deq", "Convert"), inputs=(q,), destination_type=dtypes.f32)
    scaled = Multiply(origin=origin("w", "Multiply"),
                      inputs=(deq.output, const(np.float32(0.02), "scale")))
    fq = FakeQuantize(origin=origin("fq_w", "FakeQuantize"),
                      inputs=(scaled.output, const(np.float32(-1)), const(np.float32(1)),
                              const(np.float32(-1)), const(np.float32(1))), levels=255)
    x = parameter((2, 3))
    out = MatMul(origin=origin("mm", "MatMul"), inputs=(x.output, fq.output),
                 transpose_a=False, transpose_b=True)
    return graph([x], out.output), [deq, scaled, fq]


def test_float_weight_chains_do_not_fold():
    """Const(i8) -> Convert(f32) -> Multiply and FakeQuantize on weights stay as they are."""
    g, chain = _weight_chain()
    assert fold_shape_subgraphs(g) is g
    assert all(fold_constant_node(n) is n for n in chain)


def test_large_integer_results_do_not_fold():
    """An integer result above ``max_elements`` stays; the limit is an option."""
    values = np.arange(12, dtype=np.int64).reshape(3, 4)
    node = Add(origin=origin("add", "Add"), inputs=(const(values), const(values.copy())))
    assert fold_constant_node(node, FoldShapeSubgraphsOptions(max_elements=11)) is node
    assert isinstance(fold_constant_node(node, FoldShapeSubgraphsOptions(max_elements=12)),
                      Constant)
    big = np.ones(65537, np.int64)
    large = Add(origin=origin("big", "Add"), inputs=(const(big), const(big.copy())))
    assert fold_constant_node(large) is large


def test_nodes_reading_a_parameter_value_do_not_fold():
    x = parameter((3,), dtypes.i64)
    node = Add(origin=origin("add", "Add"), inputs=(x.output, const(np.array([1, 2, 3]))))
    assert fold_constant_node(node) is node
    assert fold_constant_node(x) is x
    g = graph([x], node.output)
    assert fold_shape_subgraphs(g) is g


@pytest.mark.parametrize("seed", [3, 4])
def test_folding_preserves_reference_outputs(seed):
    """Folding keeps what the graph computes (an integer shape chain feeding a float op)."""
    rng = np.random.default_rng(seed)
    x = parameter((2, 6))
    shape = ShapeOf(origin=origin("shape", "ShapeOf"), inputs=(x.output,))
    doubled = Multiply(origin=origin("twice", "Multiply"),
                       inputs=(shape.output, const(np.array([1, 2], np.int64))))
    as_float = Convert(origin=origin("as_float", "Convert"), inputs=(doubled.output,),
                       destination_type=dtypes.f32)
    total = Add(origin=origin("sum", "Add"),
                inputs=(x.output, const(rng.standard_normal((2, 6)).astype(np.float32))))
    before = graph([x], total.output, as_float.output)
    after = fold_shape_subgraphs(before)
    assert kinds(after).count("ShapeOf") == 0 and "Convert" in kinds(after)
    inputs = [rng.standard_normal((2, 6)).astype(np.float32)]
    for a, b in zip(reference.run(after, inputs), reference.run(before, inputs)):
        np.testing.assert_array_equal(a, b)
