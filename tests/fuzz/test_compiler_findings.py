"""Regression tests for the compiler findings of the fuzzer: each once compiled to a wrong
result, a broken kernel (``VerificationError``), a hang, or a multi-GB allocation.

Each test rebuilds the fuzz case in its simplest form (a model saved by OpenVINO, edited where
OpenVINO would not write the value) and pins either the compiled result (equal to the
reference) or the ``LpjitError`` that now replaces the failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1

import lpjit
from lowering.builder import KernelBuilder
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.program_exec import llvm_compiler, numba_compiler, run_program
from lpjit import reference

pytestmark = pytest.mark.oracle


def compiled_equals_reference(xml: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``lpjit.compile`` on ``xml``, asserted bit for bit equal (NaN where NaN) to
    the reference executor's, shapes and dtypes included."""
    graph = lpjit.read_ir(xml)
    expected = reference.run(graph, inputs)
    actual = [np.asarray(a) for a in lpjit.compile(graph, threads=1)(*inputs)]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert (a.shape, a.dtype) == (e.shape, e.dtype)
        np.testing.assert_array_equal(a, e)
    return actual


# -- 1. scalar (0-d) constants and parameters --------------------------------------------------

def test_constant_buffer_keeps_a_0d_array_0d():
    """``KernelBuilder.constant`` once turned a 0-d array into shape [1]."""
    data = np.float32(1.25)
    buffer = KernelBuilder.constant("c", np.asarray(data))
    assert buffer.shape == () and buffer.data.shape == ()
    transposed = np.arange(6, dtype=np.int32).reshape(2, 3).T
    buffer = KernelBuilder.constant("t", transposed)
    assert buffer.shape == (3, 2) and buffer.data.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(buffer.data, transposed)


def test_scalar_constant_result_compiles(tmp_path):
    """Was: VerificationError "buffer 'c' has rank 1 but is indexed with 0 indices" in the
    Result's copy kernel."""
    x = opset1.parameter([2, 3], np.float32, name="x")
    c = opset1.constant(np.float32(-2.75), name="c")
    model = ov.Model([opset1.result(c), opset1.relu(x)], [x], "scalar_out")
    data = np.random.default_rng(11).uniform(-3, 3, (2, 3)).astype(np.float32)
    scalar, _ = compiled_equals_reference(oracle.save(model, tmp_path), [data])
    assert scalar.shape == () and scalar == np.float32(-2.75)


def test_scalar_constant_operand_of_elementwise_ops(tmp_path):
    """A 0-d constant broadcast against a [2, 5] tensor and against a 0-d Parameter, on both
    loop-IR executors and through ``lpjit.compile``."""
    rng = np.random.default_rng(12)
    x = opset1.parameter([2, 5], np.float32, name="x")
    s = opset1.parameter([], np.float32, name="s")
    c = opset1.constant(np.float32(0.625), name="c")
    outputs = [opset1.multiply(x, c, name="scaled"), opset1.subtract(c, s, name="minus"),
               opset1.add(opset1.multiply(s, c), x, name="both")]
    xml = oracle.save(ov.Model(outputs, [x, s], "scalar_operand"), tmp_path)
    inputs = [rng.uniform(-3, 3, (2, 5)).astype(np.float32), np.float32(rng.uniform(1, 2))]
    expected = compiled_equals_reference(xml, [np.asarray(a) for a in inputs])
    program = lower_graph_to_loops(lpjit.read_ir(xml), LoweringOptions())
    for compiler in (numba_compiler, llvm_compiler):
        for got, want in zip(run_program(program, inputs, compiler), expected):
            np.testing.assert_array_equal(got, want)


def test_0d_parameter_returned_and_computed(tmp_path):
    """A 0-d Parameter returned as is (a copy kernel) and squared."""
    s = opset1.parameter([], np.int32, name="s")
    model = ov.Model([opset1.result(s), opset1.multiply(s, s, name="square")], [s], "p0d")
    value = np.asarray(np.random.default_rng(13).integers(-1000, 1000), np.int32)
    same, square = compiled_equals_reference(oracle.save(model, tmp_path), [value])
    assert same.shape == () and square == value * value
