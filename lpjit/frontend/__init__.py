"""The IR front end: OpenVINO IR (``.xml`` + ``.bin``) to ``Graph`` and back."""

from lpjit.frontend.ir_reader import read_ir  # noqa: F401
from lpjit.frontend.ir_writer import write_ir  # noqa: F401
