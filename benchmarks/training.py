"""Training time and peak memory on synthetic data shaped by a use-case spec (both model types, full CV).

    python -m benchmarks.training [--rows 10000 100000] [--models xgboost mlp]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ml.datasets import write_synthetic_csv
from ml.schema import UseCaseSpec

from .common import REPO, RESULTS, timed, write_result

SPEC = REPO / "ml" / "specs" / "t2d_fhir.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--models", nargs="+", default=["xgboost", "mlp"])
    parser.add_argument("--prevalence", type=float, default=0.1)
    args = parser.parse_args(argv)
    spec = UseCaseSpec.load(SPEC)
    rows = []
    with tempfile.TemporaryDirectory(prefix="clinpredict-bench-") as tmp:
        for n_rows in args.rows:
            data = write_synthetic_csv(Path(tmp) / f"synthetic-{n_rows}.csv", spec, n_rows,
                                       prevalence=args.prevalence, seed=1)
            for model in args.models:
                cmd = [sys.executable, "-m", "ml", "train", "--spec", str(SPEC), "--data", str(data), "--out",
                       str(Path(tmp) / f"run-{n_rows}-{model}"), "--model", model, "--seed", "42", "--no-tracking",
                       "--quiet"]
                measured = timed(cmd)
                rows.append({"rows": n_rows, "features": len(spec.features), "model": model, **measured})
                print(f"training {model} on {n_rows:,} rows: {measured['wall_seconds']} s, "
                      f"peak RSS {measured['peak_rss_mib']} MiB (exit {measured['exit_code']})")
    # Keep earlier measurements of other (rows, model) pairs, so sizes can be measured in separate runs.
    previous = RESULTS / "training.json"
    if previous.exists():
        measured = {(r["rows"], r["model"]) for r in rows}
        rows = [r for r in json.loads(previous.read_text()).get("rows", [])
                if (r["rows"], r["model"]) not in measured] + rows
        rows.sort(key=lambda r: (r["rows"], r["model"]))
    write_result("training", {
        "title": "Training: `python -m ml train` on synthetic data (5-fold CV, grid search, calibration, ONNX export)",
        "command": "python -m benchmarks.training --rows 10000 100000 --models xgboost mlp",
        "tool": "GNU time -v (wall clock, maximum resident set size)",
        "notes": f"Spec `ml/specs/t2d_fhir.yaml` ({len(spec.features)} features), prevalence {args.prevalence:.0%}, "
                 "no MLflow tracking; the default TrainConfig (5 folds, 6 XGBoost / MLP candidates, 1,000 "
                 "bootstrap resamples).",
        "rows": rows,
    })


if __name__ == "__main__":
    main()
