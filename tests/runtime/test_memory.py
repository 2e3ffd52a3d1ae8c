"""The static memory plan: liveness, best-fit placement, reuse, and its verifier."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import lpjit
from lowering import builder as lb
from lowering.loop_ir import Buffer, Kernel, f32
from lowering.lower_graph import lower_graph_to_loops, make_kernel
from lowering.program import Program, Step
from lpjit import dtypes, reference
from lpjit.errors import VerificationError
from lpjit.graph import Graph, Origin, Parameter, Result, Value
from lpjit.ops import activations as act
from lpjit.ops import elementwise as ew
from runtime.memory import (
    ALIGNMENT,
    Lifetime,
    MemoryPlan,
    Placement,
    place_lifetimes,
    plan_memory,
    print_memory_plan,
    scratch_lifetimes,
    verify_memory_plan,
)


def scratch(name: str, n: int) -> Buffer:
    return Buffer(name, f32, (n,), role="scratch", alignment=64)


def lifetime(name: str, size: int, first: int, last: int) -> Lifetime:
    return Lifetime(scratch(name, max(size // 4, 1)), size, first, last)


def peak_live_bytes(lifetimes: list[Lifetime]) -> int:
    steps = range(max((t.last for t in lifetimes), default=-1) + 1)
    return max((sum(t.size for t in lifetimes if t.first <= s <= t.last) for s in steps),
               default=0)


# -- placement ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_random_lifetimes_never_overlap_and_stay_within_bounds(seed: int) -> None:
    """No two simultaneously live buffers overlap; peak live bytes <= arena <= no reuse."""
    rng = np.random.default_rng(seed)
    lifetimes = []
    for k in range(int(rng.integers(1, 30))):
        first = int(rng.integers(0, 20))
        size = int(rng.choice([0, 4, 60, 64, 100, 1000, 4096, int(rng.integers(1, 5000))]))
        lifetimes.append(lifetime(f"t{k}", size, first, first + int(rng.integers(0, 6))))
    plan = verify_memory_plan(place_lifetimes(lifetimes))
    assert all(p.offset % ALIGNMENT == 0 for p in plan.placements)
    assert plan.arena_bytes % ALIGNMENT == 0
    assert peak_live_bytes(lifetimes) <= plan.arena_bytes <= plan.unshared_bytes
    assert {id(p.buffer) for p in plan.placements} == {id(t.buffer) for t in lifetimes}


def test_a_chain_of_temporaries_reuses_two_slots() -> None:
    """Ten 1 KiB buffers, each live for two consecutive steps, fit in two slots."""
    chain = [lifetime(f"t{k}", 1024, k, k + 1) for k in range(10)]
    plan = verify_memory_plan(place_lifetimes(chain))
    assert plan.arena_bytes == 2048
    assert plan.unshared_bytes == 10 * 1024
    assert [p.offset for p in plan.placements] == [0, 1024] * 5


def test_best_fit_takes_the_smallest_gap_that_fits() -> None:
    """Placed largest first: A [0,512), B [512,704), C [704,832), E [832,952).  At step 2 only
    B and E are live: F (100 bytes) fits in the 128-byte gap [704,832), not the 512 at 0."""
    ts = [lifetime("A", 512, 0, 0), lifetime("B", 192, 0, 3), lifetime("C", 128, 0, 0),
          lifetime("E", 120, 0, 3), lifetime("F", 100, 2, 2)]
    plan = verify_memory_plan(place_lifetimes(ts))
    offsets = {p.buffer.name: p.offset for p in plan.placements}
    assert offsets == {"A": 0, "B": 512, "C": 704, "E": 832, "F": 704}
    assert plan.arena_bytes == 960


def test_largest_buffers_are_placed_first() -> None:
    """C (300 bytes) goes first, at 0; A (256), live apart from C, reuses C's bytes; B, live
    with both, goes above them.  When A is live with C too, it goes above C, and B above A."""
    ts = [lifetime("A", 256, 0, 0), lifetime("B", 128, 0, 2), lifetime("C", 300, 1, 1)]
    plan = verify_memory_plan(place_lifetimes(ts))
    offsets = {p.buffer.name: p.offset for p in plan.placements}
    assert offsets == {"A": 0, "B": 320, "C": 0}
    ts = [lifetime("A", 256, 0, 1), lifetime("B", 128, 0, 2), lifetime("C", 300, 1, 1)]
    offsets = {p.buffer.name: p.offset for p in place_lifetimes(ts).placements}
    assert offsets == {"C": 0, "A": 320, "B": 576}


def test_verifier_rejects_overlapping_live_buffers() -> None:
    a, b = lifetime("a", 128, 0, 2), lifetime("b", 128, 2, 3)
    bad = MemoryPlan((Placement(a, 0), Placement(b, 64)), 256)
    with pytest.raises(VerificationError, match=r"buffers 'a' \[0, 128\) and 'b' \[64, 192\) "
                                                r"overlap while both are live"):
        verify_memory_plan(bad)
    # The same bytes at different times are fine.
    verify_memory_plan(MemoryPlan((Placement(a, 0), Placement(lifetime("c", 128, 3, 4), 0)),
                                  128))


def test_verifier_rejects_misaligned_or_out_of_arena_offsets() -> None:
    a = lifetime("a", 128, 0, 0)
    with pytest.raises(VerificationError, match="buffer 'a' at offset 32"):
        verify_memory_plan(MemoryPlan((Placement(a, 32),), 192))
    with pytest.raises(VerificationError, match=r"outside the 64-byte arena"):
        verify_memory_plan(MemoryPlan((Placement(a, 0),), 64))


def test_printer_lists_offsets_sizes_and_steps() -> None:
    plan = place_lifetimes([lifetime("t0", 1024, 0, 1), lifetime("t1", 256, 1, 2),
                            lifetime("t2", 1024, 2, 3)])
    assert print_memory_plan(plan).splitlines() == [
        "arena 1280 bytes, 3 buffers (2304 bytes without reuse)",
        "      offset      bytes  steps       buffer",
        "           0       1024  [0, 1]      t0: f32[256] scratch",
        "        1024        256  [1, 2]      t1: f32[64] scratch",
        "           0       1024  [2, 3]      t2: f32[256] scratch"]


# -- liveness on programs ----------------------------------------------------------------------


def scale_kernel(name: str, source: Buffer, target: Buffer, factor: float) -> Kernel:
    """``target = source * factor`` over ``target``'s shape (a step of a hand-built program)."""
    b = lb.KernelBuilder(name)
    with contextlib.ExitStack() as loops:
        indices = tuple(loops.enter_context(b.for_range(n)) for n in target.shape)
        b.store(target, indices, source[indices] * factor)
    return make_kernel(b)


def views_program() -> tuple[Program, dict[str, Buffer]]:
    """x -> t (step 0) -> u (step 1, reads t) -> y (step 3 reads v, a 2-D view of t);
    step 2 writes two scratch buffers w, z (a multi-output step; z is never read)."""
    x = Buffer("x", f32, (12,), role="input")
    y = Buffer("y", f32, (3, 4), role="output", alignment=64)
    t, u, w, z = (scratch(n, 12) for n in "tuwz")
    v = t.view("v", (3, 4))
    b = lb.KernelBuilder("two_outputs")
    with b.for_range(12) as i:
        b.store(w, (i,), u[i] + 1.0)
        b.store(z, (i,), u[i] - 1.0)
    steps = [scale_kernel("make_t", x, t, 2.0), scale_kernel("make_u", t, u, 3.0),
             make_kernel(b), scale_kernel("read_view", v, y, 5.0)]
    program = Program("views", (x,), (y,), [Step(k, ()) for k in steps])
    return program, {"t": t, "u": u, "w": w, "z": z}


def test_views_extend_their_roots_life_and_multi_output_buffers_are_live_together() -> None:
    program, buffers = views_program()
    spans = {lt.buffer.name: (lt.first, lt.last, lt.size) for lt in scratch_lifetimes(program)}
    assert spans == {"t": (0, 3, 48), "u": (1, 2, 48), "w": (2, 2, 48), "z": (2, 2, 48)}
    plan = verify_memory_plan(plan_memory(program), program)
    offsets = {name: plan.offset(b) for name, b in buffers.items()}
    assert len({offsets["t"], offsets["u"], offsets["w"], offsets["z"]}) == 4
    assert plan.offset(buffers["t"].view("again", (12,))) == offsets["t"]


def test_verifier_rejects_a_plan_from_another_program() -> None:
    program, _ = views_program()
    other = Program("other", program.inputs, program.outputs, program.steps[:2])
    with pytest.raises(VerificationError, match="scratch buffer 't' is live in steps"):
        verify_memory_plan(plan_memory(other), program)


def test_verifier_rejects_a_read_before_any_write() -> None:
    x = Buffer("x", f32, (4,), role="input")
    y = Buffer("y", f32, (4,), role="output")
    t = scratch("t", 4)
    program = Program("uninitialised", (x,), (y,), [Step(scale_kernel("read_t", t, y, 1.0), ())])
    with pytest.raises(VerificationError, match="'t' is read by step 0 .* before any step "
                                                "writes it"):
        verify_memory_plan(plan_memory(program), program)


# -- randomized graphs: plans verify, and the compiled code computes the reference -------------

UNARY = (act.Relu, act.Tanh, act.Sigmoid, act.Abs, act.Negative)
BINARY = (ew.Add, ew.Subtract, ew.Multiply, ew.Maximum, ew.Minimum)
SHAPES = ((4, 6, 16), (4, 1, 16), (6, 1), (16,))


def random_graph(seed: int, size: int = 24) -> Graph:
    """A random elementwise DAG whose sinks are its outputs: values with several consumers and
    broadcasts keep intermediates in scratch buffers with overlapping lifetimes."""
    rng = np.random.default_rng(seed)
    shapes = [SHAPES[0], SHAPES[int(rng.integers(1, len(SHAPES)))]]
    params = [Parameter(origin=Origin(str(k), f"in{k}", "Parameter"), inputs=(),
                        element_type=dtypes.f32, shape=s) for k, s in enumerate(shapes)]
    values: list[Value] = [p.output for p in params]
    for k in range(size):
        origin = Origin(str(10 + k), f"op{k}", "op")
        pick = [values[int(rng.integers(len(values)))] for _ in range(2)]
        if rng.random() < 0.4:
            node = UNARY[int(rng.integers(len(UNARY)))](origin=origin, inputs=pick[:1])
        else:
            node = BINARY[int(rng.integers(len(BINARY)))](origin=origin, inputs=pick)
        values.append(node.output)
    used = {u for v in values for u in v.node.inputs}
    sinks = [v for v in values[2:] if v not in used]
    results = [Result(origin=Origin(str(100 + k), f"out{k}", "Result"), inputs=(v,))
               for k, v in enumerate(sinks)]
    return Graph(f"random{seed}", params, results)


@pytest.mark.parametrize("seed", range(12))
def test_random_graph_plans_verify(seed: int) -> None:
    program = lower_graph_to_loops(random_graph(seed))
    verify_memory_plan(plan_memory(program), program)


def test_random_graphs_reuse_scratch_memory() -> None:
    plans = [plan_memory(lower_graph_to_loops(random_graph(seed))) for seed in range(12)]
    assert sum(len(p.placements) for p in plans) > 50
    assert sum(p.arena_bytes < p.unshared_bytes for p in plans) >= 5


@pytest.mark.parametrize("seed", range(6))
def test_compiled_random_graph_matches_reference(seed: int) -> None:
    """The arena shared by lifetime gives the reference results (threads=1 and 2 agree)."""
    graph = random_graph(seed)
    rng = np.random.default_rng(100 + seed)
    inputs = [rng.uniform(-2, 2, p.shape).astype(np.float32) for p in graph.parameters]
    expected = reference.run(graph, inputs)
    serial = lpjit.compile(graph, threads=1, verify=True)(*inputs)
    parallel = lpjit.compile(graph, threads=2, verify=True)(*inputs)
    for actual, wanted, other in zip(serial, expected, parallel):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(actual, other)
