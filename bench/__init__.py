"""Benchmarks of issue 8/8: `python -m bench [name ...] [--quick]` (or `make bench`)."""
