"""The conv and matmul kernels compile to FMA register tiles: ``vfmadd...ps`` on ymm (AVX2)
or zmm (AVX-512) registers, with the accumulators kept in registers (no stack traffic)."""

from __future__ import annotations

import re

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1

import lpjit
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.target import Target
from runtime.jit import CPU_FEATURES, CPUCodegen, TargetSpec

pytestmark = pytest.mark.oracle

RNG = np.random.default_rng(5)
TARGETS = {"znver3": ("ymm", "zmm"), "znver4": ("zmm", None)}


def conv_model() -> ov.Model:
    x = opset1.parameter((1, 16, 14, 40), np.float32, name="x")
    w = opset1.constant(RNG.uniform(-1, 1, (24, 16, 3, 3)).astype(np.float32))
    return ov.Model([opset1.convolution(x, w, (1, 1), (1, 1), (1, 1), (1, 1))], [x])


def matmul_model() -> ov.Model:
    a = opset1.parameter((32, 64), np.float32, name="a")
    b = opset1.constant(RNG.uniform(-1, 1, (64, 96)).astype(np.float32))
    return ov.Model([opset1.matmul(a, b, False, False)], [a])


def assembly(model: ov.Model, tmp_path, cpu: str) -> str:
    graph = lpjit.read_ir(oracle.save(model, tmp_path))
    target = Target(cpu, CPU_FEATURES[cpu])
    program = lower_graph_to_loops(graph, LoweringOptions(target=target, threads=1))
    codegen = CPUCodegen(TargetSpec.for_cpu(cpu))
    return codegen.compile_kernels([s.kernel for s in program.steps]).assembly()


@pytest.mark.parametrize("cpu", TARGETS)
@pytest.mark.parametrize("build", [conv_model, matmul_model], ids=["conv", "matmul"])
def test_fma_register_tile(tmp_path, build, cpu):
    register, forbidden = TARGETS[cpu]
    text = assembly(build(), tmp_path, cpu)
    fmas = re.findall(r"vfmadd\d+ps\s+(\S+), (\S+), (%\w+)", text)
    on_register = [f for f in fmas if f[2].startswith(f"%{register}")]
    # The inner loop holds a full tile: 12 (AVX2) or 24 (AVX-512) accumulators.
    assert len(on_register) >= 12, text
    if forbidden:
        assert f"%{forbidden}" not in text
    # Accumulators and operands stay in registers: no spills to the stack.
    assert "(%rsp)" not in text
