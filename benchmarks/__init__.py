"""Measurements, not tests: each module is one command that writes its section of docs/benchmarks.md."""
