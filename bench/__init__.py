"""Benchmarks: ``python -m bench NAME [--quick]``; each measures against a baseline side by side."""
