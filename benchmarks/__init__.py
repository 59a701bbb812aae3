"""Benchmarks: `python -m benchmarks` prints round trips and timings (not run by the tests)."""
