"""Benchmarks: `python -m bench` runs every bench/bench_*.py and writes BENCHMARKS.md (see docs/CONTRACTS.md)."""
