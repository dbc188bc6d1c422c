"""`python -m benchmarks [NAME ...]`: run the named benchmarks (default: all) and regenerate docs/benchmarks.md."""

import importlib
import sys

from . import report

BENCHMARKS = ["training", "fhir_sync", "audit_export", "inference", "api_latency", "floor", "scaling",
              "batch_scoring", "cds_hooks", "hot_swap", "profile_request", "clinical_validity"]


def main(argv: list[str]) -> None:
    names = argv or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(BENCHMARKS)}")
    for name in names:
        print(f"== {name}")
        importlib.import_module(f"benchmarks.{name}").main([])
    report.main()


if __name__ == "__main__":
    main(sys.argv[1:])
