"""Benchmarks: `python -m bench` runs every bench/bench_*.py and writes BENCHMARKS.md.

See docs/CONTRACTS.md "Benchmarks"."""
