"""Runtime: LLVM JIT engine, code libraries and native entry points."""
