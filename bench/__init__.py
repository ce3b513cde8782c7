"""Benchmarks of the service (run them as scripts; see bench/README.md)."""
