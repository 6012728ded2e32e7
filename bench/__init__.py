"""Benchmark scripts (JSON out); results go to docs/perf.md with date and device."""
