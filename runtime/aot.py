"""Ahead-of-time code libraries: object code plus its constant data, linked into a ``.so``.

``AotCodegen`` is the ``CPUCodegen`` of an ``ExportTarget`` (the host, an x86-64 ISA level, or
another architecture).  Its ``AotLibrary`` shares everything with the JIT's library up to the
object file; then, instead of MCJIT, it hands out an ``ObjectCode``: the relocatable object
and the constants the code reads through external symbols (the weights; small constants are
already inside the object).  ``ObjectCode.of`` makes the same from a JIT library, which is how
a compiled model is pickled.  ``write_library_sources`` and ``link_shared_library`` finish:

1. ``<name>.o``: the object file as LLVM emitted it (position-independent code);
2. ``<name>_weights.bin`` and ``<name>_weights.S``: the constants as one raw blob, and an
   assembly file defining each constant's symbol (64-byte aligned, hidden) over its slice of
   the blob with ``.incbin``.  No LLVM IR text or C array literal is ever made of the weights,
   so export time does not grow with them;
3. ``<name>_runtime.c`` and ``<name>.h``: the C runtime (``runtime.c_library``);
4. ``cc -shared`` over the three, with a version script exporting only ``lpjit_<name>_*``
   (kernels and weights stay local, so two libraries never clash), libgcc linked statically,
   and ``libgomp`` only when the code calls it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import attrs
import llvmlite.binding as llvm
import numpy as np

from lowering.codegen_llvm import LoweredModule
from lowering.target import Target
from lpjit.errors import ExportError
from runtime.c_library import LibraryInterface, render_header, render_runtime
from runtime.cpu_features import ISA_LEVELS, checked_features
from runtime.jit import CodeLibrary, CPUCodegen, JitLibrary, TargetSpec, initialize_llvm
from runtime.parallel_compile import ParallelCompiler

OPENMP_SYMBOLS = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
X86_64_TRIPLE = "x86_64-unknown-linux-gnu"
AARCH64_TRIPLE = "aarch64-unknown-linux-gnu"
TARGET_NAMES = ("native", *[n for n in ISA_LEVELS if n != "x86-64"], "aarch64-linux-gnu")


@attrs.frozen
class ExportTarget:
    """What a library is compiled for: a name, LLVM triple, CPU and enabled features.

    ``llvm_features`` is the feature string given to LLVM (``+avx2,+fma,...``; for the host,
    LLVM's own ``+``/``-`` list, so that its code is the JIT's).
    """

    name: str
    triple: str
    cpu: str
    features: frozenset[str] = attrs.field(converter=frozenset)
    llvm_features: str = ""

    @classmethod
    def named(cls, name: str) -> ExportTarget:
        """``native``, ``x86-64-v2``, ``x86-64-v3``, ``x86-64-v4`` or ``aarch64-linux-gnu``."""
        if name == "native":
            host = TargetSpec.host()
            return cls(name, llvm.get_process_triple(), host.cpu, host.feature_set,
                       host.features)
        if name in ISA_LEVELS and name != "x86-64":
            return cls(name, X86_64_TRIPLE, name, ISA_LEVELS[name], _feature_string(
                ISA_LEVELS[name]))
        if name in ("aarch64-linux-gnu", "aarch64"):
            return cls("aarch64-linux-gnu", AARCH64_TRIPLE, "generic", {"neon", "fp-armv8"},
                       "+neon,+fp-armv8")
        raise ExportError(f"unknown export target '{name}'; expected one of "
                          f"{', '.join(TARGET_NAMES)}")

    def with_features(self, extra: Sequence[str]) -> ExportTarget:
        """This target with ``extra`` features enabled as well (named ``<name>+<f>...``)."""
        features = self.features | set(extra)
        added = "".join(f"+{f}" for f in sorted(set(extra) - self.features))
        prefix = f"{self.llvm_features}," if self.llvm_features else ""
        return ExportTarget(f"{self.name}{added}", self.triple, self.cpu, features,
                            prefix + _feature_string(set(extra)))

    @property
    def architecture(self) -> str:
        """``x86_64`` or ``aarch64``."""
        return self.triple.split("-")[0]

    @property
    def runs_here(self) -> bool:
        """True when this machine can link and load the library (same architecture)."""
        return self.architecture == llvm.get_process_triple().split("-")[0]

    @property
    def required_features(self) -> tuple[str, ...]:
        """The features the library checks at create time (x86 features ``cpuid`` reports)."""
        return checked_features(self.features) if self.architecture == "x86_64" else ()

    def spec(self) -> TargetSpec:
        """The ``TargetSpec`` the code generator uses."""
        native = self.triple == llvm.get_process_triple()
        return TargetSpec(self.cpu, self.llvm_features, "" if native else self.triple)

    def lowering_target(self) -> Target:
        """The ``Target`` schedules are chosen for (vector width, instruction choices)."""
        return Target(self.cpu, self.features)

    def describe(self) -> str:
        return f"{self.name} ({self.cpu}, {self.triple})"


def _feature_string(features: set[str] | frozenset[str]) -> str:
    return ",".join(f"+{f}" for f in sorted(features))


def check_target_available(target: ExportTarget) -> None:
    """Raise ``ExportError`` when this llvmlite cannot generate code for ``target``."""
    initialize_llvm()
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    try:
        llvm.Target.from_triple(target.triple)
    except RuntimeError as error:
        raise ExportError(f"target {target.describe()}: this llvmlite build cannot generate "
                          f"code for it ({error}); export for an x86-64 target "
                          "instead") from None


@attrs.frozen(eq=False)
class ObjectCode:
    """A program's relocatable machine code and the constants it references by symbol."""

    code: bytes
    symbols: tuple[tuple[str, np.ndarray], ...]
    openmp: bool

    @classmethod
    def of(cls, library: CodeLibrary) -> ObjectCode:
        """The object code of ``library``; a JIT library's module is emitted again by a
        non-JIT target machine (small code model), from a copy."""
        if isinstance(library, JitLibrary):
            machine = library.codegen.target.target_machine(library.codegen.opt_level)
            code = machine.emit_object(hide_definitions(
                llvm.parse_bitcode(library.module.as_bitcode())))
        else:
            hide_definitions(library.module)
            code = library.object_code()
        symbols = library.lowered.symbols if library.lowered is not None else ()
        return cls(code, tuple(symbols), uses_openmp(library.module))

    @property
    def constant_bytes(self) -> int:
        """Bytes of the constants bound by symbol."""
        return sum(int(data.nbytes) for _, data in self.symbols)


def hide_definitions(module: llvm.ModuleRef) -> llvm.ModuleRef:
    """Give every function and variable ``module`` defines hidden visibility: a shared
    library exports none of them (only its C API), and calls between them are direct."""
    for value in (*module.functions, *module.global_variables):
        if not value.is_declaration and value.linkage.name not in ("private", "internal"):
            value.visibility = "hidden"
    return module


def uses_openmp(module: llvm.ModuleRef) -> bool:
    """True when ``module`` calls the OpenMP runtime."""
    return any(f.name in OPENMP_SYMBOLS for f in module.functions if f.is_declaration)


class AotLibrary(CodeLibrary):
    """A library compiled for an ``ExportTarget``: its object code, for a shared library."""

    def __init__(self, codegen: AotCodegen, source: LoweredModule,
                 parts: ParallelCompiler | None = None) -> None:
        super().__init__(codegen, source, parts)
        self.export_target = codegen.export_target

    def object(self) -> ObjectCode:
        """The object file and the constants it needs."""
        return ObjectCode.of(self)


class AotCodegen(CPUCodegen):
    """Compiles for an ``ExportTarget``; ``openmp`` says whether parallel loops call OpenMP."""

    library_class = AotLibrary

    def __init__(self, target: ExportTarget, openmp: bool, opt_level: int = 3) -> None:
        check_target_available(target)
        super().__init__(target.spec(), opt_level)
        self.export_target = target
        self.openmp = openmp


# -- the shared library ------------------------------------------------------------------------


@attrs.frozen
class LibrarySources:
    """The files ``cc`` links into ``lib<name>.so`` (all in one directory)."""

    directory: Path
    object_file: Path
    weights: Path
    weights_assembly: Path
    runtime: Path
    header: Path

    @property
    def inputs(self) -> tuple[Path, ...]:
        """What goes on the compiler's command line, in link order."""
        return (self.runtime, self.object_file, self.weights_assembly)


def write_library_sources(obj: ObjectCode, interface: LibraryInterface,
                          directory: Path) -> LibrarySources:
    """Write the object, the weights (blob + assembly), the C runtime and the header."""
    name = interface.name
    directory.mkdir(parents=True, exist_ok=True)
    sources = LibrarySources(directory, directory / f"{name}.o",
                             directory / f"{name}_weights.bin",
                             directory / f"{name}_weights.S",
                             directory / f"{name}_runtime.c", directory / f"{name}.h")
    sources.object_file.write_bytes(obj.code)
    sources.weights_assembly.write_text(write_weights(obj.symbols, sources.weights))
    sources.header.write_text(render_header(interface))
    sources.runtime.write_text(render_runtime(interface))
    return sources


def write_weights(symbols: Sequence[tuple[str, np.ndarray]], blob: Path) -> str:
    """Write every constant to ``blob`` back to back; return the assembly defining them."""
    lines = [f"/* Constants of the generated code: slices of {blob.name}. */",
             '\t.section .rodata.lpjit_weights,"a",%progbits']
    offset = 0
    with blob.open("wb") as out:
        for symbol, data in symbols:
            _check_symbol(symbol)
            raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            out.write(memoryview(raw))
            size = max(raw.size, 1)
            lines += ["\t.balign 64", f'\t.globl "{symbol}"', f'\t.hidden "{symbol}"',
                      f'\t.type "{symbol}", %object',
                      f'\t.size "{symbol}", {size}', f'"{symbol}":']
            lines.append(f'\t.incbin "{blob.name}", {offset}, {raw.size}' if raw.size
                         else "\t.zero 1")
            offset += raw.size
    lines.append('\t.section .note.GNU-stack,"",%progbits')
    return "\n".join(lines) + "\n"


def _check_symbol(symbol: str) -> None:
    if any(c in symbol for c in '"\\\n\0'):
        raise ExportError(f"constant symbol {symbol!r} cannot be written in assembly")


def compiler() -> str:
    """The system C compiler (``cc``, else ``gcc`` or ``clang``)."""
    for candidate in ("cc", "gcc", "clang"):
        found = shutil.which(candidate)
        if found:
            return found
    raise ExportError("no C compiler found (cc, gcc or clang); exporting a shared library "
                      "needs one to compile the C runtime and link")


def link_shared_library(obj: ObjectCode, interface: LibraryInterface, output: Path) -> Path:
    """Build ``output`` (``lib<name>.so``) from ``obj`` and the C runtime of ``interface``."""
    with tempfile.TemporaryDirectory(prefix="lpjit-export-") as tmp:
        sources = write_library_sources(obj, interface, Path(tmp))
        exports = Path(tmp) / "exports.map"
        exports.write_text(f"{{ global: {interface.prefix}*; local: *; }};\n")
        command = [compiler(), "-shared", "-fPIC", "-O2", "-std=c11", "-fvisibility=hidden",
                   "-o", str(output.resolve()), *(p.name for p in sources.inputs),
                   f"-Wl,--version-script={exports.name}", "-Wl,-z,noexecstack",
                   "-Wl,-z,relro", "-Wl,-z,now", "-static-libgcc", "-Wl,--as-needed", "-lm"]
        if obj.openmp:
            command.append("-lgomp")
        result = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ExportError(f"linking {output.name} failed ({' '.join(command)}):\n"
                              f"{result.stderr.strip()}")
    return output


def needed_libraries(library: Path) -> tuple[str, ...]:
    """The ``NEEDED`` entries of a shared library's dynamic section (via ``readelf -d``)."""
    readelf = shutil.which("readelf")
    if readelf is None:
        return ()
    result = subprocess.run([readelf, "-d", str(library)], capture_output=True, text=True,
                            check=True)
    needed = []
    for line in result.stdout.splitlines():
        if "(NEEDED)" in line and "[" in line:
            needed.append(line[line.index("[") + 1:line.rindex("]")])
    return tuple(needed)
