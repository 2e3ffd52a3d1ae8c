"""fold_constants: Constant-only nodes become Constants; f16 decompression chains fold in f32."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from lpjit import dtypes, reference
from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Result, Value
from lpjit.ops import activations as act
from lpjit.ops import elementwise as ew
from lpjit.ops.core import Convert
from lpjit.ops.movement import Split
from lpjit.ops.nn import MaxPoolV1
from lpjit.ops.shape import BroadcastV3, Reshape, Tile
from lpjit.passes.fold_constants import FoldConstantsOptions, fold_constants

_ids = iter(range(1, 10_000))


def origin(name: str, kind: str = "op") -> Origin:
    return Origin(str(next(_ids)), name, kind)


def const(array, name: str = "c", dtype: dtypes.DType | None = None) -> Value:
    return Constant.of(np.asarray(array), origin(name, "Const"), dtype).output


def op(cls: type[Node], *inputs: Value, name: str = "n", **fields) -> Value:
    return cls(origin=origin(name, cls.__name__), inputs=inputs, **fields).output


def model(*outputs: Value, params: tuple[Parameter, ...] = ()) -> Graph:
    results = [Result(origin=origin(f"out{k}", "Result"), inputs=(v,))
               for k, v in enumerate(outputs)]
    return Graph("g", params, results)


def folded_value(graph: Graph, index: int = 0) -> np.ndarray:
    node = graph.results[index].inputs[0].node
    assert isinstance(node, Constant), f"output {index} is {node!r}, not a Constant"
    return node.data


def test_constant_only_nodes_fold_to_their_reference_value() -> None:
    """Add(Const, Relu(Const)) folds completely; origin and tensor names are kept."""
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(2))
    relu = act.Relu(origin=origin("relu"), inputs=(const(b),), tensor_names=(("r",),))
    add = ew.Add(origin=origin("sum"), inputs=(const(a), relu.output), tensor_names=(("s",),))
    graph = fold_constants(model(add.output))
    node = graph.results[0].inputs[0].node
    assert isinstance(node, Constant)
    assert (node.origin, node.tensor_names) == (add.origin, (("s",),))
    np.testing.assert_array_equal(node.data, a + np.maximum(b, 0))
    assert [n.kind for n in graph.nodes] == ["Constant", "Result"]


def test_nodes_reading_a_parameter_stay_and_an_unchanged_graph_is_returned_as_is() -> None:
    x = Parameter(origin=origin("x", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(2, 3))
    scale = op(ew.Multiply, const(np.full((3,), 2, np.float32)), const(np.float32(1.5)))
    graph = model(op(ew.Add, x.output, scale), params=(x,))
    folded = fold_constants(graph)
    assert [n.kind for n in folded.nodes] == ["Parameter", "Constant", "Add", "Result"]
    np.testing.assert_array_equal(folded.nodes[1].data, np.full((3,), 3, np.float32))
    assert fold_constants(folded) is folded


def test_multi_output_nodes_fold_into_one_constant_per_output() -> None:
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    split = Split(origin=origin("split"), inputs=(const(data), const(np.int64(0))),
                  num_splits=2)
    graph = fold_constants(model(split.outputs[1], op(act.Relu, split.outputs[0])))
    np.testing.assert_array_equal(folded_value(graph, 0), data[2:])
    np.testing.assert_array_equal(folded_value(graph, 1), data[:2])
    assert not any(isinstance(n, Split) for n in graph.nodes)


# -- f16 weight decompression --------------------------------------------------------------


def asym_u8_chain(rng: np.random.Generator, rows: int = 8, cols: int = 64):
    """``Const(u8) -> Convert(f16) - Convert(f16)(zp u8) * Const(f16 scale) -> Convert(f32)``
    (NNCF INT8_ASYM); returns the f32 output value and the f32-math expectation."""
    q = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    zp = rng.integers(100, 156, (rows, 1), dtype=np.uint8)
    scale = rng.uniform(0.001, 0.05, (rows, 1)).astype(np.float16)
    weights = op(Convert, const(q, "q"), destination_type=dtypes.f16)
    zero = op(Convert, const(zp, "zp"), destination_type=dtypes.f16)
    centred = op(ew.Subtract, weights, zero)
    scaled = op(ew.Multiply, centred, const(scale, "scale"))
    out = op(Convert, scaled, destination_type=dtypes.f32)
    expected = (q.astype(np.float32) - zp.astype(np.float32)) * scale.astype(np.float32)
    return out, expected


def test_u8_asym_decompression_is_computed_in_f32_without_f16_rounding() -> None:
    """(q - zp) * scale in f32, as the OpenVINO CPU plugin does (facts 3.1, pitfall 12)."""
    out, expected = asym_u8_chain(np.random.default_rng(1))
    graph = model(out)
    folded = folded_value(fold_constants(graph))
    assert folded.dtype == np.float32
    np.testing.assert_array_equal(folded, expected)
    literal = reference.run(graph, [])[0]            # rounds the Multiply to f16
    assert np.abs(literal - expected).max() > 0, "the data should expose f16 rounding"


def test_literal_folding_rounds_each_f16_step_when_asked() -> None:
    out, _ = asym_u8_chain(np.random.default_rng(2))
    graph = model(out)
    literal = fold_constants(graph, FoldConstantsOptions(f32_decompression=False))
    np.testing.assert_array_equal(folded_value(literal), reference.run(graph, [])[0])


def test_grouped_i4_chain_with_reshape_is_computed_in_f32() -> None:
    """INT4_SYM group 16: ``Const(i4,[N,G,16]) -> Convert(f16) * scale[N,G,1] -> Reshape
    [N, G*16] -> Convert(f32)``."""
    rng = np.random.default_rng(3)
    q = rng.integers(-8, 8, (4, 2, 16), dtype=np.int8)
    scale = rng.uniform(0.01, 0.2, (4, 2, 1)).astype(np.float16)
    weights = op(Convert, const(q, "q", dtypes.i4), destination_type=dtypes.f16)
    scaled = op(ew.Multiply, weights, const(scale, "scale"))
    flat = op(Reshape, scaled, const(np.array([4, 32], np.int64)), special_zero=False)
    out = op(Convert, flat, destination_type=dtypes.f32)
    folded = folded_value(fold_constants(model(out)))
    expected = (q.astype(np.float32) * scale.astype(np.float32)).reshape(4, 32)
    np.testing.assert_array_equal(folded, expected)


def test_f16_arithmetic_that_stays_f16_is_rounded_like_the_reference() -> None:
    """Without the closing Convert(f32) the chain's f16 value is the model's value."""
    rng = np.random.default_rng(4)
    q = rng.integers(0, 256, (8, 16), dtype=np.uint8)
    scale = rng.uniform(0.001, 0.05, (8, 1)).astype(np.float16)
    scaled = op(ew.Multiply, op(Convert, const(q), destination_type=dtypes.f16),
                const(scale))
    graph = model(scaled)
    folded = folded_value(fold_constants(graph))
    assert folded.dtype == np.float16
    np.testing.assert_array_equal(folded, reference.run(graph, [])[0])


def test_f16_arithmetic_outside_a_decompression_chain_is_folded_literally() -> None:
    """Two f16 Constants multiplied and converted to f32: no chain start, so f16 rounding."""
    rng = np.random.default_rng(5)
    a, b = (rng.uniform(0.5, 2, (32,)).astype(np.float16) for _ in range(2))
    graph = model(op(Convert, op(ew.Multiply, const(a), const(b)),
                     destination_type=dtypes.f32))
    np.testing.assert_array_equal(folded_value(fold_constants(graph)),
                                  (a * b).astype(np.float32))


@pytest.mark.parametrize("source", [dtypes.f16, dtypes.i8, dtypes.u8, dtypes.u4])
def test_every_exact_source_type_starts_a_chain(source: dtypes.DType) -> None:
    rng = np.random.default_rng(6)
    low, high = (0, 16) if source == dtypes.u4 else (-100, 100) if source != dtypes.u8 else (
        0, 256)
    q = rng.integers(low, high, (8, 8)).astype(source.numpy)
    scale = rng.uniform(0.001, 0.05, (8, 1)).astype(np.float16)
    chain = op(Convert, op(ew.Multiply, op(Convert, const(q, dtype=source),
                                           destination_type=dtypes.f16), const(scale)),
               destination_type=dtypes.f32)
    expected = q.astype(np.float32) * scale.astype(np.float32)
    np.testing.assert_array_equal(folded_value(fold_constants(model(chain))), expected)


# -- size limit ----------------------------------------------------------------------------

def test_huge_broadcast_and_tile_of_constants_stay_unfolded_and_allocate_nothing() -> None:
    """A Broadcast of a 2x3 Const to [4096, 8192, 2, 3] (768 MiB) and a Tile of it by
    [4096, 4096] (384 MiB): past 16 MiB and 8x their inputs, so they stay in the graph
    for their lowerings; folding allocates nothing for them."""
    data = np.random.default_rng(7).normal(size=(2, 3)).astype(np.float32)
    wide = op(BroadcastV3, const(data), const(np.array([4096, 2, 3], np.int64)))
    tiled = op(Tile, const(data), const(np.array([4096, 4096], np.int64)))
    small = op(Tile, const(data), const(np.array([2, 2], np.int64)))
    graph = model(op(BroadcastV3, const(data), const(np.array([4096, 8192, 2, 3], np.int64))),
                  tiled, small, wide)
    tracemalloc.start()
    try:
        folded = fold_constants(graph)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    kinds = [r.inputs[0].node.kind for r in folded.results]
    assert kinds == ["BroadcastV3", "Tile", "Constant", "Constant"]
    np.testing.assert_array_equal(folded_value(folded, 2), np.tile(data, (2, 2)))
    np.testing.assert_array_equal(folded_value(folded, 3), np.broadcast_to(data, (4096, 2, 3)))


@pytest.mark.parametrize("rows, folds", [(1024, True), (1025, False)])
def test_the_limit_is_max_bytes_or_max_growth_times_the_inputs(rows: int, folds: bool) -> None:
    """With max_bytes = 16 KiB: a [rows, 4] f32 Broadcast of a 16-byte row (plus its 24-byte
    target) folds at exactly 16 KiB and not one row later."""
    row = np.random.default_rng(8).normal(size=(4,)).astype(np.float32)
    graph = model(op(BroadcastV3, const(row), const(np.array([rows, 4], np.int64))))
    folded = fold_constants(graph, FoldConstantsOptions(max_bytes=16 << 10))
    assert isinstance(folded.results[0].inputs[0].node, Constant) == folds
    assert (folded is graph) != folds


def test_decompression_chains_past_max_bytes_still_fold_in_f32() -> None:
    """Every step of a u8 chain grows at most 4x (Convert u8 -> f16 2x, f16 -> f32 2x), so
    with max_bytes = 1 KiB the whole 8x64 chain still folds, by the f32 rule."""
    out, expected = asym_u8_chain(np.random.default_rng(9))
    graph = fold_constants(model(out), FoldConstantsOptions(max_bytes=1 << 10))
    np.testing.assert_array_equal(folded_value(graph), expected)


def test_growth_counts_the_hidden_arrays_of_a_pool() -> None:
    """A MaxPool of a 1x1x4x4 Const with a 2^20-wide same_upper window has a 1x1x4x4 output,
    but its evaluator pads the input to 2^20 rows and builds a 2^22-tap window matrix: it
    is not folded; a 2x2 window is."""
    data = np.random.default_rng(10).normal(size=(1, 1, 4, 4)).astype(np.float32)

    def pool(kernel: tuple[int, int]) -> Value:
        return op(MaxPoolV1, const(data), kernel=kernel, strides=(1, 1),
                  auto_pad="same_upper")

    folded = fold_constants(model(pool((1 << 20, 1)), pool((2, 2))))
    assert [r.inputs[0].node.kind for r in folded.results] == ["MaxPoolV1", "Constant"]
