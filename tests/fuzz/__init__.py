"""Fuzzing the IR reader, graph construction and reference executor (issue 8)."""
