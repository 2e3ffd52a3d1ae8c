"""lpjit: a JIT compiler for OpenVINO Low Precision IR on x86-64 CPUs."""

from lpjit import errors, ops  # noqa: F401
from lpjit.frontend import read_ir, write_ir  # noqa: F401
from lpjit.graph import Graph  # noqa: F401

__version__ = "0.1.0"
