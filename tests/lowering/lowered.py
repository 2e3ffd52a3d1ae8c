"""Run a one-op OpenVINO model through ``lower_graph_to_loops`` on both executors.

``check_lowered`` saves the model as IR, reads it with lpjit, lowers it, runs the program with
the numba executor and with LLVM (one kernel at a time), and compares both with
``lpjit.reference.run`` (float: ``rtol``/``atol``; integer outputs: exactly) and with each
other (float: ``rtol=1e-5``, ``atol=1e-6``; the two executors run the same loop IR).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import openvino as ov
import oracle

import lpjit
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.program import Program
from lowering.program_exec import llvm_compiler, run_program
from lowering.target import Target
from lpjit import reference


@attrs.frozen(eq=False)
class Lowered:
    """A checked program and its outputs (from the LLVM path)."""

    program: Program
    outputs: list[np.ndarray]


def lower_model(model: ov.Model, tmp_path: Path, threads: int = 0,
                target: Target | None = None) -> tuple:
    """(graph, program) of ``model`` saved as IR and read back, lowered for ``target``
    (default: the host)."""
    graph = lpjit.read_ir(oracle.save(model, tmp_path))
    options = LoweringOptions(threads=threads, target=target or Target.host())
    return graph, lower_graph_to_loops(graph, options)


def assert_matches(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float,
                   what: str) -> None:
    assert actual.shape == expected.shape, what
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def check_lowered(model: ov.Model, tmp_path: Path, inputs: Sequence[np.ndarray] | None = None,
                  rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0,
                  threads: int = 0, target: Target | None = None,
                  numba: bool = True) -> Lowered:
    """Lower ``model`` and check both executors against the reference (``numba=False``: LLVM
    only, for kernels whose numba compile takes tens of seconds when a smaller case of the
    same test file already runs them on numba).  A ``target`` with narrower vectors than the
    host (AVX2's 8 lanes) still runs here."""
    graph, program = lower_model(model, tmp_path, threads, target)
    inputs = list(oracle.random_inputs(model, seed) if inputs is None else inputs)
    expected = reference.run(graph, inputs)
    by_llvm = run_program(program, inputs, llvm_compiler)
    by_numba = run_program(program, inputs) if numba else [None] * len(by_llvm)
    for index, (e, n, m) in enumerate(zip(expected, by_numba, by_llvm, strict=True)):
        e = np.asarray(e).astype(m.dtype)
        assert_matches(m, e, rtol, atol, f"output {index}: LLVM vs reference")
        if n is not None:
            assert_matches(n, e, rtol, atol, f"output {index}: numba vs reference")
            assert_matches(m, n, 1e-5, 1e-6, f"output {index}: LLVM vs numba")
    return Lowered(program, by_llvm)


AVX2 = Target("znver3", frozenset({"sse2", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c"}))
