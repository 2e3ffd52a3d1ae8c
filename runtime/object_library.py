"""``ObjectLibrary``: machine code loaded from a relocatable object file, without LLVM IR.

The compile cache stores the object MCJIT emitted for a model (``JitLibrary.object_code``,
the JIT's code model and relocation model) and the constants the code reads through external
symbols.  Loading it again is what MCJIT does after code generation, minus the code
generation:

1. bind every constant symbol to its (64-byte aligned) array with ``llvm.add_symbol``;
2. check that every other external symbol the code needs (OpenMP, libm) resolves in this
   process, so that a mismatch is a ``CodegenError`` and not an LLVM abort;
3. hand the object (and those of the program's parts, if it was compiled in parts) to a
   fresh MCJIT engine (over an empty module) and finalize it.

Function addresses then come from ``function_address`` like a ``JitLibrary``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import llvmlite.binding as llvm
import numpy as np

from lpjit.errors import CodegenError
from runtime.jit import TargetSpec, initialize_llvm


class ObjectLibrary:
    """An object file loaded by MCJIT for the host CPU (see the module docstring).

    ``symbols`` are the constants bound by name (kept alive with the library);
    ``externals`` the other undefined symbols the object calls, checked before loading;
    ``parts`` further objects loaded with ``code``.
    """

    def __init__(self, code: bytes, symbols: Sequence[tuple[str, np.ndarray]],
                 externals: Sequence[str] = (), opt_level: int = 3,
                 parts: Sequence[bytes] = ()) -> None:
        initialize_llvm()
        self.symbols = tuple(symbols)
        bound = {name for name, _ in self.symbols}
        missing = [name for name in externals
                   if name not in bound and not llvm.address_of_symbol(name)]
        if missing:
            raise CodegenError(f"cannot load the object code: symbols "
                               f"{', '.join(sorted(missing))} are not defined in this process")
        for name, data in self.symbols:
            llvm.add_symbol(name, data.ctypes.data)
        machine = TargetSpec.host().target_machine(opt_level, jit=True)
        module = llvm.parse_assembly("")
        module.triple = machine.triple
        module.data_layout = str(machine.target_data)
        self.engine = llvm.create_mcjit_compiler(module, machine)
        try:
            for obj in (code, *parts):
                self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
            self.engine.finalize_object()
        except RuntimeError as error:
            raise CodegenError(f"MCJIT rejected the object code: {error}") from None

    def function_address(self, name: str) -> int:
        """The address of function ``name``; ``CodegenError`` if the object has none."""
        address = self.engine.get_function_address(name)
        if not address:
            raise CodegenError(f"no function '{name}' in the loaded object code")
        return address

    def __repr__(self) -> str:
        return f"<ObjectLibrary: {len(self.symbols)} constant symbols>"
