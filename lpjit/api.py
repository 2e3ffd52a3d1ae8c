"""The public compile API: ``lpjit.compile(ir) -> CompiledModel``.

A ``CompiledModel`` is called with numpy arrays (in Parameter order, by input name as keywords,
or as one dict) and returns an ``Outputs`` in Result order, addressable by index and by output
name.  Each call runs the whole model through one native entry point; its scratch memory (the
arena) belongs to the calling thread, so one ``CompiledModel`` may be called from several Python
threads at once.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from lowering.bounds_checks import program_bounds_error, program_record
from lpjit.errors import InputError
from lpjit.frontend import read_ir
from lpjit.graph import Graph
from lpjit.passes.report import PrecisionReport
from lpjit.pipeline import Compilation, CompileOptions, PassRunner, Progress, compile_graph
from runtime.executable import BufferSpec, Executable

IRSource = str | Path | bytes | Graph


def compile(ir: IRSource, *, weights: bytes | str | Path | None = None,
            shapes: Mapping[str, Sequence[int]] | None = None, threads: int | None = None,
            low_precision: bool = True, dump_dir: str | Path | None = None,
            verify: bool = False, progress: Progress | None = None,
            checks: bool = False) -> CompiledModel:
    """Compile an OpenVINO IR for this CPU and return a callable ``CompiledModel``.

    ``ir`` is a path to an ``.xml`` (its ``.bin`` beside it), XML text (with ``weights=``, the
    ``.bin`` bytes or path), or a ``Graph``.  ``shapes`` gives concrete shapes to inputs with
    dynamic dimensions (by input name; only when reading an IR).  ``threads`` is the OpenMP
    team size (default: every core, ``os.cpu_count()``; 1 compiles serial code).
    ``low_precision`` (default) runs quantized Convolution / GroupConvolution / MatMul in exact
    integer code and keeps compressed weights low precision; ``False`` executes every
    FakeQuantize as float arithmetic (see ``CompiledModel.precision_report``).  ``dump_dir`` receives the
    IR after every pipeline step, ``verify`` runs every step's verifier, ``progress`` is called
    as steps start and end (see ``lpjit.pipeline.Progress``).  ``checks`` compiles in
    checked mode: every memory access of the generated code is guarded at run time, and an
    index outside its buffer stops the run before the access and raises ``BoundsError``
    naming the kernel, its layers, the buffer, the dimension and the index (slower code; for
    testing the compiler).
    """
    graph = _read(ir, weights, shapes)
    if threads is None:
        threads = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads={threads!r} is invalid; expected a positive integer")
    options = CompileOptions(threads=threads, low_precision=low_precision, checks=checks)
    runner = PassRunner(verify=verify, dump_dir=dump_dir, progress=progress)
    return CompiledModel(compile_graph(graph, options, runner))


def _read(ir: IRSource, weights: bytes | str | Path | None,
          shapes: Mapping[str, Sequence[int]] | None) -> Graph:
    if isinstance(ir, Graph):
        if weights is not None or shapes is not None:
            raise InputError("weights= and shapes= apply when reading an IR; a Graph already "
                             "has its constants and static shapes")
        return ir
    if not isinstance(ir, (str, Path, bytes, bytearray)):
        raise InputError(f"lpjit.compile expects a path to an .xml, XML text or a Graph, got "
                         f"{type(ir).__name__}")
    return read_ir(ir, weights, shapes=shapes)


@attrs.frozen
class TensorInfo:
    """A model input or output: its name (and every name it answers to), shape and dtype."""

    name: str
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    dtype: np.dtype = attrs.field(converter=np.dtype)
    aliases: tuple[str, ...] = ()

    def describe(self) -> str:
        """``x: float32[1,3,224,224]``."""
        return f"{self.name}: {self.dtype}[{','.join(map(str, self.shape))}]"

    def answers_to(self, name: str) -> bool:
        """True when ``name`` is this tensor's name or one of its aliases."""
        return name == self.name or name in self.aliases


@attrs.frozen
class MemoryReport:
    """Resident memory of a compiled model: constant bytes per element type, arena bytes."""

    weight_bytes: dict[str, int]
    arena_bytes: int

    @property
    def total_weight_bytes(self) -> int:
        return sum(self.weight_bytes.values())

    @classmethod
    def of(cls, program, arena_bytes: int) -> MemoryReport:
        by_type: dict[str, int] = {}
        for buffer in program.constants:
            nbytes = int(buffer.data.nbytes) if buffer.data is not None else 0
            by_type[buffer.dtype.name] = by_type.get(buffer.dtype.name, 0) + nbytes
        return cls(dict(sorted(by_type.items())), arena_bytes)

    def __str__(self) -> str:
        parts = ", ".join(f"{k}: {v} B" for k, v in self.weight_bytes.items())
        return (f"weights {self.total_weight_bytes} B ({parts or 'none'}), "
                f"arena {self.arena_bytes} B")


class ModelInterface:
    """The calling convention of a model, shared by ``CompiledModel`` and ``LoadedModel``.

    Subclasses set ``inputs`` and ``outputs`` (``TensorInfo`` tuples, model order) and
    ``executable`` (``run(arrays) -> list of output arrays``, arrays checked and in input
    order).
    """

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    executable: Any

    # -- calling ---------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Outputs:
        """Run the model on arrays given in input order, by name, or as one dict."""
        arrays = self._bind(args, kwargs)
        checked = [_checked_input(info, array) for info, array in zip(self.inputs, arrays)]
        return Outputs(self.outputs, self.executable.run(checked))

    def _bind(self, args: tuple, kwargs: dict[str, Any]) -> list[Any]:
        """Inputs in model order from positional arrays, keywords or one dict."""
        if not kwargs and len(args) == len(self.inputs) and not (
                len(args) == 1 and isinstance(args[0], Mapping)):
            return list(args)
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            kwargs, args = dict(args[0]), ()
        if len(args) > len(self.inputs):
            raise InputError(f"got {len(args)} positional inputs; the model has "
                             f"{len(self.inputs)}: {self._expected()}")
        bound: dict[int, Any] = dict(enumerate(args))
        for name, array in kwargs.items():
            index = self._input_index(name)
            if index in bound:
                raise InputError(f"input '{self.inputs[index].name}' is given twice")
            bound[index] = array
        missing = [info.name for i, info in enumerate(self.inputs) if i not in bound]
        if missing:
            raise InputError(f"missing input{'s' * (len(missing) > 1)} "
                             f"{', '.join(repr(m) for m in missing)}; expected "
                             f"{self._expected()}")
        return [bound[i] for i in range(len(self.inputs))]

    def _input_index(self, name: object) -> int:
        for index, info in enumerate(self.inputs):
            if isinstance(name, str) and info.answers_to(name):
                return index
        raise InputError(f"unknown input {name!r}; expected {self._expected()}")

    def _expected(self) -> str:
        return ", ".join(info.describe() for info in self.inputs) or "no inputs"


class CompiledModel(ModelInterface):
    """A model compiled to native code: call it with arrays, get its outputs.

    ``compiled(x, y)``, ``compiled(x=..., y=...)`` and ``compiled({"x": ..., "y": ...})`` are
    equivalent.  Inputs must have the model's shape; their dtype must equal the model's or
    convert to it without loss (``int16`` -> ``float32`` yes, ``float64`` -> ``float32`` no);
    non-contiguous arrays are copied.  Anything else raises ``InputError`` naming the input.
    """

    def __init__(self, compilation: Compilation) -> None:
        self.compilation = compilation
        graph, program = compilation.graph, compilation.program
        self.name = graph.name
        self.inputs = tuple(TensorInfo(p.origin.name, b.shape, b.dtype.numpy,
                                       tuple(p.output.names))
                            for p, b in zip(graph.parameters, program.inputs))
        self.outputs = tuple(TensorInfo(r.names[0], b.shape, b.dtype.numpy,
                                        (*r.names[1:], r.origin.name))
                             for r, b in zip(graph.results, program.outputs))
        self.threads = compilation.options.threads
        library = compilation.library
        self.executable = Executable(
            library.function_address(compilation.module.entry),
            [BufferSpec.of(b) for b in program.inputs],
            [BufferSpec.of(b) for b in program.outputs],
            compilation.plan.arena_bytes, self.threads, owner=library,
            failure=_failure_decoder(program))

    # -- inspection ------------------------------------------------------------------------
    @property
    def program(self):
        """The loop-IR ``Program`` (print it with ``lowering.program.print_program``)."""
        return self.compilation.program

    @property
    def graph(self) -> Graph:
        """The graph after the graph passes."""
        return self.compilation.graph

    @property
    def arena_bytes(self) -> int:
        """Bytes of scratch memory (every intermediate tensor, placed by lifetime) that each
        calling thread holds."""
        return self.compilation.plan.arena_bytes

    @property
    def target(self) -> str:
        """The CPU the code was generated for, with its main vector features."""
        return self.compilation.options.target.describe()

    def timings(self) -> dict[str, float]:
        """Seconds spent in each compile step, in pipeline order."""
        return {r.name: r.seconds for r in self.compilation.records}

    def precision_report(self) -> PrecisionReport:
        """Every layer's precision (``u8 x i8 -> i32 -> f32`` or ``f32``) and, for every
        FakeQuantize or compressed weight left in float, the reason.  ``print()`` it."""
        return self.compilation.precision

    def memory_report(self) -> MemoryReport:
        """Resident bytes: constants (weights) by element type, and the scratch arena."""
        return MemoryReport.of(self.compilation.program, self.compilation.plan.arena_bytes)

    def llvm_ir(self) -> str:
        """The optimised LLVM IR of the whole model (every kernel and the entry point)."""
        return self.compilation.library.llvm_ir()

    def assembly(self) -> str:
        """The machine code of the whole model as assembly text."""
        return self.compilation.library.assembly()

    def __reduce__(self):
        """Pickle as machine code: the model linked into a shared library (see
        ``lpjit.library``), which unpickles as a ``LoadedModel`` with the same calling
        interface, without compiling."""
        from lpjit.library import reduce_compiled_model

        return reduce_compiled_model(self)

    def __repr__(self) -> str:
        ins = ", ".join(info.describe() for info in self.inputs) or "(none)"
        outs = ", ".join(info.describe() for info in self.outputs)
        return (f"<CompiledModel '{self.name}'\n  inputs:  {ins}\n  outputs: {outs}\n"
                f"  target:  {self.target}, threads={self.threads}, "
                f"arena={self.arena_bytes} bytes>")


def _failure_decoder(program) -> Callable[[np.ndarray], Exception | None] | None:
    """For a checked program, the function that reads its error record after a run."""
    if program_record(program) is None:
        return None
    return functools.partial(program_bounds_error, program)


def _checked_input(info: TensorInfo, value: Any) -> np.ndarray:
    """``value`` as an array of the input's dtype and shape, converting only without loss."""
    array = np.asarray(value)
    if array.dtype != info.dtype:
        if not np.can_cast(array.dtype, info.dtype, casting="safe"):
            raise InputError(f"input '{info.name}' has dtype {array.dtype}, which does not "
                             f"convert to {info.dtype} without loss; {_expected(info)} "
                             f"(convert it with .astype(np.{info.dtype}) if the loss is "
                             "intended)")
        array = array.astype(info.dtype)
    if array.shape != info.shape:
        raise InputError(f"input '{info.name}' has shape {array.shape}; {_expected(info)}")
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _expected(info: TensorInfo) -> str:
    return f"expected {info.dtype}[{','.join(map(str, info.shape))}]"


class Outputs(Sequence):
    """A model's outputs in Result order; ``outputs[0]``, ``outputs["logits"]``, iteration,
    ``len`` and ``outputs.names``."""

    def __init__(self, infos: Sequence[TensorInfo], arrays: Sequence[np.ndarray]) -> None:
        self._infos, self._arrays = tuple(infos), tuple(arrays)

    @property
    def names(self) -> tuple[str, ...]:
        """Output names in Result order."""
        return tuple(info.name for info in self._infos)

    def __getitem__(self, key):  # type: ignore[override]
        """By position (int or slice) or by output name."""
        if isinstance(key, str):
            for info, array in zip(self._infos, self._arrays):
                if info.answers_to(key):
                    return array
            raise KeyError(f"no output named {key!r}; outputs are: {', '.join(self.names)}")
        return self._arrays[key]

    def __len__(self) -> int:
        return len(self._arrays)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._arrays)

    def to_dict(self) -> dict[str, np.ndarray]:
        """``{output name: array}`` in Result order."""
        return dict(zip(self.names, self._arrays))

    def __repr__(self) -> str:
        shown = ", ".join(f"{info.name}: {array.dtype}{list(array.shape)}"
                          for info, array in zip(self._infos, self._arrays))
        return f"<Outputs {shown}>"
