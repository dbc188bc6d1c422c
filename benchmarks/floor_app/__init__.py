"""The floor of `python -m benchmarks floor`: a bare Django app (no middleware, no DRF, no auth, no validation) whose
one view scores the benchmark's prediction body on the champion's ONNX file, optionally with one durable INSERT.
Benchmark-only: never installed, imported or served by ClinPredict."""
