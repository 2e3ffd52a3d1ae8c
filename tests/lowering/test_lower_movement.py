"""Shape and data-movement lowerings (``lowering.ops.movement``) on both executors.

Each case is a small OpenVINO model saved as IR, read by lpjit, lowered, and run by the numba
executor and by LLVM one kernel at a time; both must equal the reference executor bit for bit
(data movement computes nothing).  The cases pin which ops become views (no step) and which
copy, strided views read by elementwise consumers, views returned as model outputs, every
Pad mode, Gather with computed and invalid indices, every element type, and vector tails
(sizes that are not a multiple of the 8 or 16 lanes, on the host and on an AVX2 target).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset3, opset7, opset8, opset12, opset15

import lpjit
from lowering.loop_ir import Buffer, Load, contiguous_strides, f32
from lowering.lower_graph import LoweringContext, LoweringOptions, lower_graph_to_loops
from lowering.ops import movement
from lowering.program import Program
from lowering.program_exec import llvm_compiler, numba_compiler, run_program
from lowering.target import Target
from lowering.traversal import walk
from lpjit import dtypes, reference
from lpjit.graph import Constant, Graph, Origin, Parameter, Result
from lpjit.ops.movement import Transpose
from lpjit.ops.nn import MatMul
from lpjit.ops.shape import ShapeOfV3
from runtime.jit import CPU_FEATURES

pytestmark = pytest.mark.oracle

AVX2 = Target("znver3", CPU_FEATURES["znver3"])


# -- harness -----------------------------------------------------------------------------------

def ints(values: object, dtype: type = np.int64) -> ov.Node:
    return opset1.constant(np.array(values, dtype))


def parameter(shape: Sequence[int], dtype: type = np.float32, name: str = "x") -> ov.Node:
    return opset1.parameter(list(shape), dtype, name=name)


def model_of(outputs: Sequence[ov.Node | ov.Output], parameters: Sequence[ov.Node]) -> ov.Model:
    return ov.Model([opset1.result(o) for o in outputs], list(parameters), "movement")


def random_array(shape: Sequence[int], dtype: type, rng: np.random.Generator) -> np.ndarray:
    """Fresh values over the whole range of ``dtype`` (never all zeros)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 4).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def bits(array: np.ndarray) -> np.ndarray:
    """The raw bytes of ``array`` as unsigned integers of its element size."""
    return np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")


def lower(model: ov.Model, tmp_path, target: Target | None = None) -> tuple[Graph, Program]:
    graph = lpjit.read_ir(oracle.save(model, tmp_path))
    return graph, lower_graph_to_loops(graph, LoweringOptions(target=target or Target.host()))


def check(model: ov.Model, tmp_path, inputs: Sequence[np.ndarray] | None = None, *,
          target: Target | None = None, steps: int | None = None, seed: int = 0) -> Program:
    """Lower ``model``; both executors must reproduce the reference's bits; ``steps`` pins
    the number of kernels (views add none)."""
    graph, program = lower(model, tmp_path, target)
    if steps is not None:
        assert len(program.steps) == steps, [s.label for s in program.steps]
    if inputs is None:
        rng = np.random.default_rng(seed)
        inputs = [random_array(p.output.shape, p.output.dtype.numpy, rng)
                  for p in graph.parameters]
    expected = reference.run(graph, list(inputs))
    for compiler in (numba_compiler, llvm_compiler):
        actual = run_program(program, list(inputs), compiler)
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            what = f"output {index} ({compiler.__name__})"
            assert a.dtype == e.dtype and a.shape == e.shape, what
            np.testing.assert_array_equal(bits(a), bits(e), err_msg=what)
    return program


def loaded_buffers(program: Program) -> list[Buffer]:
    return [n.buffer for s in program.steps for n in walk(s.kernel.body) if isinstance(n, Load)]


# -- strides -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, make, new_shape", [
    ((2, 3, 4), lambda a: a, (6, 4)),
    ((2, 3, 4), lambda a: a.transpose(1, 0, 2), (3, 8)),
    ((2, 3, 4), lambda a: a.transpose(1, 0, 2), (3, 2, 2, 2)),
    ((4, 6), lambda a: a[:, 1:5], (2, 2, 4)),
    ((4, 6), lambda a: a[:, 1:5], (16,)),
    ((4, 1, 6), lambda a: a[::2], (2, 6, 1)),
    ((5, 1), lambda a: a.transpose(), (5,)),
    ((3, 4), lambda a: a[:, ::2], (3, 1, 2)),
    ((3, 4), lambda a: a[:0], (0, 4)),
])
def test_reshape_strides_follow_numpy_no_copy_rule(shape, make, new_shape):
    """``reshape_strides`` finds strides exactly when numpy reshapes without copying, and
    those strides address the same elements."""
    base = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    view = make(base)
    strides = tuple(s // 8 for s in view.strides)
    got = movement.reshape_strides(view.shape, strides, new_shape)
    try:
        expected = view.view()
        expected.shape = new_shape
    except AttributeError:
        expected = None
    assert (got is None) == (expected is None)
    if got is not None:
        flat = base.reshape(-1)
        offset = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // 8
        picked = np.lib.stride_tricks.as_strided(flat[offset:], new_shape,
                                                 [s * 8 for s in got])
        np.testing.assert_array_equal(picked, view.reshape(new_shape))


def test_strided_views_go_only_to_consumers_that_read_strides(monkeypatch):
    """A non-contiguous view is given to elementwise consumers and Results, not to an op
    whose lowering has not declared ``reads_strided_inputs`` (here MatMul), unless it is
    contiguous."""
    x = Parameter(origin=Origin("1", "x", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(2, 3, 4))
    perm = Constant.of(np.array([1, 0, 2]), Origin("2", "perm", "Const"))
    t = Transpose(origin=Origin("3", "t", "Transpose"), inputs=(x.output, perm.output))
    mm = MatMul(origin=Origin("4", "mm", "MatMul"), inputs=(t.output, t.output),
                transpose_a=False, transpose_b=True)
    graph = Graph("g", [x], [Result(origin=Origin("5", "r", "Result"), inputs=(mm.output,))])
    ctx = LoweringContext(graph, LoweringOptions())
    source = Buffer("x", f32, (2, 3, 4), role="input")
    strided = source.view("t", (3, 2, 4), (4, 12, 1))
    dense = source.view("r", (6, 4))
    assert not movement.is_contiguous(strided) and movement.is_contiguous(dense)
    assert not movement._accepts(ctx, t.output, strided)
    assert movement._accepts(ctx, t.output, dense)
    monkeypatch.setattr(movement, "STRIDED_READERS", movement.STRIDED_READERS | {MatMul})
    assert movement._accepts(ctx, t.output, strided)
    assert not movement._accepts(ctx, t.output, source.view("u", (3, 2, 2), (4, 12, 2)))


# -- views -------------------------------------------------------------------------------------

def test_reshape_squeeze_unsqueeze_are_views_read_by_their_consumer(tmp_path):
    """Reshape -> Unsqueeze -> Squeeze-1 -> Squeeze-15 cost no kernel: the Add reads x."""
    x = parameter((2, 3, 1, 19))
    r = opset1.reshape(x, ints([6, 19]), special_zero=False)
    u = opset1.unsqueeze(r, ints([0, 2]))
    s = opset1.squeeze(u, ints([0]))
    s15 = opset15.squeeze(s)
    y = parameter((19,), name="y")
    program = check(model_of([opset1.add(s15, y)], [x, y]), tmp_path, steps=1)
    assert {b.root.name for b in loaded_buffers(program)} == {"x", "y"}


def test_views_parameters_and_constants_returned_as_outputs_are_copied(tmp_path):
    """A strided view, a contiguous view, a Parameter, a Constant and a value returned twice
    each get a copy step (``_bind_outputs``), reading through the view's strides."""
    x = parameter((2, 3, 17))
    part = opset1.split(x, ints(1), 3).output(1)    # strided view, its consumer a Result
    r = opset1.reshape(x, ints([6, 17]), special_zero=False)
    c = opset1.constant(np.arange(6, dtype=np.float32).reshape(2, 3))
    relu = opset1.relu(x)
    program = check(model_of([part, r, x, c, relu, relu], [x]), tmp_path, steps=6)
    assert any(not movement.is_contiguous(b) for b in loaded_buffers(program))


def test_shape_of_is_a_constant(tmp_path):
    """ShapeOf (normally folded by the reader) lowers to a constant buffer."""
    x = Parameter(origin=Origin("1", "x", "Parameter"), inputs=(), element_type=dtypes.f16,
                  shape=(2, 5, 3))
    shape = ShapeOfV3(origin=Origin("2", "s", "ShapeOf"), inputs=(x.output,),
                      output_type=dtypes.i32)
    graph = Graph("g", [x], [Result(origin=Origin("3", "r", "Result"), inputs=(shape.output,))])
    program = lower_graph_to_loops(graph)
    data = np.ones((2, 5, 3), np.float16)
    for compiler in (numba_compiler, llvm_compiler):
        (out,) = run_program(program, [data], compiler)
        assert out.dtype == np.int32 and out.tolist() == [2, 5, 3]


# -- Transpose, DepthToSpace, ShuffleChannels ---------------------------------------------------

def test_transpose_keeping_the_last_axis_is_a_strided_view(tmp_path):
    """Attention-head transposes (0, 2, 1, 3) are strided views: Add and Multiply (two
    consumers, so nothing fuses into the Transpose) read x through them, their vector loads
    dense along the last axis."""
    x, y = parameter((2, 3, 4, 17)), parameter((2, 4, 3, 17), name="y")
    t = opset1.transpose(x, ints([0, 2, 1, 3]))
    outputs = [opset1.add(t, y), opset1.multiply(t, y)]
    program = check(model_of(outputs, [x, y]), tmp_path, steps=2)
    views = {(b.shape, b.strides) for b in loaded_buffers(program) if b.root.name == "x"}
    assert views == {((2, 4, 3, 17), (204, 17, 68, 1))}


def test_transpose_followed_by_an_elementwise_op_copies_with_it_fused(tmp_path):
    """With one elementwise consumer the op fuses into the Transpose's copy loop."""
    x = parameter((2, 3, 4, 17))
    t = opset1.transpose(x, ints([0, 2, 1, 3]))
    program = check(model_of([opset1.relu(t)], [x]), tmp_path, steps=1)
    (step,) = program.steps
    assert step.label.startswith("Transpose") and " + Relu" in step.label


@pytest.mark.parametrize("shape, order, dtype, chain", [
    ((3, 5, 19), [2, 0, 1], np.float16, False),
    ((2, 3, 4, 33), [0, 3, 1, 2], np.float32, True),
    ((4, 7), [], np.int8, False),
])
def test_transpose_moving_the_last_axis_copies(tmp_path, shape, order, dtype, chain):
    """A copy over the output, vectorized along its last axis (with a scalar tail); an
    elementwise op after it runs in the same loop; an empty permutation reverses."""
    x = parameter(shape, dtype)
    permutation = ints(order) if order else ov.op.Constant(ov.Type.i64, ov.Shape([0]), [])
    t = opset1.transpose(x, permutation)
    out = opset1.relu(t) if chain else t
    check(model_of([out], [x]), tmp_path, steps=1)


def test_reshape_of_a_strided_view_that_strides_cannot_show_is_copied(tmp_path):
    """Transpose (view) -> Reshape merging the permuted axes: materialized, then added."""
    x, y = parameter((2, 3, 5)), parameter((3, 10), name="y")
    t = opset1.transpose(x, ints([1, 0, 2]))
    r = opset1.reshape(t, ints([3, 10]), special_zero=False)
    program = check(model_of([opset1.add(r, y)], [x, y]), tmp_path, steps=2)
    assert [s.label.split("_")[0] for s in program.steps] == ["Reshape", "Add"]


@pytest.mark.parametrize("shape, mode, block", [
    ((2, 8, 3, 5), "blocks_first", 2),
    ((1, 18, 2, 3), "depth_first", 3),
    ((1, 16, 2, 3, 2), "blocks_first", 2),
])
def test_depth_to_space(tmp_path, shape, mode, block):
    x = parameter(shape, np.uint8 if mode == "depth_first" else np.float32)
    check(model_of([opset1.depth_to_space(x, mode, block)], [x]), tmp_path, steps=1)


@pytest.mark.parametrize("axis, group", [(1, 4), (-1, 5)])
def test_shuffle_channels(tmp_path, axis, group):
    x = parameter((2, 8, 3, 5), np.int32)
    check(model_of([opset3.shuffle_channels(x, axis, group)], [x]), tmp_path, steps=1)


# -- Concat, Split -----------------------------------------------------------------------------

def test_concat_with_a_constant_input_and_a_fused_chain(tmp_path):
    """Each input stored at its offset along the axis; a constant input and an empty one;
    the Multiply after it fused (one kernel)."""
    a, b = parameter((2, 3, 19), name="a"), parameter((2, 1, 19), name="b")
    empty = parameter((2, 0, 19), name="empty")
    c = opset1.constant(np.arange(76, dtype=np.float32).reshape(2, 2, 19))
    joined = opset1.concat([a, empty, b, c], 1)
    check(model_of([opset1.multiply(joined, ints(3.0, np.float32))], [a, empty, b]),
          tmp_path, steps=1)


@pytest.mark.parametrize("dtype", [np.bool_, np.int64])
def test_concat_along_the_last_axis(tmp_path, dtype):
    a, b = parameter((3, 17), dtype, "a"), parameter((3, 5), dtype, "b")
    check(model_of([opset1.concat([a, b, a], -1)], [a, b]), tmp_path, steps=1)


def test_split_parts_are_views(tmp_path):
    """Split along axis 1: strided views read by Add and by the output copy; along axis 0:
    contiguous views."""
    x = parameter((2, 6, 20))
    s = opset1.split(x, ints(1), 3)
    first = opset1.split(x, ints(0), 2)
    program = check(model_of([opset1.add(s.output(0), s.output(1)), s.output(2),
                              opset1.relu(first.output(1))], [x]), tmp_path, steps=3)
    offsets = {b.root_offset for b in loaded_buffers(program) if b.root.name == "x"}
    assert offsets == {0, 40, 80, 120}


def test_variadic_split_with_inferred_and_empty_parts(tmp_path):
    x = parameter((2, 3, 21), np.float16)
    parts = opset1.variadic_split(x, ints(-1), ints([4, -1, 0]))
    check(model_of([parts.output(0), opset1.negative(parts.output(1)), parts.output(2)], [x]),
          tmp_path, steps=3)


# -- StridedSlice, Slice -----------------------------------------------------------------------

def strided_slice(x: ov.Node, begin, end, strides, **masks) -> ov.Node:
    n = len(begin)
    masks = {k: masks.get(k, [0] * n) for k in ("begin_mask", "end_mask", "new_axis_mask",
                                                 "shrink_axis_mask", "ellipsis_mask")}
    return opset1.strided_slice(x, ints(begin), ints(end), ints(strides), **masks)


def test_strided_slices_with_positive_steps_are_views(tmp_path):
    """Steps, begin/end masks, new and shrunk axes, an ellipsis: views, each read by an Add
    (``s + s``: two consumers, so the Add does not fuse into a copy)."""
    x = parameter((4, 6, 19))
    slices = [
        strided_slice(x, [1, 0, 2], [3, 6, 17], [1, 2, 1]),
        strided_slice(x, [0, 1, 0, 0], [0, 2, 0, 0], [1, 1, 1, 1], begin_mask=[1, 0, 0, 1],
                      end_mask=[1, 0, 0, 1], new_axis_mask=[0, 0, 1, 0],
                      shrink_axis_mask=[0, 1, 0, 0]),
        strided_slice(x, [2, 0], [3, 0], [1, 1], begin_mask=[0, 1], end_mask=[0, 1],
                      ellipsis_mask=[0, 1]),
    ]
    program = check(model_of([opset1.add(s, s) for s in slices], [x]), tmp_path, steps=3)
    assert all(s.label.startswith("Add") for s in program.steps)


def test_slices_with_negative_steps_copy(tmp_path):
    """Negative steps read ``start + step * i``: StridedSlice with masks and Slice-8 with
    axes (the Slice has a fused Relu)."""
    x = parameter((4, 6, 19), np.int32)
    reverse = strided_slice(x, [0, 5, 0], [4, 0, 0], [1, -2, -3], begin_mask=[1, 0, 1],
                            end_mask=[0, 1, 1])
    sliced = opset8.slice(x, ints([-1, 1]), ints([-5, 100]), ints([-1, 3]), ints([0, 2]))
    check(model_of([reverse, opset1.relu(sliced)], [x]), tmp_path, steps=2)


# -- Gather ------------------------------------------------------------------------------------

def test_gather_with_computed_and_invalid_indices(tmp_path):
    """Indices from a Parameter: out-of-range ones give 0; Gather-1 treats negative ones as
    invalid, Gather-8 counts them from the end; one Gather along the last axis (the vector
    loop runs over the indices)."""
    data, index = parameter((3, 5, 7)), parameter((2, 4), np.int32, "i")
    outputs = [opset1.gather(data, index, ints(1)), opset8.gather(data, index, ints(-1))]
    rng = np.random.default_rng(1)
    inputs = [random_array((3, 5, 7), np.float32, rng),
              rng.integers(-8, 9, (2, 4)).astype(np.int32)]
    check(model_of(outputs, [data, index]), tmp_path, inputs, steps=2)


def test_gather_with_batch_dims(tmp_path):
    data, index = parameter((2, 3, 9), np.int64), parameter((2, 5), np.int64, "i")
    rng = np.random.default_rng(2)
    inputs = [random_array((2, 3, 9), np.int64, rng), rng.integers(-10, 10, (2, 5))]
    check(model_of([opset7.gather(data, index, ints(2), 1)], [data, index]), tmp_path,
          inputs, steps=1)


def test_gather_with_constant_indices(tmp_path):
    """Evenly stepping valid constant indices (a scalar, a progression) are views, read by
    ``g + g``; others (unsorted, negative in Gather-8) copy."""
    data = parameter((3, 5, 18), np.uint8)
    views = [opset8.gather(data, ints(2), ints(1)),
             opset8.gather(data, ints([[1, 2], [3, 4]]), ints(2))]
    outputs = [opset1.add(g, g) for g in views] + [
        opset8.gather(data, ints([4, 1, -1]), ints(1)),
        opset1.gather(data, ints([0, 0, 2]), ints(0))]
    program = check(model_of(outputs, [data]), tmp_path, steps=4)
    assert sorted(s.label.split("_")[0] for s in program.steps) == ["Add", "Add", "Gather",
                                                                     "Gather"]


# -- Broadcast, Tile ---------------------------------------------------------------------------

def test_broadcast_modes(tmp_path):
    x, y = parameter((3, 1, 5), np.int8), parameter((3,), np.int8, "y")
    outputs = [opset3.broadcast(x, ints([2, 3, 4, 5])),
               opset3.broadcast(x, ints([2, 1, 1, 1]), broadcast_spec="bidirectional"),
               opset1.broadcast(y, ints([2, 3, 17]), ints([1]), "explicit")]
    check(model_of(outputs, [x, y]), tmp_path, steps=3)


def test_tile(tmp_path):
    """Repeated axes run as (repeat, data) loop pairs; repeats longer than the rank."""
    x = parameter((3, 1, 5), np.float16)
    outputs = [opset1.tile(x, ints([2, 3, 1, 4])), opset1.relu(opset1.tile(x, ints([2])))]
    check(model_of(outputs, [x]), tmp_path, steps=2)


# -- Pad ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, version", [("constant", 12), ("edge", 1), ("reflect", 12),
                                           ("symmetric", 1)])
def test_pad_modes_with_negative_pads(tmp_path, mode, version):
    """Positive and negative (cropping) pads on every axis; the padding mirrors the
    uncropped input."""
    x = parameter((2, 3, 5, 19), np.float32 if mode != "edge" else np.int64)
    pad = opset12.pad if version == 12 else opset1.pad
    begin, end = ([0, 2, -1, 3], [1, -1, 3, -2]) if version == 12 else ([1, 0, 2, 18], [0, 2, -1, 4])
    check(model_of([pad(x, ints(begin), ints(end), mode)], [x]), tmp_path, steps=1)


def test_pad_value_from_a_parameter_with_a_fused_chain(tmp_path):
    """Constant mode with a computed scalar pad value, then Relu in the same kernel."""
    x, value = parameter((2, 3, 19)), parameter((), name="v")
    padded = opset12.pad(x, ints([0, 1, 16]), ints([1, 0, 2]), "constant", value)
    check(model_of([opset1.relu(padded)], [x, value]), tmp_path, steps=1)


# -- targets -----------------------------------------------------------------------------------

def test_copies_for_an_avx2_target(tmp_path):
    """8-lane vectors: Transpose, Concat and Pad with tails of 7 on an AVX2 target."""
    x = parameter((3, 4, 15), np.int32)
    outputs = [opset1.transpose(x, ints([1, 2, 0])), opset1.concat([x, x], 2),
               opset12.pad(x, ints([0, 1, 9]), ints([0, 0, 7]), "reflect")]
    program = check(model_of(outputs, [x]), tmp_path, target=AVX2, steps=3)
    assert all(b.strides == contiguous_strides(b.shape) for b in program.outputs)
