"""Runtime: the LLVM code libraries (JIT now, AOT later), memory plan and native entry points.

``runtime.jit``: ``TargetSpec`` (CPU name + features), ``CPUCodegen`` / ``JitEngine`` (O3
pipeline, MCJIT), ``CodeLibrary`` / ``JitLibrary`` (IR, assembly, object code, callables) and
libgomp loading for parallel loops.
"""
