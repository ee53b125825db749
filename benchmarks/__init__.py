"""Benchmarks: they print figures and are not timed tests (`make bench-history`)."""
