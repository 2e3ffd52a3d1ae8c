"""Loop-level IR: types, buffers, expressions, statements, kernels, and their companions."""
