"""Every elementwise emitter (``lowering.emitters``) through the generic lowering, on both
executors.

Each case is an OpenVINO model saved as IR, read by lpjit, lowered, and run by the numba
executor and by LLVM one kernel at a time.  Both must agree with each other bit for bit
(they run the same loop IR, and both call glibc's libm for the math functions), and with the
reference executor:

* bit for bit (NaN where the reference has NaN, signed zeros included) for arithmetic,
  comparisons, Convert, min/max/clamp-like activations, Sqrt, Floor, Ceiling, Abs, Erf
  (evaluated in float64 and rounded once, as the reference does), and FakeQuantize;
* within ``GELU_ERF_ULPS`` (or ``GELU_ERF_ATOL`` absolute) for Gelu's erf form, computed in
  float32 lanes by ``vector_math.gelu_erf`` (measured: 9.5 ulp of float64 Gelu);
* within ``ULPS`` units in the last place for Exp, Log, Tanh, Sigmoid, Swish, SoftPlus, Mish
  and float Power: the reference's numpy evaluates these with its own SIMD float32
  implementations, which differ from libm's correctly-rounded-in-practice results by up to
  2 ulp (measured); SoftPlus and Mish use ``max(x, 0) + log1p(exp(-|x|))`` with Kahan's
  ``log1p`` from ``log``, within 1-2 ulp of numpy's ``logaddexp``;
* within ``GELU_TANH_ATOL`` absolute for Gelu-7 ``tanh``: evaluated in float64 like the
  reference, but numpy's float64 ``tanh`` and ``x**3`` differ from libm's by an ulp of
  float64, which the cancellation in ``1 + tanh(z)`` for ``z << 0`` shows in float32 results
  below 1e-8 (measured: 48 ulp of a 1e-9 result).

Inputs mix random values with NaN, +-inf, +-0, denormals and values near the f32 limits;
shapes end in sizes that are not a multiple of 8 or 16 (vector tails) and broadcast scalars,
per-channel tensors and both operands.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset2, opset4, opset5, opset7

import lpjit
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.program import Program
from lowering.program_exec import llvm_compiler, numba_compiler, run_program
from lowering.target import Target
from lpjit import reference
from runtime.jit import CPU_FEATURES

# The reference evaluates NaN, inf and overflowing casts on purpose.
pytestmark = [pytest.mark.oracle, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

ULPS = 4
GELU_TANH_ATOL = 1e-13
GELU_ERF_ULPS = 10
GELU_ERF_ATOL = 1e-14
AVX2 = Target("znver3", CPU_FEATURES["znver3"])
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -3e-39, 88.5, -88.5, 1e30,
                    -1e30, 3.4e38, 0.5, -0.5, 2.5], np.float32)


# -- harness -----------------------------------------------------------------------------------

def parameter(shape: Sequence[int], dtype: type = np.float32, name: str = "x") -> ov.Node:
    return opset1.parameter(list(shape), dtype, name=name)


def const(values: object, dtype: type = np.float32) -> ov.Node:
    return opset1.constant(np.asarray(values, dtype))


def floats(shape: Sequence[int], rng: np.random.Generator, scale: float = 3.0,
           special: bool = True) -> np.ndarray:
    """Random float32 values with the special ones spread over the first elements."""
    values = (rng.standard_normal(shape) * scale).astype(np.float32)
    if special:
        flat = values.reshape(-1)
        flat[:len(SPECIAL)] = SPECIAL[:flat.size]
    return values


def integers(shape: Sequence[int], dtype: type, rng: np.random.Generator) -> np.ndarray:
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    flat = values.reshape(-1)
    flat[:4] = [info.min, info.max, 0, 1]
    return values


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Units in the last place between float32 arrays (0 where both are NaN)."""
    def ordered(x: np.ndarray) -> np.ndarray:
        i = x.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, np.abs(ordered(a) - ordered(b)))


def assert_same(actual: np.ndarray, expected: np.ndarray, ulps: int, what: str,
                atol: float = 0.0) -> None:
    """Bit for bit (any NaN matches any NaN), or within ``ulps`` (or ``atol``) for float32."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    if expected.dtype.kind != "f":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan, err_msg=f"{what}: NaN positions")
    if ulps or atol:
        far = ulp_distance(actual, expected) > ulps
        far &= ~(np.abs(actual.astype(np.float64) - expected) <= atol)
        assert not far.any(), (f"{what}: {actual[far][:4]} vs {expected[far][:4]}, "
                               f"{ulp_distance(actual, expected).max()} ulp")
        return
    width = f"u{expected.dtype.itemsize}"
    np.testing.assert_array_equal(np.where(nan, 0, actual.view(width)),
                                  np.where(nan, 0, expected.view(width)), err_msg=what)


def check(outputs: Sequence[ov.Node], parameters: Sequence[ov.Node], inputs: Sequence[np.ndarray],
          tmp_path, *, ulps: int | Sequence[int] = 0, atol: float = 0.0,
          steps: int | None = None, target: Target | None = None) -> Program:
    """Lower the model; each output must match the reference (``ulps`` per output, or
    ``atol``) on both executors, and the executors must match each other bit for bit."""
    model = ov.Model([opset1.result(o) for o in outputs], list(parameters), "elementwise")
    graph = lpjit.read_ir(oracle.save(model, tmp_path))
    program = lower_graph_to_loops(graph, LoweringOptions(target=target or Target.host()))
    if steps is not None:
        assert len(program.steps) == steps, [s.label for s in program.steps]
    tolerances = [ulps] * len(outputs) if isinstance(ulps, int) else list(ulps)
    expected = reference.run(graph, list(inputs))
    by_numba = run_program(program, list(inputs), numba_compiler)
    by_llvm = run_program(program, list(inputs), llvm_compiler)
    for i, (e, n, m, u) in enumerate(zip(expected, by_numba, by_llvm, tolerances, strict=True)):
        name = graph.results[i].inputs[0].node.kind
        assert_same(n, e, u, f"output {i} ({name}): numba vs reference", atol)
        assert_same(m, e, u, f"output {i} ({name}): LLVM vs reference", atol)
        assert_same(m, n, 0, f"output {i} ({name}): LLVM vs numba")
    return program


# -- arithmetic --------------------------------------------------------------------------------

def test_float_binary_ops_with_broadcasting(tmp_path):
    """Add (scalar), Subtract (per channel), Multiply (both sides broadcast), Divide,
    Maximum / Minimum (NaN from either side, -0 vs +0 as numpy), SquaredDifference."""
    rng = np.random.default_rng(1)
    x, y = parameter((2, 3, 37)), parameter((3, 1), name="y")
    z, w = parameter((2, 1, 37), name="z"), parameter((2, 3, 37), name="w")
    outputs = [opset1.add(x, const(1.25)), opset1.subtract(x, y), opset1.multiply(z, y),
               opset1.divide(x, w), opset1.maximum(x, w), opset1.minimum(w, x),
               opset1.squared_difference(x, z)]
    inputs = [floats((2, 3, 37), rng), floats((3, 1), rng, special=False),
              floats((2, 1, 37), rng), floats((2, 3, 37), rng)[:, :, ::-1].copy()]
    check(outputs, [x, y, z, w], inputs, tmp_path, steps=7)


def test_float_power(tmp_path):
    """libm ``pow`` (within ULPS of numpy); constant exponents 2 and 1 are exact."""
    rng = np.random.default_rng(2)
    x, y = parameter((2, 45)), parameter((45,), name="y")
    outputs = [opset1.power(x, y), opset1.power(x, const(2.0)), opset1.power(x, const([1.0]))]
    base = np.abs(floats((2, 45), rng))
    base[1, :15] = -floats((15,), rng, special=False)       # negative bases: NaN unless integral
    exponent = floats((45,), rng, special=False)
    exponent[:6] = [0.0, -0.0, 2.0, -1.0, 0.5, np.nan]
    check(outputs, [x, y], [base, exponent], tmp_path, ulps=[ULPS, 0, 0], steps=3)


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint8, np.int64])
def test_integer_arithmetic_wraps_and_divides_without_trapping(tmp_path, dtype):
    """Add/Subtract/Multiply/SquaredDifference wrap; Divide floors (python_division: a zero
    divisor gives 0 and MIN / -1 wraps, as numpy, instead of trapping) or truncates (the
    reference's float64 truncation is undefined for a zero divisor and inexact beyond 2^53:
    nonzero divisors, int64 dividends below 2^51); Maximum/Minimum; Power, small exponents."""
    rng = np.random.default_rng(3)
    x, y, e = parameter((2, 37), dtype), parameter((37,), dtype, "y"), parameter((37,), dtype, "e")
    x2, y2 = parameter((2, 37), dtype, "x2"), parameter((37,), dtype, "y2")
    trunc_div = opset1.divide(x2, y2)
    trunc_div.set_attribute("m_pythondiv", False)
    outputs = [opset1.divide(x, y), trunc_div, opset1.multiply(x, y), opset1.subtract(y, x),
               opset1.power(x, e)]
    if dtype == np.int32:
        outputs += [opset1.add(x, y), opset1.maximum(x, y), opset1.minimum(x, y),
                    opset1.squared_difference(x, y)]
    a, b = integers((2, 37), dtype, rng), integers((37,), dtype, rng)
    if np.iinfo(dtype).min < 0:
        b[4:6] = -1
    a2 = a >> 12 if dtype == np.int64 else a
    inputs = [a, b, rng.integers(0, 9, 37).astype(dtype), a2, np.where(b == 0, 3, b).astype(dtype)]
    check(outputs, [x, y, e, x2, y2], inputs, tmp_path, steps=len(outputs))


# -- comparisons, logic, Select ----------------------------------------------------------------

def test_comparisons_with_nan(tmp_path):
    """Float comparisons are ordered (NaN compares false) except NotEqual."""
    rng = np.random.default_rng(4)
    x, y = parameter((2, 37)), parameter((37,), name="y")
    outputs = [opset1.equal(x, y), opset1.not_equal(x, y), opset1.less(x, y),
               opset1.less_equal(x, y), opset1.greater(x, y), opset1.greater_equal(x, y)]
    a, b = floats((2, 37), rng), floats((37,), rng)
    a[1, 20:] = b[20:]
    check(outputs, [x, y], [a, b], tmp_path, steps=6)


def test_logical_ops_and_select_broadcast_three_ways(tmp_path):
    rng = np.random.default_rng(5)
    p, q = parameter((2, 19), np.bool_, "p"), parameter((19,), np.bool_, "q")
    then, other = parameter((3, 1, 19), np.int64, "t"), parameter((1,), np.int64, "o")
    outputs = [opset1.logical_and(p, q), opset1.logical_or(p, q),
               opset1.select(p, then, other), opset1.select(q, const(-0.0), const([1.5]))]
    inputs = [rng.integers(0, 2, (2, 19)).astype(bool), rng.integers(0, 2, 19).astype(bool),
              integers((3, 1, 19), np.int64, rng), np.array([-7], np.int64)]
    check(outputs, [p, q, then, other], inputs, tmp_path, steps=4)


# -- Convert -----------------------------------------------------------------------------------

TYPES = (np.float32, np.float16, np.int8, np.uint8, np.int32, np.int64, np.bool_)


def convert_inputs(dtype: type, rng: np.random.Generator) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, 45).astype(bool)
    if np.dtype(dtype).kind in "iu":
        return integers((45,), dtype, rng)
    values = floats((45,), rng, scale=300.0)
    values[15:27] = [255.7, 256.5, -128.9, -129.5, 3e9, -3e9, 1e19, -1e19, 9.3e18, 2**31,
                     65519.0, -65520.0]
    return values.astype(dtype)


@pytest.mark.parametrize("source", TYPES, ids=[np.dtype(t).name for t in TYPES])
def test_convert_to_every_type(tmp_path, source):
    """Float -> int truncates and wraps (NaN -> 0, beyond +-2^63 -> INT64_MIN's low bits, as
    the reference on x86); int -> int wraps or extends; -> boolean is ``!= 0``; f16 rounds
    to nearest even (65519 -> 65504, 65520 -> inf)."""
    rng = np.random.default_rng(6)
    x = parameter((45,), source)
    outputs = [opset1.convert(x, target) for target in TYPES]
    check(outputs, [x], [convert_inputs(source, rng)], tmp_path, steps=len(TYPES))


# -- activations -------------------------------------------------------------------------------

EXACT_ACTIVATIONS = {
    "relu": opset1.relu, "abs": opset1.abs, "negative": opset1.negative,
    "floor": opset1.floor, "ceiling": opset1.ceiling, "sqrt": opset1.sqrt, "erf": opset1.erf,
    "clamp": lambda x: opset1.clamp(x, -1.3, 2.7), "hswish": opset4.hswish,
    "hsigmoid": opset5.hsigmoid,
}
ROUNDED_ACTIVATIONS = {
    "sigmoid": opset1.sigmoid, "tanh": opset1.tanh, "exp": opset1.exp, "log": opset1.log,
    "swish": opset4.swish, "swish_beta": lambda x: opset4.swish(x, const(1.7)),
    "softplus": opset4.softplus, "mish": opset4.mish,
}


GELU_TANH = {"gelu7_tanh": lambda x: opset7.gelu(x, "tanh")}


@pytest.mark.parametrize("table, ulps, atol", [
    (EXACT_ACTIVATIONS, 0, 0.0), (ROUNDED_ACTIVATIONS, ULPS, 0.0), (GELU_TANH, 0, GELU_TANH_ATOL),
], ids=["exact", "libm", "gelu_tanh"])
def test_float_activations(tmp_path, table, ulps, atol):
    rng = np.random.default_rng(7)
    x = parameter((2, 45))
    outputs = [build(x) for build in table.values()]
    values = floats((2, 45), rng)
    values[1, :8] = [-9.0, -20.0, -90.0, 20.0, 1e-3, -1e-3, 16.0, -103.0]
    check(outputs, [x], [values], tmp_path, ulps=ulps, atol=atol, steps=len(outputs))


def test_gelu_erf_in_float32(tmp_path):
    """Gelu-2 and Gelu-7 ``erf``: float32 lanes (``vector_math.gelu_erf``), within
    ``GELU_ERF_ULPS`` of the reference's float64 result, or ``GELU_ERF_ATOL`` where the
    reference's ``1 + erf`` rounds to 0 (``x < -8.3``); -inf gives -0, not the reference's
    NaN (``-inf * 0``), so the input has -1e30 there instead."""
    rng = np.random.default_rng(17)
    x = parameter((2, 45))
    outputs = [opset2.gelu(x), opset7.gelu(x, "erf")]
    values = floats((2, 45), rng)
    values[values == -np.inf] = -1e30
    values[1, :8] = [-9.0, -20.0, -13.0, 20.0, 1e-3, -1e-3, -8.0, -5.5]
    check(outputs, [x], [values], tmp_path, ulps=GELU_ERF_ULPS, atol=GELU_ERF_ATOL, steps=2)


def test_prelu_slopes(tmp_path):
    """A per-channel slope ``[C]`` applies along axis 1 (not numpy's last axis), a scalar
    slope everywhere."""
    rng = np.random.default_rng(8)
    x = parameter((2, 3, 4, 3))
    outputs = [opset1.prelu(x, const([0.1, -0.5, 2.0])), opset1.prelu(x, const(0.25))]
    check(outputs, [x], [floats((2, 3, 4, 3), rng)], tmp_path, steps=2)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_integer_activations(tmp_path, dtype):
    """ReLU, Abs (|MIN| = MIN; the identity on unsigned), Negative (wraps), Clamp (bounds
    rounded inward and clipped to the type), Ceiling (the identity)."""
    rng = np.random.default_rng(9)
    x = parameter((2, 37), dtype)
    outputs = [opset1.relu(x), opset1.abs(x), opset1.negative(x),
               opset1.clamp(x, -100.5, 1e10), opset1.ceiling(x)]
    check(outputs, [x], [integers((2, 37), dtype, rng)], tmp_path, steps=5)


def test_f16_tensors_compute_in_f32_and_round_once(tmp_path):
    rng = np.random.default_rng(10)
    x, y = parameter((3, 21), np.float16), parameter((21,), np.float16, "y")
    outputs = [opset1.add(x, y), opset1.divide(x, y), opset1.sigmoid(x)]
    inputs = [floats((3, 21), rng).astype(np.float16), floats((21,), rng).astype(np.float16)]
    check(outputs, [x, y], inputs, tmp_path, ulps=[0, 0, ULPS], steps=3)


# -- FakeQuantize ------------------------------------------------------------------------------

def test_fake_quantize_levels_and_range_shapes(tmp_path):
    """Levels 256/255/16/2 with per-channel ranges broadcast differently per range input
    (``[1, C, 1, 1]``, ``[C, 1, 1]``, scalar, ``[1, 1, 1, W]``); NaN stays NaN, -inf gives
    the output low, +inf the output high."""
    rng = np.random.default_rng(11)
    x = parameter((2, 3, 2, 21))
    il = const(rng.uniform(-1.5, -0.5, (1, 3, 1, 1)))
    ih = const(rng.uniform(0.5, 1.5, (3, 1, 1)))
    ol, oh = const(-1.0), const(rng.uniform(0.5, 2.0, (1, 1, 1, 21)))
    outputs = [opset1.fake_quantize(x, il, ih, ol, oh, levels) for levels in (256, 255, 16, 2)]
    check(outputs, [x], [floats((2, 3, 2, 21), rng, scale=1.5)], tmp_path, steps=4)


def test_fake_quantize_degenerate_ranges(tmp_path):
    """``il > ih`` mirrors the bins, ``il == ih`` is a step function, ``ol > oh`` inverts
    the output; ranges from Parameters (computed, not constant)."""
    rng = np.random.default_rng(12)
    x = parameter((2, 3, 19))
    low, high = parameter((3, 1), name="low"), parameter((3, 1), name="high")
    outputs = [opset1.fake_quantize(x, high, low, const(-2.0), const(3.0), 256),
               opset1.fake_quantize(x, low, low, const(0.0), const(1.0), 256),
               opset1.fake_quantize(x, low, high, const(2.0), const(-3.0), 255)]
    inputs = [floats((2, 3, 19), rng, scale=1.5),
              np.array([[-1.0], [0.25], [-0.3]], np.float32),
              np.array([[1.0], [0.75], [0.9]], np.float32)]
    check(outputs, [x, low, high], inputs, tmp_path, steps=3)


def test_fake_quantize_rounds_ties_to_even(tmp_path):
    """Inputs exactly between two levels round half to even (no FMA, no reciprocal)."""
    x = parameter((64,))
    ties = ((np.arange(64, dtype=np.float32) + 0.5) / 15 * 2 - 1).astype(np.float32)
    outputs = [opset1.fake_quantize(x, const(-1.0), const(1.0), const(-1.0), const(1.0), 16)]
    check(outputs, [x], [ties], tmp_path, steps=1)


# -- fusion and vector tails -------------------------------------------------------------------

def chain(x: ov.Node, bias: ov.Node) -> ov.Node:
    """Add (per-channel bias) -> Relu -> Multiply -> FakeQuantize -> Convert(u8)."""
    y = opset1.multiply(opset1.relu(opset1.add(x, bias)), const(0.75))
    fq = opset1.fake_quantize(y, const(0.0), const(2.0), const(0.0), const(255.0), 256)
    return opset1.convert(fq, np.uint8)


@pytest.mark.parametrize("length, target", [(1, None), (7, None), (17, None), (33, None),
                                            (15, AVX2), (9, AVX2)])
def test_fused_chain_with_vector_tails(tmp_path, length, target):
    """Five ops in one kernel (one step) over lengths around the 8/16-lane vectors."""
    rng = np.random.default_rng(length)
    x, bias = parameter((2, 3, length)), parameter((3, 1), name="b")
    inputs = [floats((2, 3, length), rng, special=length > 15), floats((3, 1), rng, 0.5, False)]
    check([chain(x, bias)], [x, bias], inputs, tmp_path, steps=1, target=target)


def test_fused_chain_of_transcendentals(tmp_path):
    """Multiply -> Sigmoid -> Tanh -> Exp in one kernel, within 3 * ULPS of the reference."""
    rng = np.random.default_rng(13)
    x = parameter((3, 37))
    y = opset1.exp(opset1.tanh(opset1.sigmoid(opset1.multiply(x, const(0.5)))))
    check([y], [x], [floats((3, 37), rng)], tmp_path, ulps=3 * ULPS, steps=1)


def test_fused_integer_chain_with_division_and_power(tmp_path):
    """Integer Divide and Power fuse like any elementwise op: Multiply -> Divide (floor) ->
    Power (constant 2: ``x * x``) -> Maximum -> Convert(f32), one kernel."""
    rng = np.random.default_rng(14)
    x, d = parameter((3, 37), np.int32), parameter((37,), np.int32, "d")
    y = opset1.divide(opset1.multiply(x, const(3, np.int32)), d)
    y = opset1.maximum(opset1.power(y, const(2, np.int32)), const([-5], np.int32))
    inputs = [rng.integers(-1000, 1000, (3, 37)).astype(np.int32),
              rng.integers(-9, 9, 37).astype(np.int32)]
    check([opset1.convert(y, np.float32)], [x, d], inputs, tmp_path, steps=1)
