"""Parallel loops: outlined, run by libgomp's GOMP_parallel with a static partition."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.loop_ir import PARALLEL, f32, i32, vectorized
from runtime.jit import JitEngine, initialize_llvm

RNG = np.random.default_rng(51)


def _rows_kernel(m: int = 37, n: int = 21):
    """y[r, c] = (x[r, c] + offset) * s + r, through a per-row scratch row, rows in parallel."""
    b = KernelBuilder("rows")
    x = b.input("x", f32, (m, n))
    y = b.output("y", f32, (m, n))
    s = b.scalar("s", f32)
    offset = b.let(s * 2.0, "offset")
    with b.for_range(m, kind=PARALLEL, name="r") as r:
        row = b.allocate("row", f32, (n,))
        with b.for_range(n, kind=vectorized(8), name="c") as c:
            b.store(row, c, x[r, c] + offset)
        with b.for_range(n, kind=vectorized(8), name="c") as c:
            b.store(y, (r, c), row[c] * s + lb.cast(r, f32, "nearest"))
    return b.build()


@pytest.fixture(scope="module")
def engine() -> JitEngine:
    return JitEngine()


def test_libgomp_is_found_and_loaded():
    assert initialize_llvm() is True


def test_parallel_loop_is_outlined_and_forked_with_gomp(engine):
    library = engine.compile_kernels([_rows_kernel()])
    ir_text = library.unoptimized_ir
    assert 'call void @"GOMP_parallel"(void (ptr)* @"rows.parallel0.worker"' in ir_text
    assert ('define internal void @"rows.parallel0.chunk"(ptr noalias %"x", ptr noalias %"y", '
            'float %"offset", float %"s", i64 %"begin", i64 %"end")') in ir_text
    # the worker claims pieces of the shares by atomic adds (work stealing after its own)
    assert 'atomicrmw add ptr' in ir_text and 'call i32 @"omp_get_thread_num"()' in ir_text


def test_the_chunk_is_compiled_once_for_the_kernel_and_its_worker(engine):
    """The chunk is ``noinline``: after O3 both the kernel's serial path and the worker call
    it instead of holding copies of the loop."""
    optimized = engine.compile_kernels([_rows_kernel()]).llvm_ir()
    bodies = optimized.split("\ndefine ")
    kernel = next(b for b in bodies if b.startswith("void @rows("))
    worker = next(b for b in bodies if "@rows.parallel0.worker(" in b.split("{")[0])
    for body in (kernel, worker):
        assert "call fastcc void @rows.parallel0.chunk(" in body.split("\n}")[0]
    assert sum(1 for b in bodies if "@rows.parallel0.chunk(" in b.split("{")[0]) == 1


@pytest.mark.parametrize("threads", [1, 2, 3, 8, 40])
def test_team_sizes_give_identical_results(threads, engine):
    """Captured let values, scalar parameters and per-iteration scratch survive outlining;
    every row is computed whatever the team: 40 threads for 37 rows make 37 one-row shares,
    the three threads without one claim pieces of the others'."""
    function = engine.compile_kernels([_rows_kernel()]).get_function("rows")
    x = RNG.standard_normal((37, 21)).astype(np.float32)
    y = np.zeros((37, 21), np.float32)
    function(x, y, 1.5, threads=threads)
    rows = np.arange(37, dtype=np.float32)[:, None]
    expected = (x + np.float32(3.0)) * np.float32(1.5) + rows
    np.testing.assert_array_equal(y, expected)


def test_without_openmp_parallel_loops_run_serially(engine):
    library = engine.compile_kernels([_rows_kernel()], openmp=False)
    assert "GOMP_parallel" not in library.unoptimized_ir
    x = RNG.standard_normal((37, 21)).astype(np.float32)
    serial, forked = np.zeros((37, 21), np.float32), np.zeros((37, 21), np.float32)
    library.get_function("rows")(x, serial, 0.5, threads=2)
    engine.compile_kernels([_rows_kernel()]).get_function("rows")(x, forked, 0.5, threads=2)
    np.testing.assert_array_equal(serial, forked)


def test_integer_parallel_reduction_per_row(engine):
    """Each thread owns whole rows; a LocalVar inside the parallel body is private."""
    b = KernelBuilder("row_sums")
    x = b.input("x", i32, (50, 33))
    y = b.output("y", i32, (50,))
    with b.for_range(50, kind=PARALLEL, name="r") as r:
        acc = b.local(lb.broadcast(0, 1, i32), "acc")
        with b.for_range(33, name="c") as c:
            b.assign(acc, acc + x[r, c])
        b.store(y, r, acc)
    function = engine.compile_kernels([b.build()]).get_function("row_sums")
    data = RNG.integers(-1000, 1000, (50, 33), dtype=np.int32)
    out = np.zeros(50, np.int32)
    function(data, out, threads=2)
    np.testing.assert_array_equal(out, data.sum(axis=1))


def test_spin_count_default_respects_the_users_wait_policy():
    """libgomp's spin is shortened only when the user set neither OMP_WAIT_POLICY nor
    GOMP_SPINCOUNT; the value reaches libgomp (read when it loads, in a fresh process)."""
    import os
    import subprocess
    import sys

    from runtime.jit import GOMP_SPIN_COUNT, _default_spin_count

    env: dict[str, str] = {}
    _default_spin_count(env)
    assert env == {"GOMP_SPINCOUNT": str(GOMP_SPIN_COUNT)}
    for chosen in ({"OMP_WAIT_POLICY": "passive"}, {"GOMP_SPINCOUNT": "7"}):
        env = dict(chosen)
        _default_spin_count(env)
        assert env == chosen
    probe = ("import os; from runtime.jit import initialize_llvm; ok = initialize_llvm(); "
             "maps = open('/proc/self/maps').read(); "
             "print(os.environ.get('GOMP_SPINCOUNT'), ok and 'libgomp' in maps)")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", probe], env=clean, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(GOMP_SPIN_COUNT), "True"]


EXIT_WHILE_SPINNING = """
import numpy as np
from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.loop_ir import PARALLEL, f32
from runtime.jit import JitEngine

b = KernelBuilder("spin")
x = b.input("x", f32, (64,))
y = b.output("y", f32, (64,))
with b.for_range(64, kind=PARALLEL) as i:
    b.store(y, i, x[i] * 2.0)
kernel = b.build()
library = JitEngine().compile_kernels([kernel])
data, out = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
for _ in range(20):
    library.get_function("spin")(data, out, threads=2)
assert out[63] == 126.0
print("done", flush=True)
"""


@pytest.mark.parametrize("policy", [{"OMP_WAIT_POLICY": "active"}, {}], ids=["active", "default"])
def test_process_exits_cleanly_while_openmp_threads_spin(policy):
    """libgomp stays mapped until the process is gone: LLVM's exit handler closes the
    libraries it loaded while libgomp's threads still spin in them (for ever with
    ``OMP_WAIT_POLICY=active``); the process used to die with SIGSEGV at exit."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | policy
    done = subprocess.run([sys.executable, "-c", EXIT_WHILE_SPINNING], check=False,
                          capture_output=True, text=True, env=environ, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "done"), done.stderr[-2000:]
