"""Runtime: the LLVM code libraries (JIT and AOT), memory plan and native entry points.

``runtime.jit``: ``TargetSpec`` (CPU name + features), ``CPUCodegen`` / ``JitEngine`` (O3
pipeline, MCJIT), ``CodeLibrary`` / ``JitLibrary`` (IR, assembly, object code, callables) and
libgomp loading for parallel loops.  ``runtime.aot``: ``ExportTarget``, ``AotCodegen`` /
``AotLibrary`` (the same library up to the object file), ``ObjectCode`` and the link into a
``.so``; ``runtime.c_library``: the generated C header and runtime (``runtime/c/*.in``);
``runtime.cpu_features``: ISA levels and the ``cpuid`` bits checked at create time.
"""
