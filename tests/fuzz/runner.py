"""Run one fuzz case and classify its outcome; guards against hangs and runaway allocations.

The property every case must satisfy: reading the IR either succeeds or raises an
``LpjitError`` subclass; when it succeeds and the graph is small enough, running the reference
executor on random inputs also succeeds or raises an ``LpjitError``; and when compiling is
asked for and the graph is smaller still, ``lpjit.compile`` and a call of the compiled model
succeed or raise an ``LpjitError``.  Any other exception is a crash and propagates out of
``run_case`` unchanged.  A compiled model whose outputs disagree with the reference is not a
crash; its outcome is ``compile: mismatch``, which the fuzz tests and ``tools/fuzz_ir.py``
count as a failure (as ``compile: VerificationError``, a broken compiler invariant).  A case
that outlives its time budget raises ``CaseTimeout``; an allocation past the address-space
budget raises ``MemoryError`` (both are crashes too).

One documented semantic difference is not a mismatch: compiled code computes f16 weight
decompression chains in f32, as OpenVINO's CPU plugin does (``fold_constants``' docstring),
where the reference rounds every step to f16 (and overflows to inf past 65504).  When the
compiled outputs disagree with the reference but agree with the reference run of the graph
after ``fold_constants`` (which applies that rule), and the two references disagree, the
outcome is ``compile: ok, as f32 decompression``.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np

import lpjit
from fuzz.mutations import Case
from lpjit import reference
from lpjit.errors import LpjitError
from lpjit.graph import Graph
from lpjit.passes import fold_constants
from lpjit.reference.workspace import graph_elements

# Graphs whose tensors hold more elements than this in total are read but not executed.
MAX_REFERENCE_ELEMENTS = 1_000_000
# ... and graphs larger than this are not compiled (compiling takes 0.1-2 s per small model).
MAX_COMPILE_ELEMENTS = 100_000
MAX_COMPILE_NODES = 80
# Compiled outputs must match the reference within this (float) or exactly (integer).  Loose,
# because compiled code decompresses f16 weights in f32 (as OpenVINO's CPU plugin does) where
# the reference rounds every step to f16: about 1e-3 relative on the NNCF INT4 seed (and
# integer-mode requantization rounds where float code does not).
RTOL, ATOL = 1e-2, 1e-3
# Outcomes that are compiler bugs (failures of the fuzz tests and of tools/fuzz_ir.py).
COMPILER_FAILURES = ("compile: mismatch", "compile: VerificationError")


class CaseTimeout(BaseException):
    """A case ran past its time budget (a BaseException, so no ``except Exception`` hides it)."""


@attrs.frozen
class Outcome:
    """How a case ended: ``stage`` reached and ``result`` (``ok``, ``too large to run`` or the
    ``LpjitError`` subclass raised)."""

    stage: str
    result: str
    detail: str = attrs.field(default="", eq=False)   # the error message, if any

    def __str__(self) -> str:
        return f"{self.stage}: {self.result}"


def total_elements(graph: Graph) -> int:
    """Elements the reference executor materialises: every tensor plus the hidden ones of
    windowed ops, Interpolate and attention (``lpjit.reference.workspace``; exact int)."""
    return graph_elements(graph)


def random_inputs(graph: Graph, seed: int) -> list[np.ndarray]:
    """Seeded random inputs for every Parameter (never all zeros)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for p in graph.parameters:
        dtype = p.element_type.numpy
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.uniform(-4.0, 4.0, p.shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, p.shape).astype(bool))
        else:
            arrays.append(rng.integers(1, 8, p.shape).astype(dtype))
    return arrays


def _read(case: Case, scratch: Path | None) -> Graph:
    if not case.via_files:
        return lpjit.read_ir(case.xml, case.weights)
    with contextlib.ExitStack() as stack:
        directory = scratch or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        xml = directory / "case.xml"
        xml.write_bytes(case.xml)
        xml.with_suffix(".bin").write_bytes(case.weights)
        return lpjit.read_ir(xml)


def run_case(case: Case, *, input_seed: int = 0, scratch: Path | None = None,
             compile_model: bool = False) -> Outcome:
    """Read ``case`` and, when small enough, run it on the reference (and compile it when
    ``compile_model``); see the module doc."""
    try:
        graph = _read(case, scratch)
    except LpjitError as e:
        return Outcome("read", type(e).__name__, str(e))
    elements = total_elements(graph)
    if elements > MAX_REFERENCE_ELEMENTS:
        return Outcome("read", "ok, too large to run")
    inputs = random_inputs(graph, input_seed)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = reference.run(graph, inputs)
    except LpjitError as e:
        return Outcome("reference", type(e).__name__, str(e))
    if not compile_model:
        return Outcome("reference", "ok")
    if elements > MAX_COMPILE_ELEMENTS or len(graph.nodes) > MAX_COMPILE_NODES:
        return Outcome("reference", "ok, too large to compile")
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outputs = list(lpjit.compile(graph, threads=1)(*inputs))
    except LpjitError as e:
        return Outcome("compile", type(e).__name__, str(e))
    why = disagreement(outputs, expected)
    if why and agrees_with_f32_decompression(graph, inputs, outputs, expected):
        return Outcome("compile", "ok, as f32 decompression", why)
    return Outcome("compile", "mismatch" if why else "ok", why)


def agrees_with_f32_decompression(graph: Graph, inputs: list[np.ndarray],
                                  outputs: list[np.ndarray], expected: list[np.ndarray]
                                  ) -> bool:
    """Whether ``outputs`` are the reference outputs of ``fold_constants(graph)`` and those
    differ from ``expected`` (the literal graph's): the f32 decompression rule explains the
    disagreement (module docstring)."""
    folded_graph = fold_constants(graph)
    if folded_graph is graph:
        return False
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folded = reference.run(folded_graph, inputs)
    except LpjitError:
        return False
    return bool(disagreement(folded, expected)) and not disagreement(outputs, folded)


def disagreement(actual: list[np.ndarray], expected: list[np.ndarray]) -> str:
    """Why compiled outputs differ from the reference ('' when they agree): shapes and dtypes
    equal, floats within RTOL/ATOL (NaN where NaN), integers equal."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs; the reference has {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        a, e = np.asarray(a), np.asarray(e)
        if a.shape != e.shape or a.dtype != e.dtype:
            return f"output {i} is {a.dtype}{list(a.shape)}; the reference {e.dtype}{list(e.shape)}"
        close = (np.isclose(a, e, rtol=RTOL, atol=ATOL, equal_nan=True) if e.dtype.kind == "f"
                 else a == e)
        if not np.all(close):
            where = tuple(int(j) for j in np.argwhere(~close)[0])
            return (f"output {i} differs at {int((~close).sum())} of {close.size} elements, "
                    f"first at {where}: {a[where]!r} vs reference {e[where]!r}")
    return ""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``CaseTimeout`` in the main thread when the block runs longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"the case ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def address_space_in_use() -> int:
    """Bytes of virtual address space this process maps now (``VmSize``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def address_space_limit(headroom: int) -> Iterator[None]:
    """Make any allocation that would grow the address space by more than ``headroom`` bytes
    fail with ``MemoryError`` inside the block (``RLIMIT_AS``; restored afterwards)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = address_space_in_use() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
