"""lpjit: a JIT compiler for OpenVINO Low Precision IR on x86-64 CPUs."""

from lpjit import errors, ops  # noqa: F401
from lpjit.frontend import read_ir, write_ir  # noqa: F401
from lpjit.graph import Graph  # noqa: F401

__version__ = "0.1.0"

# The compile API loads LLVM; it is imported on first use (which also keeps ``lowering``, which
# imports ``lpjit``, free of an import cycle).
_API = ("compile", "CompiledModel", "Outputs", "clear_cache")
_EXPORT = {"export": "exporter", "ExportedLibrary": "exporter", "load_library": "library",
           "LoadedModel": "library"}


def __getattr__(name: str):
    """``lpjit.compile``, ``CompiledModel``, ``Outputs`` and ``clear_cache`` from ``lpjit.api``;
    ``lpjit.export`` / ``ExportedLibrary`` and ``lpjit.load_library`` / ``LoadedModel`` from
    ``lpjit.exporter`` and ``lpjit.library``."""
    if name in _API:
        from lpjit import api

        return getattr(api, name)
    if name in _EXPORT:
        import importlib

        return getattr(importlib.import_module(f"lpjit.{_EXPORT[name]}"), name)
    raise AttributeError(f"module 'lpjit' has no attribute '{name}'")
