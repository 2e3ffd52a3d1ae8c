"""The integer conv and matmul kernels compile to the intended dot instructions.

* VNNI (``znver4``): ``vpdpbusd`` on ymm/zmm registers; the tile loop keeps its accumulators
  in registers (no stack access between its first and last ``vpdpbusd``).
* AVX2 without VNNI (``znver3``; on znver4 LLVM may fuse ``vpmaddwd`` + ``vpaddd`` into
  ``vpdpwssd``, so the check uses znver3): exact ``vpmaddwd`` on ymm, and no ``vpmaddubsw``
  for weights that could saturate it; ``vpmaddubsw`` where the compiler proved it safe.
* Depthwise: the same dot steps over kernel-width taps; multiply-adds of widened values
  without AVX2.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from lowp_graphs import const, graph, origin, parameter

from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.target import Target
from lpjit import dtypes
from lpjit.graph import Graph
from lpjit.ops import lowp
from runtime.jit import CPU_FEATURES, CPUCodegen, TargetSpec

RNG = np.random.default_rng(8)


def vector(values) -> object:
    return const(np.asarray(values, np.float32).reshape(-1))


def conv_graph(weight_limit: int = 128, groups: int = 1) -> Graph:
    channels = 16 if groups == 1 else groups
    x = parameter((1, channels, 14, 40), "x", dtypes.u8)
    shape = (1, 24, 16, 3, 3) if groups == 1 else (groups, 1, 1, 3, 3)
    weights = RNG.integers(-weight_limit, weight_limit, shape).astype(np.int8)
    out = shape[0] * shape[1]
    node = lowp.QConvolution(origin=origin("conv", "Convolution"),
                             inputs=(x.output, const(weights), vector(np.full(out, 0.01)),
                                     vector([0.02]), vector([-0.3])),
                             strides=(1, 1), pads_begin=(1, 1), pads_end=(1, 1),
                             dilations=(1, 1))
    return graph([x], node.output)


def matmul_graph() -> Graph:
    a = parameter((32, 64), "a", dtypes.u8)
    weights = RNG.integers(-128, 128, (96, 64)).astype(np.int8)
    node = lowp.QMatMul(origin=origin("fc", "MatMul"),
                        inputs=(a.output, const(weights), vector(np.full(96, 0.01)),
                                vector([0.02]), vector([-0.3])))
    return graph([a], node.output)


def assembly(g: Graph, cpu: str) -> str:
    target = Target(cpu, CPU_FEATURES[cpu])
    program = lower_graph_to_loops(g, LoweringOptions(target=target, threads=1))
    codegen = CPUCodegen(TargetSpec.for_cpu(cpu))
    return codegen.compile_kernels([s.kernel for s in program.steps]).assembly()


def uses(text: str, mnemonic: str) -> list[str]:
    """The vector register kinds (xmm/ymm/zmm) of every ``mnemonic`` instruction."""
    return re.findall(rf"\b(?:{mnemonic})\s+[^\n]*?%([xyz]mm)\d+\s*$", text, re.MULTILINE)


def loop_body(text: str, mnemonic: str) -> list[str]:
    """The lines of the first basic block holding ``mnemonic``, from its label to its
    backward jump (the tile's innermost loop)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if re.search(rf"\b{mnemonic}\b", line))
    start = max(i for i in range(first) if re.match(r"^\.LBB\d+_\d+:", lines[i]))
    end = next(i for i in range(first, len(lines)) if re.match(r"\s+j\w+\s", lines[i]))
    return lines[start:end + 1]


@pytest.mark.parametrize("build, register", [(conv_graph, "ymm"), (matmul_graph, "zmm")],
                         ids=["conv", "matmul"])
def test_vnni_dot_products(build, register):
    """vpdpbusd on the tile's vector width (ymm for a 40-wide conv row: 256-bit vectors cover
    it better on AVX-512; zmm for 96 matmul columns), accumulators in registers."""
    text = assembly(build(), "znver4")
    kinds = uses(text, "vpdpbusd")
    assert len(kinds) >= 12 and set(kinds) == {register}, text
    assert not uses(text, "vpmaddubsw") and not uses(text, "vpmaddwd")
    body = loop_body(text, "vpdpbusd")
    assert sum("vpdpbusd" in line for line in body) >= 12
    assert not any("(%rsp)" in line for line in body), "\n".join(body)


@pytest.mark.parametrize("build", [conv_graph, matmul_graph], ids=["conv", "matmul"])
def test_avx2_exact_pairs(build):
    """Full-range weights on AVX2: exact vpmaddwd on ymm, never the saturating vpmaddubsw."""
    text = assembly(build(), "znver3")
    kinds = uses(text, "vpmaddwd")
    assert len(kinds) >= 8 and set(kinds) == {"ymm"}, text
    assert not uses(text, "vpmaddubsw") and "zmm" not in text and "vpdpbusd" not in text


def test_avx2_proven_vpmaddubsw():
    """Weights in [-64, 63] with 255-level activations: every pair stays within 255 * 128 =
    32640, so the conv uses vpmaddubsw (then vpmaddwd by ones) on ymm."""
    text = assembly(conv_graph(weight_limit=64), "znver3")
    assert len(uses(text, "vpmaddubsw")) >= 8 and set(uses(text, "vpmaddubsw")) == {"ymm"}
    assert len(uses(text, "vpmaddwd")) >= 8


@pytest.mark.parametrize("cpu, mnemonic", [("znver4", "vpdpbusd"), ("znver3", "vpmaddwd"),
                                           ("x86-64", "pmaddwd|pmulld")])
def test_depthwise_dot_steps(cpu, mnemonic):
    """Depthwise: quads (VNNI) or pairs (AVX2) of kernel-width taps per dot step; without
    AVX2, multiply-adds of values widened to 32 bits (LLVM may use pmaddwd for pmulld,
    knowing both factors fit 16 bits).  Never a saturating step for full-range weights."""
    text = assembly(conv_graph(groups=8), cpu)
    products = uses(text, mnemonic)
    assert len(products) >= 6, text
    assert not uses(text, "v?pmaddubsw")
