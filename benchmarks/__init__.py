"""Measured speed and memory of ClinPredict's paths. `make bench` runs them and regenerates docs/benchmarks.md."""
