"""The conv and matmul kernels compile to FMA register tiles: ``vfmadd...ps`` on ymm (AVX2)
or zmm (AVX-512) registers, with the accumulators kept in registers (no vector spills)."""

from __future__ import annotations

import re

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1

import lpjit
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.ops.nn_schedules import conv_schedules
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


@pytest.fixture(params=["width", "channels"])
def vectorize(request, monkeypatch) -> str:
    """Force one of the two direct-conv schedules."""
    import lowering.ops.nn as nn_lowering

    def forced(*args):
        return conv_schedules(*args)[request.param][0]

    monkeypatch.setattr(nn_lowering, "default_conv_schedule", forced)
    return request.param


def assembly(model: ov.Model, tmp_path, cpu: str) -> str:
    graph = lpjit.read_ir(oracle.save(model, tmp_path))
    target = Target(cpu, CPU_FEATURES[cpu])
    program = lower_graph_to_loops(graph, LoweringOptions(target=target, threads=1))
    codegen = CPUCodegen(TargetSpec.for_cpu(cpu))
    return codegen.compile_kernels([s.kernel for s in program.steps]).assembly()


def hottest_block(text: str) -> list[str]:
    """The basic block (from a label or a jump to the next) with the most ``vfmadd``s."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith("\t"):
            blocks.append([])
        blocks[-1].append(line)
        if line.startswith("\tj"):
            blocks.append([])
    return max(blocks, key=lambda block: sum("vfmadd" in line for line in block))


def check_fma_tile(text: str, cpu: str) -> None:
    """The inner loop is a register tile: >= 12 FMAs on the target's vector registers, no
    stack access; no wider registers anywhere."""
    register, forbidden = TARGETS[cpu]
    loop = "\n".join(hottest_block(text))
    fmas = re.findall(r"vfmadd\d+ps\s+(\S+), (\S+), (%\w+)", loop)
    assert len([f for f in fmas if f[2].startswith(f"%{register}")]) >= 12, loop
    assert "(%rsp)" not in loop, loop
    if forbidden:
        assert f"%{forbidden}" not in text


@pytest.mark.parametrize("cpu", TARGETS)
def test_conv_fma_register_tile(tmp_path, cpu, vectorize):
    check_fma_tile(assembly(conv_model(), tmp_path, cpu), cpu)


@pytest.mark.parametrize("cpu", TARGETS)
def test_matmul_fma_register_tile(tmp_path, cpu):
    check_fma_tile(assembly(matmul_model(), tmp_path, cpu), cpu)
