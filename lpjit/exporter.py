"""Ahead-of-time export: ``lpjit.export(ir, out_dir) -> ExportedLibrary``.

The model goes through the compile pipeline of ``lpjit.compile`` with an ``AotCodegen`` for
the chosen ``ExportTarget`` instead of the host JIT; its object code, its weights and a small
C runtime are linked into ``lib<name>.so`` (see ``runtime.aot``), beside the header
``<name>.h`` and the manifest ``<name>.json``:

* ``native``: the host CPU (name and every feature), the code the JIT would run;
* ``x86-64-v2``, ``x86-64-v3`` (AVX2, FMA), ``x86-64-v4`` (AVX-512): ISA levels, for other x86
  machines;
* ``aarch64-linux-gnu``: object code only (``<name>.o``, the weights, the C runtime and the
  header, to be linked by a cross compiler; the manifest gives the command).

``threads``: ``1`` compiles serial code (the library needs only libc and libm); ``N`` compiles
parallel loops on an OpenMP team of ``N`` by default; ``None`` (default) parallel loops on the
OpenMP default team (``OMP_NUM_THREADS`` or every core).  Parallel code links ``libgomp``;
the manifest records it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

import lpjit
from lpjit.errors import InputError
from lpjit.pipeline import Compilation, CompileOptions, PassRunner, Progress, compile_graph
from runtime.aot import (
    AotCodegen,
    ExportTarget,
    ObjectCode,
    link_shared_library,
    needed_libraries,
    write_library_sources,
)
from runtime.c_library import (
    LibraryInterface,
    TensorSpec,
    c_identifier,
    check_library_name,
    render_header,
)
from runtime.cpu_features import unchecked_features

MANIFEST_FORMAT = "lpjit-library"
MANIFEST_VERSION = 1


@attrs.frozen(eq=False)
class ExportedLibrary:
    """What ``export`` wrote: paths, target, size, dynamic dependencies and timing.

    ``library`` is ``lib<name>.so`` (None for a target this machine cannot link, whose
    ``object_file`` and C sources are written instead); ``needed`` lists its ``NEEDED``
    libraries; ``seconds`` is the whole export's wall time.
    """

    name: str
    directory: Path
    library: Path | None
    header: Path
    manifest_path: Path
    object_file: Path | None
    target: ExportTarget
    manifest: dict
    needed: tuple[str, ...]
    seconds: float

    @property
    def library_bytes(self) -> int:
        """Size of ``lib<name>.so`` (0 when no library was linked)."""
        return self.library.stat().st_size if self.library is not None else 0

    def load(self):
        """The library as a callable ``LoadedModel``."""
        from lpjit.library import load_library

        if self.library is None:
            raise InputError(f"export '{self.name}' for {self.target.describe()} has no "
                             "library this machine can load")
        return load_library(self.library)

    def __repr__(self) -> str:
        where = self.library or self.object_file
        return (f"<ExportedLibrary '{self.name}' for {self.target.name}: {where} "
                f"({self.library_bytes or where.stat().st_size} bytes, {self.seconds:.2f} s)>")


def export(ir, out_dir: str | Path, *, name: str | None = None,
           target: str | ExportTarget = "native", threads: int | None = None,
           shapes: Mapping[str, Sequence[int]] | None = None, weights=None,
           low_precision: bool = True, dump_dir: str | Path | None = None,
           verify: bool = False, progress: Progress | None = None) -> ExportedLibrary:
    """Compile an OpenVINO IR ahead of time into ``out_dir`` (module docstring).

    ``ir``, ``weights``, ``shapes``, ``low_precision``, ``dump_dir``, ``verify`` and
    ``progress`` are as for ``lpjit.compile``; ``name`` (a C identifier) prefixes the library,
    header, manifest and every C function (default: the model's name made an identifier);
    ``target`` is a name listed in the module docstring or an ``ExportTarget``.
    """
    from lpjit.api import _read

    start = time.perf_counter()
    graph = _read(ir, weights, shapes)
    name = check_library_name(name) if name is not None else c_identifier(graph.name)
    export_target = target if isinstance(target, ExportTarget) else ExportTarget.named(target)
    team = _team_size(threads)
    options = CompileOptions(threads=team, low_precision=low_precision,
                             target=export_target.lowering_target())
    codegen = AotCodegen(export_target, openmp=team != 1)
    runner = PassRunner(verify=verify, dump_dir=dump_dir, progress=progress)
    compilation = compile_graph(graph, options, runner, codegen)
    obj = runner.run("emit_object", compilation.library.object)
    interface = library_interface(compilation, obj, name, team, export_target)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    library = object_file = None
    if export_target.runs_here:
        library = runner.run("link_shared_library", lambda: link_shared_library(
            obj, interface, directory / f"lib{name}.so"))
        header = directory / f"{name}.h"
        header.write_text(render_header(interface))
    else:
        sources = write_library_sources(obj, interface, directory)
        header, object_file = sources.header, sources.object_file
    manifest = json.loads(interface.manifest)
    needed = needed_libraries(library) if library is not None else ()
    seconds = time.perf_counter() - start
    manifest.update(needed=list(needed), export_seconds=round(seconds, 3),
                    library_bytes=library.stat().st_size if library is not None else 0,
                    link=_link_command(name, obj) if library is None else None)
    manifest_path = directory / f"{name}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportedLibrary(name, directory, library, header, manifest_path, object_file,
                           export_target, manifest, needed, seconds)


def _team_size(threads: int | None) -> int:
    """The OpenMP team size compiled in: 0 (the OpenMP default) for None."""
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads={threads!r} is invalid; expected a positive integer or "
                         "None (parallel code, team size chosen at run time)")
    return threads


def _link_command(name: str, obj: ObjectCode) -> str:
    """How to link the sources of a cross-compiled export (run in its directory)."""
    libraries = " -lgomp" if obj.openmp else ""
    return (f"aarch64-linux-gnu-gcc -shared -fPIC -O2 -fvisibility=hidden -static-libgcc "
            f"-o lib{name}.so {name}_runtime.c {name}.o {name}_weights.S -lm{libraries}")


def library_interface(compilation: Compilation, obj: ObjectCode, name: str, threads: int,
                      target: ExportTarget) -> LibraryInterface:
    """The C runtime's description of a compiled program, with its manifest."""
    graph, program = compilation.graph, compilation.program
    inputs = [TensorSpec(p.origin.name, b.shape, b.dtype.numpy, b.alignment,
                         tuple(p.output.names))
              for p, b in zip(graph.parameters, program.inputs)]
    outputs = [TensorSpec(r.names[0], b.shape, b.dtype.numpy, b.alignment,
                          (*r.names[1:], r.origin.name))
               for r, b in zip(graph.results, program.outputs)]
    manifest = {
        "format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION,
        "lpjit_version": lpjit.__version__, "name": name, "model": graph.name,
        "library": f"lib{name}.so", "header": f"{name}.h", "prefix": f"lpjit_{name}_",
        "target": {"name": target.name, "triple": target.triple, "cpu": target.cpu,
                   "features": sorted(target.features)},
        "required_cpu_features": list(target.required_features),
        "unchecked_cpu_features": list(unchecked_features(target.features))
        if target.architecture == "x86_64" else [],
        "threads": threads, "openmp": obj.openmp,
        "low_precision": compilation.options.low_precision,
        "arena_bytes": compilation.plan.arena_bytes, "constant_bytes": obj.constant_bytes,
        "inputs": [spec.to_json() for spec in inputs],
        "outputs": [spec.to_json() for spec in outputs],
    }
    return LibraryInterface(name, compilation.module.entry, inputs, outputs,
                            compilation.plan.arena_bytes, threads, target.required_features,
                            json.dumps(manifest))
