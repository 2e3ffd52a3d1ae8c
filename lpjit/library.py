"""Exported libraries in Python: ``lpjit.load_library(path) -> LoadedModel``, and pickling.

A ``LoadedModel`` calls ``lib<name>.so`` through its C API (ctypes), with the calling
interface of ``CompiledModel`` (positional, keyword or dict inputs, the same input checks,
named outputs): nothing is compiled.  Each Python thread gets its own context (created on its
first call, destroyed with the thread's local storage), so one ``LoadedModel`` may be called
from several threads at once.  Everything the model needs to know comes from the library
itself (its embedded manifest), so the ``.json`` beside it is optional.

Pickling: a ``LoadedModel`` pickles as its library's bytes; a ``CompiledModel`` pickles as a
library linked from its JIT-compiled machine code (no recompilation; made once per model).
Either unpickles as a ``LoadedModel`` over a private copy of the library in a temporary
directory, removed when the model is collected.  The library checks the CPU when it is
loaded: a process on a CPU without the features raises ``ExportError`` instead of faulting.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lpjit.api import CompiledModel, ModelInterface, TensorInfo
from lpjit.errors import ExportError, InputError
from runtime.c_library import STATUS_CODES, TensorSpec, c_identifier
from runtime.executable import aligned_empty

_OK = STATUS_CODES["LPJIT_OK"][0]


def load_library(path: str | Path) -> LoadedModel:
    """Load ``lib<name>.so`` (or the one library in the directory ``path``)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("lib*.so"))
        if len(found) != 1:
            raise InputError(f"directory '{path}' holds {len(found)} lib*.so files; pass the "
                             "library's path")
        path = found[0]
    if not path.is_file():
        raise InputError(f"library '{path}' does not exist")
    if not (path.name.startswith("lib") and path.name.endswith(".so")):
        raise InputError(f"'{path.name}' is not named lib<name>.so as lpjit.export writes it")
    return LoadedModel(path)


class _CApi:
    """The C functions of one library, typed for ctypes."""

    def __init__(self, path: Path, prefix: str) -> None:
        try:
            self.dll = ctypes.CDLL(str(path.resolve()))
        except OSError as error:
            raise ExportError(f"cannot load '{path}': {error}") from None
        size_p, char_pp = ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_char_p)
        void_p = ctypes.c_void_p
        signatures = {
            "create": [ctypes.POINTER(void_p)], "destroy": [void_p],
            "run": [void_p, void_p, void_p], "set_threads": [void_p, ctypes.c_int32],
            "check_cpu": [char_pp], "manifest": [char_pp], "num_inputs": [size_p],
        }
        for suffix, argtypes in signatures.items():
            function = self._function(prefix + suffix, path)
            function.argtypes, function.restype = argtypes, ctypes.c_int
            setattr(self, suffix, function)
        self.strerror = self._function(prefix + "strerror", path)
        self.strerror.argtypes, self.strerror.restype = [ctypes.c_int], ctypes.c_char_p

    def _function(self, symbol: str, path: Path):
        try:
            return getattr(self.dll, symbol)
        except AttributeError:
            raise ExportError(f"'{path.name}' has no function {symbol}: not an lpjit library "
                              "or renamed after export (keep the name lib<name>.so)") from None

    def check(self, status: int, doing: str) -> None:
        """Raise ``ExportError`` for a failed call."""
        if status != _OK:
            message = self.strerror(status).decode()
            raise ExportError(f"{doing} failed: {message} (status {status})")

    def manifest_text(self) -> str:
        """The JSON manifest embedded in the library."""
        out = ctypes.c_char_p()
        self.check(self.manifest(ctypes.byref(out)), "reading the manifest")
        return out.value.decode()


class _Context:
    """One C context: created for a thread, destroyed with it."""

    def __init__(self, api: _CApi) -> None:
        self.api, self.handle = api, ctypes.c_void_p()
        api.check(api.create(ctypes.byref(self.handle)), "creating a context")

    def __del__(self) -> None:
        if self.handle:
            self.api.destroy(self.handle)


class LibraryExecutable:
    """Runs the library on checked arrays: one context per calling thread, fresh outputs."""

    def __init__(self, api: _CApi, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec]) -> None:
        self.api, self.inputs, self.outputs = api, tuple(inputs), tuple(outputs)
        self._per_thread = threading.local()

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The outputs for ``arrays`` (model order, dtypes and shapes already checked)."""
        context = getattr(self._per_thread, "context", None)
        if context is None:
            context = self._per_thread.context = _Context(self.api)
        results = [aligned_empty(spec.shape, spec.dtype) for spec in self.outputs]
        inputs = (ctypes.c_void_p * max(len(arrays), 1))(*[_address(a) for a in arrays])
        outputs = (ctypes.c_void_p * max(len(results), 1))(*[_address(a) for a in results])
        self.api.check(self.api.run(context.handle, inputs, outputs), "running the model")
        return results


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


class LoadedModel(ModelInterface):
    """An exported library loaded with ctypes; called like a ``CompiledModel``.

    ``name``, ``inputs``, ``outputs``, ``threads``, ``arena_bytes``, ``target`` and ``path``
    describe it; ``manifest`` is the build manifest embedded in the library.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        prefix = f"lpjit_{self.path.name[3:-3]}_"
        self.api = api = _CApi(self.path, prefix)
        self.manifest = json.loads(api.manifest_text())
        missing = ctypes.c_char_p()
        if api.check_cpu(ctypes.byref(missing)) != _OK:
            raise ExportError(f"library '{self.path.name}' was compiled for "
                              f"{self.manifest['target']['name']} and needs the CPU feature "
                              f"'{missing.value.decode()}', which this CPU lacks; export it "
                              "for this machine's target (e.g. target='native')")
        self.name = self.manifest["model"]
        specs_in = [TensorSpec.from_json(e) for e in self.manifest["inputs"]]
        specs_out = [TensorSpec.from_json(e) for e in self.manifest["outputs"]]
        self.inputs = tuple(TensorInfo(s.name, s.shape, s.dtype, s.aliases) for s in specs_in)
        self.outputs = tuple(TensorInfo(s.name, s.shape, s.dtype, s.aliases)
                             for s in specs_out)
        self.threads = self.manifest["threads"]
        self.arena_bytes = self.manifest["arena_bytes"]
        self.executable = LibraryExecutable(api, specs_in, specs_out)

    @property
    def target(self) -> str:
        """The target the library was compiled for."""
        target = self.manifest["target"]
        return f"{target['name']} ({target['cpu']})"

    def __reduce__(self):
        """Pickle as the library's bytes (see the module docstring)."""
        return _unpickle_library, (self.path.read_bytes(), self.path.name)

    def __repr__(self) -> str:
        ins = ", ".join(info.describe() for info in self.inputs) or "(none)"
        outs = ", ".join(info.describe() for info in self.outputs)
        team = self.threads or "OpenMP default"
        return (f"<LoadedModel '{self.name}' from {self.path.name}\n  inputs:  {ins}\n"
                f"  outputs: {outs}\n  target:  {self.target}, threads={team}, "
                f"arena={self.arena_bytes} bytes>")


def _unpickle_library(data: bytes, filename: str) -> LoadedModel:
    """A ``LoadedModel`` over a private copy of a pickled library."""
    directory = tempfile.mkdtemp(prefix="lpjit-pickled-")
    path = Path(directory) / filename
    path.write_bytes(data)
    try:
        model = LoadedModel(path)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    weakref.finalize(model, shutil.rmtree, directory, True)
    return model


def reduce_compiled_model(model: CompiledModel):
    """``CompiledModel.__reduce__``: its machine code linked into a library (made once)."""
    data = model.__dict__.get("_pickled_library")
    if data is None:
        data = model.__dict__["_pickled_library"] = _link_compiled_model(model)
    return _unpickle_library, data


def _link_compiled_model(model: CompiledModel) -> tuple[bytes, str]:
    from lpjit.exporter import library_interface
    from runtime.aot import ExportTarget, ObjectCode, link_shared_library

    compilation = model.compilation
    obj = ObjectCode.of(compilation.library)
    name = c_identifier(model.name)
    interface = library_interface(compilation, obj, name, model.threads,
                                  ExportTarget.named("native"))
    with tempfile.TemporaryDirectory(prefix="lpjit-pickle-") as tmp:
        path = link_shared_library(obj, interface, Path(tmp) / f"lib{name}.so")
        return path.read_bytes(), path.name
