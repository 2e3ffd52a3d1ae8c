"""The C side of an exported library: the header ``<name>.h`` and the runtime ``<name>_runtime.c``.

``LibraryInterface`` says what the runtime wraps: the program's entry point (a symbol of the
object file, ``void entry(inputs, outputs, arena, threads)``, see ``runtime.entry_point``),
its inputs and outputs, the arena size, the default OpenMP team size, the CPU features to
check, and the manifest (JSON) embedded in the library.  ``render_header`` and
``render_runtime`` turn it into C source; the runtime's fixed parts live in
``runtime/c/runtime.c.in`` and ``runtime/c/header.h.in`` (placeholders ``@NAME@``), and the
tables (tensors, features, manifest) are generated here.

The C API, prefixed ``lpjit_<name>_`` (every function returns an ``lpjit_status``):
``create`` / ``destroy`` a context (its scratch arena, ``aligned_alloc``; ``create`` checks the
CPU first and returns ``LPJIT_ERROR_CPU_FEATURES`` rather than letting the code fault),
``run(ctx, inputs, outputs)``, ``set_threads``, ``num_inputs`` / ``input_name`` /
``input_shape`` / ``input_dtype`` / ``input_nbytes`` (and the same for outputs),
``check_cpu``, ``manifest``; ``strerror`` returns a message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np

from lpjit.errors import ExportError
from runtime.cpu_features import CPUID_BITS, REGISTERS

TEMPLATES = Path(__file__).parent / "c"

# lpjit_dtype codes (stable: part of the C ABI).  0 is never a valid dtype.
DTYPE_CODES: dict[str, tuple[str, int]] = {
    "float32": ("LPJIT_F32", 1), "float16": ("LPJIT_F16", 2), "float64": ("LPJIT_F64", 3),
    "int8": ("LPJIT_I8", 4), "uint8": ("LPJIT_U8", 5), "int16": ("LPJIT_I16", 6),
    "uint16": ("LPJIT_U16", 7), "int32": ("LPJIT_I32", 8), "uint32": ("LPJIT_U32", 9),
    "int64": ("LPJIT_I64", 10), "uint64": ("LPJIT_U64", 11), "bool": ("LPJIT_BOOL", 12),
}
DTYPES_BY_CODE: dict[int, np.dtype] = {code: np.dtype(name)
                                       for name, (_, code) in DTYPE_CODES.items()}

# lpjit_status codes (stable: part of the C ABI).
STATUS_CODES: dict[str, tuple[int, str]] = {
    "LPJIT_OK": (0, "success"),
    "LPJIT_ERROR_INVALID_ARGUMENT": (1, ("invalid argument (a NULL pointer or a negative "
                                         "thread count)")),
    "LPJIT_ERROR_INDEX": (2, "input or output index out of range"),
    "LPJIT_ERROR_OUT_OF_MEMORY": (3, "out of memory"),
    "LPJIT_ERROR_CPU_FEATURES": (4, ("this CPU lacks an instruction set extension the "
                                     "library was compiled for (see check_cpu)")),
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@attrs.frozen
class TensorSpec:
    """An input or output of the library: name, shape, dtype, required pointer alignment."""

    name: str
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    dtype: np.dtype = attrs.field(converter=np.dtype)
    alignment: int = 0
    aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def to_json(self) -> dict:
        """The manifest entry."""
        return {"name": self.name, "aliases": list(self.aliases), "shape": list(self.shape),
                "dtype": self.dtype.name, "alignment": self.alignment}

    @classmethod
    def from_json(cls, entry: dict) -> TensorSpec:
        return cls(entry["name"], entry["shape"], entry["dtype"], entry["alignment"],
                   entry["aliases"])


@attrs.frozen
class LibraryInterface:
    """Everything the C runtime of ``lib<name>.so`` is generated from (module docstring)."""

    name: str = attrs.field()
    entry: str
    inputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    outputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    arena_bytes: int
    threads: int
    required_features: tuple[str, ...] = attrs.field(converter=tuple)
    manifest: str

    @name.validator
    def _check_name(self, attribute: attrs.Attribute, value: str) -> None:
        check_library_name(value)

    @property
    def prefix(self) -> str:
        """The prefix of every exported function: ``lpjit_<name>_``."""
        return f"lpjit_{self.name}_"


def check_library_name(name: str) -> str:
    """``name`` if it is a C identifier (it prefixes every function); else ``ExportError``."""
    if not _IDENTIFIER.match(name):
        raise ExportError(f"library name {name!r} is not a C identifier; use letters, "
                          "digits and '_', not starting with a digit")
    return name


def c_identifier(text: str) -> str:
    """``text`` made a C identifier: other characters become ``_``; never starts with a digit."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "model"
    return f"m_{clean}" if clean[0].isdigit() else clean


def c_string(text: str) -> str:
    """A C string literal for ``text`` (UTF-8; quotes, backslashes, ``?`` and non-printable
    bytes escaped in octal)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in '"\\?':
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _template(name: str, replacements: dict[str, str]) -> str:
    text = (TEMPLATES / name).read_text()
    for key, value in replacements.items():
        text = text.replace(f"@{key}@", value)
    return text


def _common(interface: LibraryInterface) -> dict[str, str]:
    return {"NAME": interface.name, "UPPER": interface.name.upper(),
            "NUM_INPUTS": str(len(interface.inputs)),
            "NUM_OUTPUTS": str(len(interface.outputs))}


def render_header(interface: LibraryInterface) -> str:
    """The public header ``<name>.h``."""
    statuses = "\n".join(f"    {key} = {code}, /* {message} */"
                         for key, (code, message) in STATUS_CODES.items())
    dtypes = "\n".join(f"    {key} = {code}, /* {name} */"
                       for name, (key, code) in DTYPE_CODES.items())
    tensors = "\n".join(f" *   {kind} {i}: {_comment(spec.name)} {spec.dtype.name}"
                        f"[{', '.join(map(str, spec.shape))}]"
                        for kind, specs in (("input", interface.inputs),
                                            ("output", interface.outputs))
                        for i, spec in enumerate(specs))
    return _template("header.h.in", {**_common(interface), "STATUSES": statuses,
                                     "DTYPES": dtypes, "TENSORS": tensors})


def _comment(text: str) -> str:
    """``text`` safe inside a C block comment on one line."""
    return "".join(c if c.isprintable() else "?" for c in text).replace("*/", "* /")


def render_runtime(interface: LibraryInterface) -> str:
    """The C runtime ``<name>_runtime.c``."""
    return _template("runtime.c.in", {
        **_common(interface),
        "ENTRY": interface.entry,
        "ARENA_BYTES": str(interface.arena_bytes),
        "THREADS": str(interface.threads),
        "TENSOR_TABLES": _tensor_table("INPUTS", interface.inputs) + "\n"
                         + _tensor_table("OUTPUTS", interface.outputs),
        "FEATURE_TABLE": _feature_table(interface.required_features),
        "MANIFEST": c_string(interface.manifest),
        "STRERROR": "\n".join(f"    case {key}: return {c_string(message)};"
                              for key, (_, message) in STATUS_CODES.items()),
    })


def _tensor_table(table: str, specs: Sequence[TensorSpec]) -> str:
    """``static const int64_t <table>_SHAPE_<i>[]`` per tensor and the ``tensor_spec`` table
    (one sentinel row more, so that it is never empty)."""
    lines = []
    for i, spec in enumerate(specs):
        dims = ", ".join(str(d) for d in spec.shape) or "0"
        lines.append(f"static const int64_t {table}_SHAPE_{i}[] = {{{dims}}};")
    lines.append(f"static const tensor_spec {table}[] = {{")
    for i, spec in enumerate(specs):
        code = DTYPE_CODES.get(spec.dtype.name)
        if code is None:
            raise ExportError(f"tensor '{spec.name}' has dtype {spec.dtype}, which the C API "
                              f"does not describe (supported: {', '.join(DTYPE_CODES)})")
        lines.append(f"    {{{c_string(spec.name)}, {table}_SHAPE_{i}, {len(spec.shape)}, "
                     f"{code[0]}, {spec.nbytes}u, {max(spec.alignment, 1)}u}},")
    lines.append("    {NULL, NULL, 0, 0, 0, 0},")
    lines.append("};")
    return "\n".join(lines)


def _feature_table(features: Sequence[str]) -> str:
    """One ``cpu_feature`` row per required feature, then a sentinel."""
    rows = []
    for name in features:
        bit = CPUID_BITS[name]
        rows.append(f"    {{{c_string(name)}, {bit.leaf:#x}u, {bit.subleaf}u, "
                    f"{REGISTERS.index(bit.register)}, {bit.bit}, {bit.xcr0_mask:#x}u}},")
    rows.append("    {NULL, 0, 0, 0, 0, 0},")
    return "\n".join(rows)
