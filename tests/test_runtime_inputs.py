"""Runtime inputs of a ``CompiledModel``: every misfit raises ``InputError`` naming the input
and what was expected; every array layout that holds the right values works (strided,
reversed, Fortran-order, misaligned arrays are copied); NaN and +-inf through FakeQuantize
follow the reference semantics in float mode and the documented rule in integer mode."""

from __future__ import annotations

import re

import lowp_graphs as lg
import numpy as np
import pytest

import lpjit
from lpjit import dtypes, reference
from lpjit.errors import InputError
from lpjit.graph import Graph
from lpjit.ops import activations as act
from lpjit.ops import elementwise as ew
from lpjit.ops.core import Convert

EXPECTED = "x: float32[2,3,8], y: int32[3,1]"


def two_inputs() -> Graph:
    """``relu(x * convert(y)) - x`` with x f32[2,3,8] and y i32[3,1]."""
    x = lg.parameter((2, 3, 8), "x")
    y = lg.parameter((3, 1), "y", dtypes.i32)
    wide = Convert(origin=lg.origin("to_f32", "Convert"), inputs=(y.output,),
                   destination_type=dtypes.f32).output
    scaled = ew.Multiply(origin=lg.origin("mul", "Multiply"), inputs=(x.output, wide)).output
    relu = act.Relu(origin=lg.origin("relu", "ReLU"), inputs=(scaled,)).output
    out = ew.Subtract(origin=lg.origin("out", "Subtract"), inputs=(relu, x.output)).output
    return lg.graph([x, y], out)


@pytest.fixture(scope="module")
def model() -> lpjit.CompiledModel:
    return lpjit.compile(two_inputs(), threads=1, cache=False)


def inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-2, 2, (2, 3, 8)).astype(np.float32),
            rng.integers(-3, 4, (3, 1)).astype(np.int32))


def expected_output(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return reference.run(two_inputs(), [np.ascontiguousarray(x), np.ascontiguousarray(y)])[0]


def raises(message: str):
    return pytest.raises(InputError, match=f"^{re.escape(message)}$")


# -- missing, extra, unknown, duplicated -----------------------------------------------------

def test_missing_inputs_are_named_with_every_expected_input(model) -> None:
    x, y = inputs()
    with raises(f"missing input 'y'; expected {EXPECTED}"):
        model(x)
    with raises(f"missing input 'x'; expected {EXPECTED}"):
        model(y=y)
    with raises(f"missing inputs 'x', 'y'; expected {EXPECTED}"):
        model()


def test_extra_unknown_and_duplicated_inputs_are_refused(model) -> None:
    x, y = inputs()
    with raises(f"got 3 positional inputs; the model has 2: {EXPECTED}"):
        model(x, y, x)
    with raises(f"unknown input 'z'; expected {EXPECTED}"):
        model(x=x, y=y, z=x)
    with raises(f"unknown input 'w'; expected {EXPECTED}"):
        model({"x": x, "y": y, "w": y})
    with raises("input 'x' is given twice"):
        model(x, x=x)


# -- shapes and dtypes ---------------------------------------------------------------------------

def test_wrong_shapes_name_the_input_and_its_shape_and_dtype(model) -> None:
    x, y = inputs()
    with raises("input 'x' has shape (2, 3, 7); expected float32[2,3,8]"):
        model(x[..., :7], y)
    with raises("input 'y' has shape (3,); expected int32[3,1]"):
        model(x, y[:, 0])
    with raises("input 'x' has shape (); expected float32[2,3,8]"):
        model(np.float32(1.0), y)
    with raises("input 'y' has shape (1, 3, 1); expected int32[3,1]"):
        model(x, y[None])


def test_lossy_dtypes_are_refused_with_the_expected_dtype(model) -> None:
    x, y = inputs()
    with raises("input 'x' has dtype float64, which does not convert to float32 without loss; "
                "expected float32[2,3,8] (convert it with .astype(np.float32) if the loss is "
                "intended)"):
        model(x.astype(np.float64), y)
    with raises("input 'y' has dtype int64, which does not convert to int32 without loss; "
                "expected int32[3,1] (convert it with .astype(np.int32) if the loss is "
                "intended)"):
        model(x, y.astype(np.int64))
    with raises("input 'y' has dtype float32, which does not convert to int32 without loss; "
                "expected int32[3,1] (convert it with .astype(np.int32) if the loss is "
                "intended)"):
        model(x, y.astype(np.float32))


def test_values_that_are_not_numeric_arrays_are_refused(model) -> None:
    x, y = inputs()
    with raises("input 'x' has dtype object, which does not convert to float32 without loss; "
                "expected float32[2,3,8] (convert it with .astype(np.float32) if the loss is "
                "intended)"):
        model(None, y)
    with pytest.raises(InputError, match=r"^input 'y' is not an array \(.*inhomogeneous.*\); "
                                         r"expected int32\[3,1\]$"):
        model(x, [[1], [2, 3], [4]])
    with pytest.raises(InputError, match=r"^input 'x' has dtype <U5, which does not convert "):
        model("hello", y)


def test_lossless_dtypes_and_byte_orders_are_converted(model) -> None:
    x, y = inputs(1)
    expected = expected_output(x, y)
    for xx, yy in [(x.astype(np.float16), y.astype(np.int16)),
                   (x.astype(">f4"), y.astype(">i4")),
                   (x, y.astype(np.uint8) if (y >= 0).all() else y.astype(np.int8))]:
        want = expected if xx.dtype != np.float16 else expected_output(
            xx.astype(np.float32), yy)
        np.testing.assert_array_equal(model(xx, yy)[0], want)


# -- layouts -------------------------------------------------------------------------------------

def misaligned(array: np.ndarray, offset: int = 1) -> np.ndarray:
    """A copy of ``array`` whose data starts ``offset`` bytes past a 64-byte boundary."""
    raw = np.zeros(array.nbytes + 64 + offset, np.uint8)
    start = -raw.ctypes.data % 64 + offset
    view = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    view[...] = array
    return view


def layouts(x: np.ndarray) -> dict[str, np.ndarray]:
    """``x``'s values in arrays of every layout the caller may hand in."""
    reversed_ = np.ascontiguousarray(x[..., ::-1])[..., ::-1]
    wide = np.zeros((2, 3, 16), x.dtype)
    wide[..., ::2] = x
    read_only = x.copy()
    read_only.flags.writeable = False
    return {"fortran": np.asfortranarray(x), "reversed": reversed_, "strided": wide[..., ::2],
            "transposed": np.ascontiguousarray(x.T).T, "misaligned by 1 byte": misaligned(x),
            "misaligned by 3 bytes": misaligned(x, 3), "4-byte aligned": misaligned(x, 4),
            "read-only": read_only}


def test_every_layout_gives_the_contiguous_result(model, monkeypatch) -> None:
    """Strided, reversed, Fortran-order and misaligned arrays are copied before the native
    call (which sees only C-contiguous, element-aligned arrays); results are identical."""
    x, y = inputs(2)
    expected = model(x, y)[0]
    seen: list[np.ndarray] = []
    run = model.executable.run
    monkeypatch.setattr(model.executable, "run", lambda arrays: seen.extend(arrays) or
                        run(arrays))
    for name, xx in layouts(x).items():
        for yy in (y, misaligned(y, 1), np.asfortranarray(np.repeat(y, 2, axis=1))[:, :1]):
            assert np.array_equal(xx, x) and np.array_equal(yy, y)
            np.testing.assert_array_equal(model(xx, yy)[0], expected, err_msg=name)
    assert seen and all(a.flags.c_contiguous and a.flags.aligned for a in seen)
    assert not misaligned(x).flags.aligned


def test_the_executable_copies_misaligned_arrays_it_is_given_directly(model) -> None:
    x, y = inputs(3)
    expected = model(x, y)[0]
    np.testing.assert_array_equal(model.executable.run([misaligned(x), misaligned(y, 2)])[0],
                                  expected)


# -- NaN and infinities through FakeQuantize -------------------------------------------------

IL, IH = -1.0, 2.0


def fq_conv() -> Graph:
    """``FakeQuantize(x; il=-1, ih=2, 256 levels) -> Convolution`` (quantizable), both
    outputs (the FakeQuantize's and the convolution's)."""
    rng = np.random.default_rng(11)
    x = lg.parameter((1, 2, 5, 5))
    fq = lg.fake_quantize(x.output, IL, IH, name="fq_in")
    conv = lg.conv(fq, lg.fq_weights(rng.standard_normal((3, 2, 3, 3))))
    return lg.graph([x], fq, conv)


def special_input() -> np.ndarray:
    x = np.random.default_rng(12).uniform(-2, 3, (1, 2, 5, 5)).astype(np.float32)
    x[0, 0, 1, 1], x[0, 0, 3, 2], x[0, 1, 3, 3] = np.nan, np.inf, -np.inf
    return x


def test_float_mode_fake_quantize_follows_the_reference_on_nan_and_infinities() -> None:
    """low_precision=False: NaN stays NaN (and spreads through the convolution window),
    +inf -> output_high, -inf -> output_low, exactly as ``lpjit.reference``."""
    graph, x = fq_conv(), special_input()
    fq, conv = lpjit.compile(graph, threads=1, low_precision=False, cache=False)(x)
    ref_fq, ref_conv = reference.run(graph, [x])
    np.testing.assert_array_equal(fq, ref_fq)                 # NaN positions compare equal
    assert np.isnan(fq[0, 0, 1, 1]) and fq[0, 0, 3, 2] == IH and fq[0, 1, 3, 3] == IL
    assert np.array_equal(np.isnan(conv), np.isnan(ref_conv)) and np.isnan(conv).sum() == 27
    np.testing.assert_allclose(conv, ref_conv, rtol=1e-5, atol=1e-5)


def test_integer_mode_quantizes_nan_to_output_low() -> None:
    """low_precision=True: the FakeQuantize becomes Quantize (u8 level index) -> QConvolution;
    a NaN input gets level 0, i.e. output_low (documented in the README); +-inf get the top
    and bottom levels as in float mode.  So the outputs equal the reference run on the input
    with NaN replaced by input_low."""
    graph, x = fq_conv(), special_input()
    model = lpjit.compile(graph, threads=1, cache=False)
    assert "QConvolution" in {layer.kind for layer in model.precision_report().layers}
    fq, conv = model(x)
    assert not np.isnan(fq).any() and not np.isnan(conv).any()
    assert fq[0, 0, 1, 1] == IL and fq[0, 0, 3, 2] == IH and fq[0, 1, 3, 3] == IL
    replaced = np.where(np.isnan(x), np.float32(IL), x)
    ref_fq, ref_conv = reference.run(graph, [replaced])
    np.testing.assert_array_equal(fq, ref_fq)
    np.testing.assert_allclose(conv, ref_conv, rtol=1e-5, atol=1e-5)
