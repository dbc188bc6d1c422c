"""Training time and peak memory on synthetic data shaped by a 30-feature use-case spec (both model types, full CV).

    python -m benchmarks.training [--rows 10000 100000] [--models xgboost mlp] [--timeout SECONDS]

Each (rows, model) pair is one `python -m ml train` process under GNU time; its row in results/training.json
also carries what the run chose (solver, number of CV candidates) and its test AUROC, read from the run's manifest.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ml.datasets import write_synthetic_csv
from ml.schema import UseCaseSpec
from ml.training import TrainConfig

from .common import REPO, RESULTS, timed, write_result

SPEC = REPO / "benchmarks" / "specs" / "synthetic30.yaml"


def _run_facts(run_dir: Path) -> dict[str, Any]:
    """What the run chose and reached, from its manifest (nothing when the run failed)."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        return {}
    m = json.loads(manifest_path.read_text())
    selected = m["cv"]["selected_params"]
    return {
        "cv_folds": m["cv"]["folds"],
        "candidates": len(m["cv"]["candidates"]),
        "solver": selected.get("solver", "hist"),
        "test_auroc": round(m["metrics"]["test"]["auroc"], 4),
    }


def _config_notes(config: TrainConfig) -> str:
    adam = config.mlp_solver_params(config.mlp_adam_from_rows)
    return (
        f"Default TrainConfig: {config.cv_folds}-fold CV, {config.bootstrap:,} bootstrap resamples, n_jobs "
        f"{config.n_jobs}. Below {config.large_data_rows:,} training rows: {len(config.xgb_grid)} XGBoost / "
        f"{len(config.mlp_grid)} MLP candidates; from {config.large_data_rows:,} training rows (the 100k and 1M runs):"
        f" {len(config.xgb_grid_large)} XGBoost candidates {json.dumps(config.xgb_grid_large)} and "
        f"{len(config.mlp_grid_large)} MLP candidates {json.dumps(config.mlp_grid_large)}. MLP solver: L-BFGS "
        f"(max_iter {config.mlp_max_iter}) below {config.mlp_adam_from_rows:,} training rows, else "
        f"{json.dumps(adam)} (Adam minibatches, stop when the training loss gains < 1e-4 for "
        f"{config.mlp_n_iter_no_change} epochs). XGBoost: tree_method hist, no early stopping."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--models", nargs="+", default=["xgboost", "mlp"])
    parser.add_argument("--prevalence", type=float, default=0.1)
    parser.add_argument("--timeout", type=int, default=None,
                        help="stop a training run after this many seconds (recorded with exit code 124)")
    args = parser.parse_args(argv)
    spec = UseCaseSpec.load(SPEC)
    n_features = len(spec.features)
    rows = []
    with tempfile.TemporaryDirectory(prefix="clinpredict-bench-") as tmp:
        for n_rows in args.rows:
            data = write_synthetic_csv(Path(tmp) / f"synthetic-{n_rows}.csv", spec, n_rows,
                                       prevalence=args.prevalence, seed=1)
            for model in args.models:
                run_dir = Path(tmp) / f"run-{n_rows}-{model}"
                cmd = [sys.executable, "-m", "ml", "train", "--spec", str(SPEC), "--data", str(data), "--out",
                       str(run_dir), "--model", model, "--seed", "42", "--no-tracking", "--quiet"]
                if args.timeout:
                    cmd = ["timeout", str(args.timeout), *cmd]
                measured = timed(cmd)
                rows.append({"rows": n_rows, "features": n_features, "model": model, **measured,
                             **_run_facts(run_dir)})
                print(f"training {model} on {n_rows:,} rows x {n_features} features: {measured['wall_seconds']} s, "
                      f"peak RSS {measured['peak_rss_mib']} MiB (exit {measured['exit_code']})", flush=True)
            data.unlink()
    # Keep earlier measurements of other (rows, model) pairs with the same feature count, so sizes can be measured
    # in separate runs; rows of another spec (e.g. the former 9-feature one) are dropped.
    previous = RESULTS / "training.json"
    old: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    measured_pairs = {(r["rows"], r["model"]) for r in rows}
    rows = [r for r in old.get("rows", [])
            if r.get("features") == n_features and (r["rows"], r["model"]) not in measured_pairs] + rows
    rows.sort(key=lambda r: (r["rows"], r["model"]))
    payload: dict[str, Any] = {
        "title": "Training: `python -m ml train` on synthetic data (CV grid search, calibration, bootstrap CIs, "
                 "ONNX export and parity)",
        "command": "python -m benchmarks.training --rows 10000 100000 --models xgboost mlp; "
                   "python -m benchmarks.training --rows 1000000 --timeout 1800",
        "tool": "GNU time -v (wall clock, maximum resident set size)",
        "notes": f"Spec `benchmarks/specs/synthetic30.yaml` ({n_features} vitals and labs), synthetic rows from "
                 f"`ml.datasets.write_synthetic_csv` (seed 1), prevalence {args.prevalence:.0%}, 80/20 split, seed "
                 f"42, no MLflow tracking. {_config_notes(TrainConfig())}",
        "rows": rows,
    }
    if old.get("findings"):
        payload["findings"] = old["findings"]
    write_result("training", payload)


if __name__ == "__main__":
    main()
