"""Loop-level IR and its companions: graph -> loop IR -> schedule -> LLVM IR / numba.

Data flow (one module per stage or companion):

* ``loop_ir``: types (``f32``, ``u8x32``), buffers, expressions, statements, kernels;
  ``microkernels``: target dot-product steps as IR nodes; ``builder``: ``for_range`` helpers.
* Companions: ``printer`` (text), ``verifier`` (types, scopes, static bounds via
  ``intervals``), ``numba_exec`` (the reference executor: generated Python run by numba).
* ``schedule``: ``LoopNest`` + ``Schedule`` (data) -> statements (``apply_schedule``).
* ``vectorize``: ``vectorized(w)`` loops -> explicit vector code (before LLVM).
* ``codegen_llvm`` (with ``codegen_ops`` and ``codegen_microkernels`` emitter tables):
  kernels -> an ``llvmlite.ir`` module; ``runtime.jit`` compiles and loads it.
* ``abi``: the calling convention shared by both executors; ``examples``: canonical kernels.
"""
