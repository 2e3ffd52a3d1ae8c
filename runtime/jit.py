"""LLVM code libraries: one compile path up to the object file, then JIT (or, later, AOT).

Modelled on numba's ``codegen.py``: a ``CPUCodegen`` owns a target (CPU name + features) and
its optimisation pipeline and turns LLVM IR into a ``CodeLibrary`` (parsed, verified, O3
optimised; assembly, object code, IR text).  ``JitEngine`` is the host-CPU codegen whose
libraries (``JitLibrary``) are loaded by MCJIT and hand out callable kernels.  A codegen for
another CPU name (``TargetSpec.for_cpu("icelake-server")``) compiles for inspection only.

Threads come from OpenMP: ``initialize_llvm`` loads ``libgomp`` permanently so generated
code can call ``GOMP_parallel``; without it, parallel loops are compiled serial.

``initialize_llvm`` also bounds dead store elimination's MemorySSA walk
(``LLVM_OPTIONS``): kernels that store a vector lane by lane (a channel-vectorized tile
written to NCHW) hold hundreds of stores per block, and DSE's default walk of 90 steps from
each made it half of the O3 pipeline's time (2.4 of 4.6 s on ResNet-18 INT8) without
finding anything to remove there: the optimised IR is identical.  The option is process-wide
(it also applies to numba in the same process): it only makes DSE give up earlier.

The same options turn off the post-RA list scheduler, which the Zen CPUs enable: it reordered
the already machine-scheduled kernels for 13 % of the machine-code emission time (ResNet-18
INT8: 1.6-1.7 of 4.0 s of LLVM time on one thread went to emission, 0.3 s less without it),
and the out-of-order cores do not notice (inference latency unchanged, within noise).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Sequence

import attrs
import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from lowering.abi import bind_arguments
from lowering.bounds_checks import raise_recorded_failure
from lowering.codegen_llvm import CodegenOptions, LoweredModule, lower_kernels_to_llvm
from lowering.loop_ir import OPTIMIZATION_LEVELS, Buffer, Kernel
from lpjit.errors import CodegenError
from runtime.parallel_compile import CompiledPart, ParallelCompiler, compile_part

# Features implied by CPU names we compile for without running (the host reports its own).
_AVX2 = frozenset({"sse2", "ssse3", "sse4.1", "avx", "avx2", "fma", "f16c"})
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
_VNNI512 = _AVX512 | {"avx512vnni"}
CPU_FEATURES: dict[str, frozenset[str]] = {
    "x86-64": frozenset({"sse2"}),
    "haswell": _AVX2, "broadwell": _AVX2, "skylake": _AVX2,
    "znver1": _AVX2, "znver2": _AVX2, "znver3": _AVX2,
    "alderlake": _AVX2 | {"avxvnni"},
    "skylake-avx512": _AVX512,
    "cascadelake": _VNNI512, "icelake-client": _VNNI512, "icelake-server": _VNNI512,
    "tigerlake": _VNNI512, "sapphirerapids": _VNNI512 | {"avxvnni"},
    "znver4": _VNNI512, "znver5": _VNNI512,
}


LLVM_OPTIONS = ("-dse-memoryssa-walklimit=16", "-post-RA-scheduler=false")
"""LLVM command-line options set once per process (module docstring)."""


# libgomp's threads spin this many rounds at a barrier before sleeping (its default, 300000,
# is milliseconds).  Inside an inference the next parallel loop starts within microseconds, so a
# short spin keeps the team hot; a longer one burns the CPU time the scheduler then withholds
# when another process shares the cores, and every barrier waits a time slice for the
# descheduled thread (MobileNetV2 INT8, 2 threads, one core busy elsewhere: 704 ms per inference
# with libgomp's default, 1.9 ms with this; bench/README.md).
GOMP_SPIN_COUNT = 20000


# The "cleanup" pipeline (``CPUCodegen.optimize``): promote locals (SROA), fold constants and
# branches on them (SCCP, jump threading), put loops in rotated form and delete empty ones,
# merge redundant values (GVN), combine instructions and simplify the control flow.
CLEANUP_PASSES = ("instruction_combine", "simplify_cfg", "sroa", "sccp", "jump_threading",
                  "simplify_cfg", "loop_rotate", "loop_deletion", "new_gvn",
                  "instruction_combine", "simplify_cfg", "aggressive_dce")


def _default_spin_count(environ) -> None:
    """Set ``GOMP_SPINCOUNT`` before libgomp reads its environment, unless the user chose a
    wait policy (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``)."""
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = str(GOMP_SPIN_COUNT)


@functools.cache
def initialize_llvm() -> bool:
    """Initialise LLVM's native target once, set ``LLVM_OPTIONS``; load libgomp.  Returns
    True if OpenMP is usable."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    for option in LLVM_OPTIONS:
        llvm.set_option("lpjit", option)
    # Kernels call libm (erf, expf, ...): make its symbols visible to LLVM's own lookup, which
    # the missing-symbol check in JitLibrary uses (it does not search the process's libraries).
    for candidate in (ctypes.util.find_library("m"), "libm.so.6"):
        if candidate:
            try:
                llvm.load_library_permanently(candidate)
                break
            except RuntimeError:
                continue
    _default_spin_count(os.environ)
    for candidate in (ctypes.util.find_library("gomp"), "libgomp.so.1"):
        if not candidate:
            continue
        try:
            _pin_library(candidate)
            llvm.load_library_permanently(candidate)
        except (OSError, RuntimeError):
            continue
        return llvm.address_of_symbol("GOMP_parallel") is not None
    return False


_PINNED: list[ctypes.CDLL] = []


def _pin_library(name: str) -> None:
    """Open ``name`` with ``RTLD_NODELETE`` so that it stays mapped until the process ends.

    LLVM closes the libraries it loaded "permanently" in an exit handler, and libgomp's
    threads may still be spinning in libgomp's code then (after the last parallel loop, for
    ``GOMP_SPINCOUNT`` rounds, or for ever with ``OMP_WAIT_POLICY=active``): unmapping it
    under them crashed the process at exit (SIGSEGV)."""
    mode = os.RTLD_GLOBAL | getattr(os, "RTLD_NODELETE", 0)
    _PINNED.append(ctypes.CDLL(name, mode=mode))


@attrs.frozen
class TargetSpec:
    """A CPU to compile for: LLVM CPU name, feature string (empty = the CPU's defaults) and
    target triple (empty = this process's; another architecture only emits object code)."""

    cpu: str
    features: str = ""
    triple: str = ""

    @classmethod
    def host(cls) -> TargetSpec:
        initialize_llvm()
        return cls(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())

    @classmethod
    def for_cpu(cls, cpu: str) -> TargetSpec:
        """A named CPU (``skylake-avx512``, ``icelake-server``, ``znver3``) with its defaults."""
        return cls(cpu, "")

    @property
    def is_host(self) -> bool:
        return self == TargetSpec.host()

    @property
    def feature_set(self) -> frozenset[str]:
        """Enabled features: parsed from ``features``, else looked up by CPU name."""
        if self.features:
            return frozenset(f[1:] for f in self.features.split(",") if f.startswith("+"))
        return CPU_FEATURES.get(self.cpu, frozenset())

    def target_machine(self, opt_level: int = 3, jit: bool = False) -> llvm.TargetMachine:
        initialize_llvm()
        if self.triple:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
        target = llvm.Target.from_triple(self.triple or llvm.get_process_triple())
        # Ahead of time: position-independent code, so that a shared object can be linked.
        # JIT: absolute addresses (the JIT's large code model reaches anywhere), which MCJIT
        # relocates correctly across several objects (its GOT-relative relocations do not).
        return target.create_target_machine(cpu=self.cpu, features=self.features, opt=opt_level,
                                            reloc="static" if jit else "pic",
                                            codemodel="jitdefault", jit=jit)


class CodeLibrary:
    """Compiled LLVM IR for one target: verified, optimised, printable as IR and assembly.

    A ``LoweredModule`` emitted in parts has its parts compiled separately (by ``parts``, the
    ``ParallelCompiler`` that received them while they were emitted, else here) and its main
    module (the entry point) optimised here.  The parts' optimised bitcode is linked into the
    main module, at once, or, when the parts were compiled to machine code
    (``CPUCodegen.part_objects``), only if ``module`` is asked for (inspection, pickling).
    """

    def __init__(self, codegen: CPUCodegen, source: LoweredModule | ir.Module | str,
                 parts: ParallelCompiler | None = None) -> None:
        self.codegen = codegen
        self.lowered = lowered = source if isinstance(source, LoweredModule) else None
        text = str(lowered.ir_module if lowered is not None else source)
        part_texts, part_levels, level = ((lowered.parts, lowered.part_levels, lowered.level)
                                          if lowered is not None else ((), (), "full"))
        self.unoptimized_ir = "\n".join((text, *part_texts))
        self.main = codegen.parse_and_optimize(text, level)
        machine = codegen.part_machine() if part_texts and parts is None else None
        self.parts: tuple[CompiledPart, ...] = tuple(
            parts.finish() if parts is not None
            else [compile_part(codegen, part, machine, level) for part, level
                  in zip(part_texts, part_levels, strict=True)])
        self._module = None if self.part_objects else self._linked(self.main)

    @property
    def part_objects(self) -> tuple[bytes, ...]:
        """The machine code of the parts, when they were compiled to objects."""
        return tuple(p.object for p in self.parts if p.object is not None)

    @property
    def module(self) -> llvm.ModuleRef:
        """The whole optimised program as one LLVM module."""
        if self._module is None:
            self._module = self._linked(llvm.parse_bitcode(self.main.as_bitcode()))
        return self._module

    def _linked(self, module: llvm.ModuleRef) -> llvm.ModuleRef:
        for part in self.parts:
            try:
                module.link_in(llvm.parse_bitcode(part.bitcode))
            except RuntimeError as error:
                raise CodegenError(f"LLVM could not link the generated modules: {error}"
                                   ) from None
        module.verify()
        return module

    def declared_functions(self) -> tuple[str, ...]:
        """Functions the code calls but does not define (LLVM intrinsics aside)."""
        return self._declared(lambda m: m.functions, lambda p: p.declared_functions)

    def declared_globals(self) -> tuple[str, ...]:
        """Global variables the code reads but does not define (constants bound by symbol)."""
        return self._declared(lambda m: m.global_variables, lambda p: p.declared_globals)

    def _declared(self, of_module, of_part) -> tuple[str, ...]:
        defined = {v.name for m in self._modules() for v in of_module(m) if not v.is_declaration}
        names = [v.name for m in self._modules() for v in of_module(m) if v.is_declaration]
        if self._module is None:
            names += [name for part in self.parts for name in of_part(part)]
            defined |= self._part_definitions()
        out = dict.fromkeys(n for n in names if not n.startswith("llvm.") and n not in defined)
        return tuple(out)

    def _modules(self) -> tuple[llvm.ModuleRef, ...]:
        return (self._module if self._module is not None else self.main,)

    def _part_definitions(self) -> set[str]:
        """Names the parts define: every kernel the main module declares from them."""
        kernels = self.lowered.kernels if self.lowered is not None else ()
        return {k.name for k in kernels}

    def llvm_ir(self) -> str:
        """The optimised LLVM IR."""
        return str(self.module)

    def assembly(self) -> str:
        """The machine code as assembly text."""
        return self.codegen.target_machine.emit_assembly(self.module)

    def object_code(self) -> bytes:
        """The relocatable object file (the point where JIT and AOT part ways)."""
        return self.codegen.target_machine.emit_object(self.module)


class CPUCodegen:
    """Compiles LLVM modules for one ``TargetSpec`` at optimisation level ``opt_level``.

    ``part_objects``: the parts of a program are compiled to machine code on the workers
    (a JIT loads several objects); otherwise they are linked into one module first."""

    library_class: type[CodeLibrary] = CodeLibrary
    part_objects = False
    _jit = False

    def __init__(self, target: TargetSpec | None = None, opt_level: int = 3) -> None:
        self.openmp = initialize_llvm()
        self.target = target or TargetSpec.host()
        self.opt_level = opt_level
        self.target_machine = self.target.target_machine(opt_level, jit=self._jit)

    def codegen_options(self, **overrides) -> CodegenOptions:
        """Options for ``lower_kernels_to_llvm`` matching this target."""
        values = {"features": self.target.feature_set, "openmp": self.openmp,
                  "triple": self.target_machine.triple,
                  "data_layout": str(self.target_machine.target_data)}
        return CodegenOptions(**{**values, **overrides})

    def parse_and_optimize(self, text: str, level: str = "full") -> llvm.ModuleRef:
        """LLVM IR text parsed, verified, given this target and optimised (for ``level``,
        see ``optimize``)."""
        try:
            module = llvm.parse_assembly(text)
            module.verify()
        except RuntimeError as error:
            raise CodegenError(f"LLVM rejected the generated module: {error}") from None
        module.triple = self.target_machine.triple
        module.data_layout = str(self.target_machine.target_data)
        self.optimize(module, level=level)
        return module

    def part_machine(self) -> llvm.TargetMachine:
        """A target machine of this codegen's kind for one worker thread."""
        return self.target.target_machine(self.opt_level, jit=self._jit)

    def parallel_compiler(self, workers: int | None = None) -> ParallelCompiler:
        """Worker threads compiling a program's parts for this codegen as they are
        submitted (``runtime.parallel_compile``)."""
        return ParallelCompiler(self, workers)

    def optimize(self, module: llvm.ModuleRef, machine: llvm.TargetMachine | None = None,
                 run: Callable[[llvm.ModulePassManager, llvm.ModuleRef, llvm.PassBuilder],
                               None] | None = None,
                 level: str = "full") -> None:
        """Optimise ``module`` for ``level`` (``Kernel.optimization``).

        "full": the O3 module pipeline; LLVM's own vectorizers and loop unroller stay off (the
        schedule decides: a loop it leaves rolled stays rolled).  The unroller copied loops
        of three to four dot-product steps (3x3 convolutions), 8 % of ResNet-18 INT8's
        assembly and 0.3 s of its LLVM time, for no measurable change in speed.

        "cleanup": ``CLEANUP_PASSES``, for kernels whose loop IR is already their schedule.
        On ResNet-18 INT8 (its convolutions) it optimises in 0.75 s instead of O3's 2.2 s;
        the code runs at the same speed (9.31 against 9.26 ms, per step within 1 % but for
        layer4.1's exact-chain epilogue, +7 %).  It is no good for loops the loop IR leaves
        to LLVM: MobileNetV2's depthwise kernels (byte-filling loops O3 turns into ``memset``,
        broadcasts LICM hoists) ran up to 2.5 times slower under it, so they stay "full".

        ``machine``: the target machine to tune for (default: this codegen's); ``run``:
        how to run the pipeline (default: llvmlite's locked call).

        llvmlite 0.50 leaks about 60-80 KB of C heap per run (its pass builder's
        ``PassInstrumentationCallbacks`` is never freed); ``tests/runtime/test_resources.py``
        measures it and checks that lpjit itself adds nothing to it."""
        tuning = llvm.create_pipeline_tuning_options(speed_level=self.opt_level)
        tuning.loop_vectorization = False
        tuning.slp_vectorization = False
        tuning.loop_unrolling = False
        builder = llvm.create_pass_builder(machine or self.target_machine, tuning)
        if level == "full":
            manager = builder.getModulePassManager()
        elif level == "cleanup":
            manager = llvm.create_new_module_pass_manager()
            for name in CLEANUP_PASSES:
                getattr(manager, f"add_{name}_pass")()
        else:
            raise ValueError(f"unknown optimisation level {level!r}, expected one of "
                             f"{OPTIMIZATION_LEVELS}")
        if run is None:
            manager.run(module, builder)
        else:
            run(manager, module, builder)

    def add_module(self, source: LoweredModule | ir.Module | str,
                   parts: ParallelCompiler | None = None) -> CodeLibrary:
        """Compile ``source`` into a library of this codegen's kind (``parts``: the compiler
        its parts were submitted to, see ``CodeLibrary``)."""
        return self.library_class(self, source, parts)

    def compile_kernels(self, kernels: Sequence[Kernel], **options) -> CodeLibrary:
        """Lower ``kernels`` to LLVM for this target and compile them."""
        return self.add_module(lower_kernels_to_llvm(kernels, self.codegen_options(**options)))


class JitLibrary(CodeLibrary):
    """A library loaded into the process by MCJIT: function addresses and callables."""

    def __init__(self, codegen: JitEngine, source: LoweredModule | ir.Module | str,
                 parts: ParallelCompiler | None = None) -> None:
        super().__init__(codegen, source, parts)
        symbols = self.lowered.symbols if self.lowered is not None else ()
        # Checked before anything is registered: MCJIT would bind a missing symbol to 0 and
        # the first call would jump there.
        missing = unresolved_symbols(self.declared_functions() + self.declared_globals(),
                                     {name for name, _ in symbols})
        if missing:
            raise CodegenError(f"the compiled module refers to {', '.join(missing)}, which "
                               "this process does not define (a missing runtime library?)")
        self._keep_alive: list[np.ndarray] = []
        for name, data in symbols:
            self._keep_alive.append(data)
            llvm.add_symbol(name, data.ctypes.data)
        # The engine takes ownership of its target machine: give it its own.
        machine = codegen.target.target_machine(codegen.opt_level, jit=True)
        loaded = self.main if self._module is None else self._module
        self.engine = llvm.create_mcjit_compiler(loaded, machine)
        # Keep the object MCJIT emits (for the compile cache); the callback holds no `self`.
        emitted: list[bytes] = []
        self.engine.set_object_cache(lambda module, code: emitted.append(code))
        try:
            for code in self.part_objects:
                self.engine.add_object_file(llvm.ObjectFileRef.from_data(code))
            self.engine.finalize_object()
        except RuntimeError as error:
            raise CodegenError(f"MCJIT rejected the compiled code: {error}") from None
        self._object = emitted[0] if emitted else None

    def object_code(self) -> bytes:
        """The relocatable object MCJIT emitted for the main module (JIT code model), as
        emitted once; the parts' objects are ``part_objects``."""
        if self._object is not None:
            return self._object
        return self.codegen.target_machine.emit_object(
            self.main if self._module is None else self._module)

    def function_address(self, name: str) -> int:
        address = self.engine.get_function_address(name)
        if not address:
            raise CodegenError(f"no function '{name}' in the compiled library")
        return address

    def get_function(self, name: str) -> KernelFunction:
        """The kernel ``name`` as a Python callable over numpy arrays."""
        if self.lowered is None:
            raise CodegenError("get_function needs a library built from loop-IR kernels; use "
                               "function_address for raw LLVM modules")
        return KernelFunction(self, self.lowered.kernel(name), self.function_address(name))


def unresolved_symbols(declared: Sequence[str], provided: set[str]) -> list[str]:
    """The names in ``declared`` that neither ``provided`` nor this process defines (LLVM
    intrinsics aside), in order."""
    return [name for name in declared if not name.startswith("llvm.") and name not in provided
            and llvm.address_of_symbol(name) is None]


class JitEngine(CPUCodegen):
    """The host CPU's codegen: its libraries run in this process."""

    library_class = JitLibrary
    part_objects = True
    _jit = True

    def __init__(self, opt_level: int = 3) -> None:
        super().__init__(TargetSpec.host(), opt_level)


_SCALAR_CTYPES = {"i1": ctypes.c_bool, "i8": ctypes.c_int8, "u8": ctypes.c_uint8,
                  "i16": ctypes.c_int16, "u16": ctypes.c_uint16, "i32": ctypes.c_int32,
                  "i64": ctypes.c_int64, "f32": ctypes.c_float, "f64": ctypes.c_double}


class KernelFunction:
    """A compiled kernel: call with arrays/scalars in parameter order (see ``lowering.abi``)."""

    def __init__(self, library: JitLibrary, kernel: Kernel, address: int) -> None:
        self.library, self.kernel, self.address = library, kernel, address
        argtypes = [ctypes.c_void_p if isinstance(p, Buffer) else _SCALAR_CTYPES[p.type.name]
                    for p in kernel.params] + [ctypes.c_int32]
        self._function = ctypes.CFUNCTYPE(None, *argtypes)(address)

    def __call__(self, *args: object, threads: int | None = None) -> None:
        """Run the kernel; ``threads`` is the OpenMP team size (default: all cores)."""
        bound = bind_arguments(self.kernel, args)
        raw = [value.ctypes.data if isinstance(value, np.ndarray) else value.item()
               for value in bound]
        team = (os.cpu_count() or 1) if threads is None else int(threads)
        self._function(*raw, team)
        raise_recorded_failure(self.kernel, bound)

    def __repr__(self) -> str:
        return f"<KernelFunction {self.kernel.name} at {self.address:#x}>"
