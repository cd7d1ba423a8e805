"""Benchmarks (learning, latency, security): measurements with reports, not tests."""
