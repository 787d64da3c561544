"""dispatcher's benchmark: `python -m benchmarks` (see BENCHMARKS.md)."""
