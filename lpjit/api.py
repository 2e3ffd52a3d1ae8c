"""The public compile API: ``lpjit.compile(ir) -> CompiledModel``.

A ``CompiledModel`` is called with numpy arrays (in Parameter order, by input name as keywords,
or as one dict) and returns an ``Outputs`` in Result order, addressable by index and by output
name.  Each call runs the whole model through one native entry point; its scratch memory (the
arena) belongs to the calling thread, so one ``CompiledModel`` may be called from several Python
threads at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from lowering.bounds_checks import failure_decoder
from lpjit.cache import (
    CacheEntry,
    CompileCache,
    UncacheableError,
    cache_for,
    cache_key,
    graph_digest,
    ir_digest,
)
from lpjit.errors import CodegenError, InputError
from lpjit.frontend import read_ir
from lpjit.graph import Graph
from lpjit.passes.report import PrecisionReport
from lpjit.pipeline import (
    Compilation,
    CompileOptions,
    PassRunner,
    Progress,
    StepRecord,
    compile_graph,
)
from runtime.executable import BufferSpec, Executable
from runtime.object_library import ObjectLibrary

IRSource = str | Path | bytes | Graph


def compile(ir: IRSource, *, weights: bytes | str | Path | None = None,
            shapes: Mapping[str, Sequence[int]] | None = None, threads: int | None = None,
            low_precision: bool = True, dump_dir: str | Path | None = None,
            verify: bool = False, progress: Progress | None = None,
            checks: bool = False, cache: bool | str | Path = True) -> CompiledModel:
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

    ``cache``: the on-disk compile cache (``lpjit.cache``).  ``True`` (default) uses
    ``$LPJIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lpjit``, else ``~/.cache/lpjit``; a path
    uses that directory; ``False`` neither reads nor writes it.  A hit loads the stored
    machine code without compiling (``compiled.from_cache``); ``dump_dir``, ``verify`` and
    ``checks`` always compile (and store the result).
    """
    store = cache_for(cache, os.environ)          # the one place the environment is read
    if threads is None:
        threads = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads={threads!r} is invalid; expected a positive integer")
    options = CompileOptions(threads=threads, low_precision=low_precision, checks=checks)
    runner = PassRunner(verify=verify, dump_dir=dump_dir, progress=progress)
    use_cache = store is not None and not checks
    key = _cache_key(ir, weights, shapes, options) if use_cache else None
    if key is not None and dump_dir is None and not verify:
        cached = _load_cached(store, key, lambda: compile_graph(_read(ir, weights, shapes),
                                                                options), progress)
        if cached is not None:
            return cached
    model = CompiledModel(compile_graph(_read(ir, weights, shapes), options, runner))
    if key is not None:
        model.cache_entry = store.store(key, model.cache_contents())
    return model


def clear_cache(cache: bool | str | Path = True) -> int:
    """Remove every entry of the compile cache (``True``: the default directory, as for
    ``compile``; or a directory); returns how many were removed."""
    store = cache_for(cache, os.environ)
    return store.clear() if store is not None else 0


def _cache_key(ir: IRSource, weights, shapes, options: CompileOptions) -> str | None:
    """The cache key of this compile, or None when the source cannot be hashed (a missing
    file: the compile then reports it; a value without a canonical form)."""
    if not isinstance(ir, (str, Path, bytes, bytearray, Graph)):
        return None
    try:
        if isinstance(ir, Graph):
            digest = graph_digest(_read(ir, weights, shapes))
        else:
            digest = ir_digest(ir, weights, shapes)
        return cache_key(digest, options)
    except (OSError, UncacheableError):
        return None


def _load_cached(store: CompileCache, key: str, recompile: Callable[[], Compilation],
                 progress: Progress | None) -> CompiledModel | None:
    """The model stored under ``key``, loaded without compiling, or None (miss).  A hit is
    reported to ``progress`` as one step, ``load_from_cache``."""
    start = time.perf_counter()
    entry = store.load(key)
    if entry is None or not isinstance(entry.description, ModelDescription):
        return None
    try:
        library = ObjectLibrary(entry.code, entry.symbols, entry.externals,
                                parts=entry.parts)
    except CodegenError:
        return None
    model = CompiledModel.from_library(entry.description, library, recompile)
    model.cache_entry = store.entry_path(key)
    if progress is not None:
        progress("load_from_cache", 0, None)
        progress("load_from_cache", 0, StepRecord("load_from_cache",
                                                  time.perf_counter() - start))
    return model


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


@attrs.frozen
class ModelDescription:
    """What a ``CompiledModel`` knows besides its machine code: its interface, the entry
    point's buffers and arena, the reports and compile timings.  The compile cache stores it
    beside the object code."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    input_buffers: tuple[BufferSpec, ...]
    output_buffers: tuple[BufferSpec, ...]
    arena_bytes: int
    threads: int
    entry: str
    target: str
    precision: PrecisionReport
    memory: MemoryReport
    timings: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, compilation: Compilation) -> ModelDescription:
        graph, program = compilation.graph, compilation.program
        inputs = tuple(TensorInfo(p.origin.name, b.shape, b.dtype.numpy, tuple(p.output.names))
                       for p, b in zip(graph.parameters, program.inputs))
        outputs = tuple(TensorInfo(r.names[0], b.shape, b.dtype.numpy,
                                   (*r.names[1:], r.origin.name))
                        for r, b in zip(graph.results, program.outputs))
        return cls(graph.name, inputs, outputs, tuple(BufferSpec.of(b) for b in program.inputs),
                   tuple(BufferSpec.of(b) for b in program.outputs),
                   compilation.plan.arena_bytes, compilation.options.threads,
                   compilation.module.entry, compilation.options.target.describe(),
                   compilation.precision,
                   MemoryReport.of(program, compilation.plan.arena_bytes),
                   tuple((r.name, r.seconds) for r in compilation.records))


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
    non-contiguous or misaligned arrays are copied.  Anything else (a missing, unknown or
    surplus input, another shape, a lossy dtype) raises ``InputError`` naming the input and
    the expected shape and dtype.
    """

    from_cache = False
    """True when the machine code was loaded from the compile cache, not compiled."""
    cache_entry: Path | None = None
    """The compile cache entry the model was stored to or loaded from (None: not cached)."""

    def __init__(self, compilation: Compilation) -> None:
        self._compilation: Compilation | None = compilation
        self._recompile: Callable[[], Compilation] | None = None
        self._setup(ModelDescription.of(compilation), compilation.library,
                    failure_decoder(compilation.program))

    @classmethod
    def from_library(cls, description: ModelDescription, library: Any,
                     recompile: Callable[[], Compilation]) -> CompiledModel:
        """A model over machine code loaded from the compile cache (``library`` has
        ``function_address``).  ``recompile()`` makes its ``Compilation`` when an inspection
        method first needs it (``program``, ``graph``, ``llvm_ir``, profiling, pickling)."""
        model = cls.__new__(cls)
        model._compilation, model._recompile = None, recompile
        model._setup(description, library, None)
        model.from_cache = True
        return model

    def _setup(self, description: ModelDescription, library: Any,
               failure: Callable[[np.ndarray], Exception | None] | None) -> None:
        self.description = description
        self.name, self.threads = description.name, description.threads
        self.inputs, self.outputs = description.inputs, description.outputs
        self.executable = Executable(
            library.function_address(description.entry), description.input_buffers,
            description.output_buffers, description.arena_bytes, self.threads,
            owner=library, failure=failure)

    @property
    def compilation(self) -> Compilation:
        """Everything the compile produced (a model loaded from the cache compiles its
        source again on first use; pass ``cache=False`` when inspecting is the point)."""
        if self._compilation is None:
            self._compilation = self._recompile()
        return self._compilation

    def cache_contents(self) -> CacheEntry:
        """What the compile cache stores: the description, the object code MCJIT loaded,
        the constants it binds by symbol and the other symbols it calls."""
        library = self.compilation.library
        symbols = library.lowered.symbols if library.lowered is not None else ()
        return CacheEntry(self.description, library.object_code(), tuple(symbols),
                          library.declared_functions(), library.part_objects)

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
        return self.description.arena_bytes

    @property
    def target(self) -> str:
        """The CPU the code was generated for, with its main vector features."""
        return self.description.target

    def timings(self) -> dict[str, float]:
        """Seconds spent in each compile step, in pipeline order (for a model loaded from
        the cache: the steps of the compile that made the code)."""
        return dict(self.description.timings)

    def precision_report(self) -> PrecisionReport:
        """Every layer's precision (``u8 x i8 -> i32 -> f32`` or ``f32``) and, for every
        FakeQuantize or compressed weight left in float, the reason.  ``print()`` it."""
        return self.description.precision

    def memory_report(self) -> MemoryReport:
        """Resident bytes: constants (weights) by element type, and the scratch arena."""
        return self.description.memory

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


def _checked_input(info: TensorInfo, value: Any) -> np.ndarray:
    """``value`` as an array of the input's dtype and shape, converting only without loss;
    C-contiguous and aligned to its element size (a strided, reversed, Fortran-order or
    misaligned array, e.g. one starting at an odd byte of a buffer, is copied)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"input '{info.name}' is not an array ({error}); "
                         f"{_expected(info)}") from None
    if array.dtype != info.dtype:
        if not np.can_cast(array.dtype, info.dtype, casting="safe"):
            raise InputError(f"input '{info.name}' has dtype {array.dtype}, which does not "
                             f"convert to {info.dtype} without loss; {_expected(info)} "
                             f"(convert it with .astype(np.{info.dtype}) if the loss is "
                             "intended)")
        array = array.astype(info.dtype)
    if array.shape != info.shape:
        raise InputError(f"input '{info.name}' has shape {array.shape}; {_expected(info)}")
    return np.require(array, requirements=("C_CONTIGUOUS", "ALIGNED"))


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
