"""Per-layer profiles of a compiled model: where the time goes, step by step.

``profile_model(compiled, inputs)`` runs the model through the profiled entry point
(``runtime.profiling``: a clock read around every step, built on demand, so normal calls pay
nothing) and returns a ``ModelProfile``: latency statistics of every iteration and, for every
step, its time, share of the total and achieved GOP/s.  ``describe_steps`` gives what is known
about each step before running it (``StepInfo``); ``chrome_trace`` turns a profile into a
Chrome trace-event document (Perfetto, chrome://tracing).

Operation counts (``count_ops``), per graph node of a step's fused group:

1. Convolution-like ops (Convolution, GroupConvolution, their integer and compressed forms):
   ``2 * MACs`` with ``MACs = output elements * weight elements / output channels``.
2. MatMul-like ops: ``2 * output elements * K`` (``K`` the reduced dimension).
3. ScaledDotProductAttention: ``2 * (L*S*E + L*S*Ev)`` per batch.
4. Every other op: one operation per element of its largest non-constant input or output
   (elementwise ops: the output; reductions and pools: the input).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from lowering.loop_ir import Buffer, Load, Store
from lowering.program import Program, Step
from lowering.traversal import walk
from lpjit.graph import Constant, Graph, Node, Origin
from lpjit.ops import attention, lowp, nn
from runtime.profiling import ProfiledExecutable

INTEGER_DTYPES = ("i8", "u8", "i4", "u4", "u1")


# -- operation counts ----------------------------------------------------------------------


def _numel(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _convolution_ops(node: Node) -> int:
    output = node.output_types[0].shape
    return 2 * _numel(output) * _numel(node.input_type(1).shape) // max(output[1], 1)


def _matmul_ops(node: Node) -> int:
    data = node.input_type(0).shape
    transpose = getattr(node, "transpose_a", False) and len(data) >= 2
    reduced = data[-2] if transpose else data[-1]
    return 2 * _numel(node.output_types[0].shape) * reduced


def _attention_ops(node: Node) -> int:
    query, key = node.input_type(0).shape, node.input_type(1).shape
    output = node.output_types[0].shape
    rows, sources = _numel(output[:-1]), key[-2]
    return 2 * rows * sources * (query[-1] + output[-1])


OP_COUNT_RULES = {
    nn.ConvolutionBase: _convolution_ops,
    lowp.QConvolution: _convolution_ops,
    lowp.CompressedConvolution: _convolution_ops,
    nn.MatMul: _matmul_ops,
    lowp.QMatMul: _matmul_ops,
    lowp.QActivationMatMul: _matmul_ops,
    lowp.CompressedMatMul: _matmul_ops,
    attention.ScaledDotProductAttention: _attention_ops,
}


def count_ops(node: Node) -> int:
    """Arithmetic operations of one node (module docstring rules)."""
    for cls in type(node).__mro__:
        if cls in OP_COUNT_RULES:
            return OP_COUNT_RULES[cls](node)
    sizes = [v.type.numel for v in node.inputs if not isinstance(v.node, Constant)]
    sizes += [t.numel for t in node.output_types]
    return max(sizes, default=0)


# -- what each step is ---------------------------------------------------------------------


@attrs.frozen
class StepInfo:
    """One step of a program: its kernel, the IR layers it computes (a fused group), the
    element types it reads and writes, its integer weights and its operation count."""

    index: int
    kernel: str
    layers: tuple[str, ...]
    layer_types: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    weights: tuple[str, ...]
    ops: int

    @property
    def label(self) -> str:
        """``conv1 + relu1``: the layers of the fused group."""
        return " + ".join(self.layers) or self.kernel

    anchor: int = 0

    @property
    def op(self) -> str:
        """The IR type of the group's anchor (``layers[anchor]``: the layer whose lowering
        made the kernel, e.g. the Convolution of a step that also quantizes its input)."""
        return self.layer_types[self.anchor] if self.layer_types else "-"

    @property
    def precision(self) -> str:
        """``u8 x i8 -> f32``: data types read (and integer weights), then written."""
        read = "/".join(self.inputs) or "-"
        if self.weights:
            read += " x " + "/".join(self.weights)
        return f"{read} -> {'/'.join(self.outputs) or '-'}"


def describe_steps(program: Program, graph: Graph) -> tuple[StepInfo, ...]:
    """A ``StepInfo`` for every step of ``program`` compiled from ``graph``.

    A group lowered to several kernels (Split) shares its operation count among them in
    proportion to the elements each writes.
    """
    nodes: dict[Origin, Node] = {}
    for node in graph.nodes:
        nodes.setdefault(node.origin, node)
    used_by = _root_users(program)
    written = [_written_elements(step) for step in program.steps]
    share_of: dict[tuple[Origin, ...], int] = {}
    for step, count in zip(program.steps, written):
        share_of[step.layers] = share_of.get(step.layers, 0) + count
    infos = []
    for index, step in enumerate(program.steps):
        group_ops = sum(count_ops(nodes[o]) for o in step.layers if o in nodes)
        total = share_of[step.layers]
        ops = group_ops if total == 0 else group_ops * written[index] // total
        reads, writes, weights = _step_types(step, index, used_by)
        anchor = step.layers.index(step.anchor) if step.anchor in step.layers else 0
        infos.append(StepInfo(index, step.kernel.name, tuple(o.name for o in step.layers),
                              tuple(o.type for o in step.layers), reads, writes, weights, ops,
                              anchor))
    return tuple(infos)


def _root_users(program: Program) -> dict[int, set[int]]:
    """Root buffer id -> indices of the steps that touch it (-1: a program output)."""
    users: dict[int, set[int]] = {}
    for index, step in enumerate(program.steps):
        for node in walk(step.kernel.body):
            if isinstance(node, (Load, Store)):
                users.setdefault(id(node.buffer.root), set()).add(index)
    for buffer in program.outputs:
        users.setdefault(id(buffer.root), set()).add(-1)
    return users


def _written_elements(step: Step) -> int:
    roots = {id(n.buffer.root): n.buffer.root for n in walk(step.kernel.body)
             if isinstance(n, Store)}
    return sum(root.numel for root in roots.values())


def _step_types(step: Step, index: int, used_by: dict[int, set[int]]
                ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Element types the step reads from other steps or inputs, writes for other steps or
    outputs (its own temporaries, such as a padded copy, excluded), and integer weights."""
    loaded: dict[int, Buffer] = {}
    stored: dict[int, Buffer] = {}
    for node in walk(step.kernel.body):
        if isinstance(node, (Load, Store)):
            root = node.buffer.root
            (stored if isinstance(node, Store) else loaded).setdefault(id(root), root)
    shared = [b for key, b in stored.items() if used_by.get(key, set()) - {index}]
    outputs = shared or list(stored.values())
    inputs = [b for key, b in loaded.items() if key not in stored and b.role != "constant"]
    weights = [b for b in loaded.values()
               if b.role == "constant" and b.dtype.name in INTEGER_DTYPES]
    return _names(inputs), _names(outputs), _names(weights)


def _names(buffers: Sequence[Buffer]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(b.dtype.name for b in buffers))


# -- measuring -----------------------------------------------------------------------------


@attrs.frozen
class LatencyStats:
    """Latency of the timed iterations, in seconds."""

    min: float
    median: float
    p90: float
    max: float
    mean: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencyStats:
        values = np.asarray(seconds, np.float64)
        return cls(float(values.min()), float(np.median(values)),
                   float(np.percentile(values, 90)), float(values.max()), float(values.mean()))


@attrs.frozen(eq=False)
class ModelProfile:
    """A profiled run: ``stamps[i]`` holds the ``steps + 1`` timestamps (ns,
    ``time.monotonic_ns`` clock) of iteration ``i``; ``latencies`` the wall time of each
    call as Python sees it (seconds)."""

    model: str
    threads: int
    steps: tuple[StepInfo, ...]
    stamps: np.ndarray
    latencies: tuple[float, ...]
    first_inference: float
    compile_steps: tuple[tuple[str, float], ...] = ()

    @property
    def iterations(self) -> int:
        return len(self.latencies)

    @property
    def latency(self) -> LatencyStats:
        return LatencyStats.of(self.latencies)

    @property
    def throughput(self) -> float:
        """Inferences per second over the timed iterations (one at a time)."""
        return self.iterations / float(np.sum(self.latencies))

    @property
    def compile_seconds(self) -> float:
        return sum(seconds for _, seconds in self.compile_steps)

    @property
    def step_seconds(self) -> np.ndarray:
        """``[iterations, steps]`` seconds spent in each step."""
        return np.diff(self.stamps, axis=1) / 1e9

    @property
    def step_mean(self) -> np.ndarray:
        """Mean seconds of each step."""
        return self.step_seconds.mean(axis=0)

    @property
    def native_mean(self) -> float:
        """Mean seconds from the first step's start to the last step's end."""
        return float(self.step_seconds.sum(axis=1).mean())

    def rows(self) -> list[dict[str, Any]]:
        """One dict per step: what it is, mean time, share of the steps' total, GOP/s."""
        means = self.step_mean
        total = float(means.sum()) or 1.0
        rows = []
        for info, seconds in zip(self.steps, means):
            rows.append({"index": info.index, "layers": list(info.layers), "op": info.op,
                         "layer_types": list(info.layer_types), "kernel": info.kernel,
                         "precision": info.precision, "inputs": list(info.inputs),
                         "outputs": list(info.outputs), "weights": list(info.weights),
                         "time_us": seconds * 1e6, "share": seconds / total, "ops": info.ops,
                         "gops": info.ops / seconds / 1e9 if seconds > 0 else 0.0})
        return rows

    def to_json(self) -> dict[str, Any]:
        """Everything, machine-readable (times in ms unless the key says otherwise)."""
        latency = self.latency
        return {"model": self.model, "threads": self.threads, "iterations": self.iterations,
                "compile_s": self.compile_seconds,
                "compile_steps_s": dict(self.compile_steps),
                "first_inference_ms": self.first_inference * 1e3,
                "latency_ms": {k: v * 1e3 for k, v in attrs.asdict(latency).items()},
                "throughput_per_s": self.throughput,
                "steps_total_ms": self.native_mean * 1e3,
                "layers": self.rows()}


def profiled_executable(compiled: Any) -> ProfiledExecutable:
    """The profiled entry point of a ``CompiledModel`` (a small extra module, built now)."""
    from lpjit.pipeline import jit_engine

    compilation = compiled.compilation
    return ProfiledExecutable(compilation.library, compilation.program, compilation.plan,
                              compiled.executable.inputs, compiled.executable.outputs,
                              compiled.threads, jit_engine())


def profile_model(compiled: Any, inputs: Sequence[np.ndarray], *,
                  iterations: int | None = None, seconds: float = 1.0,
                  min_iterations: int = 3) -> ModelProfile:
    """Profile ``compiled`` (a ``CompiledModel``) on ``inputs`` (in model order): the first
    inference through the normal entry point, one untimed profiled warm-up call, then
    ``iterations`` profiled calls (or as many as fit in ``seconds``, at least
    ``min_iterations``)."""
    start = time.perf_counter()
    compiled(*inputs)                      # checks the inputs, raising InputError on misfit
    first = time.perf_counter() - start
    arrays = _model_dtypes(compiled, inputs)
    executable = profiled_executable(compiled)
    executable.run_profiled(arrays)
    stamps, latencies = [], []
    deadline = time.perf_counter() + seconds
    while _more(len(latencies), iterations, min_iterations, deadline):
        start = time.perf_counter()
        _, call_stamps = executable.run_profiled(arrays)
        latencies.append(time.perf_counter() - start)
        stamps.append(call_stamps)
    steps = describe_steps(compiled.program, compiled.graph)
    return ModelProfile(compiled.name, compiled.threads, steps,
                        np.array(stamps, np.int64).reshape(len(stamps), len(steps) + 1),
                        tuple(latencies), first, tuple(compiled.timings().items()))


def _more(done: int, iterations: int | None, min_iterations: int, deadline: float) -> bool:
    """Whether to run another iteration: a fixed count, or until ``deadline`` (at least
    ``min_iterations``)."""
    if iterations is not None:
        return done < iterations
    return done < min_iterations or time.perf_counter() < deadline


def _model_dtypes(compiled: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``inputs`` (already accepted by a call of ``compiled``) as C-contiguous arrays of the
    model's input dtypes."""
    return [np.ascontiguousarray(np.asarray(array).astype(info.dtype, copy=False))
            for info, array in zip(compiled.inputs, inputs)]


# -- trace -------------------------------------------------------------------------------


def chrome_trace(profile: ModelProfile) -> dict[str, Any]:
    """A Chrome trace-event document: one complete event (``ph: X``) per step per
    iteration, microseconds from the first iteration's start, layers in ``args``."""
    pid, tid = os.getpid(), threading.get_native_id()
    origin = int(profile.stamps[0, 0]) if profile.iterations else 0
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": tid,
         "args": {"name": f"lpjit {profile.model}"}},
        {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
         "args": {"name": f"inference ({profile.threads} threads)"}}]
    for iteration, stamps in enumerate(profile.stamps):
        for info, start, end in zip(profile.steps, stamps[:-1], stamps[1:]):
            events.append({"name": info.label, "cat": info.op, "ph": "X",
                           "ts": (int(start) - origin) / 1e3, "dur": (int(end) - int(start)) / 1e3,
                           "pid": pid, "tid": tid,
                           "args": {"layers": list(info.layers), "kernel": info.kernel,
                                    "precision": info.precision, "iteration": iteration}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"model": profile.model, "threads": profile.threads,
                          "iterations": profile.iterations}}
