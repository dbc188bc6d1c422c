"""``python -m ml validate|train|evaluate|export|card|data``.

Exit codes: 0 success, 2 unusable input (invalid data or spec, bad arguments), 1 any other failure.
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def _load_spec(path: str) -> Any:
    from ml.schema import UseCaseSpec

    return UseCaseSpec.load(Path(path))


def cmd_validate(args: argparse.Namespace) -> int:
    from ml.validation import validate_dataset

    spec = _load_spec(args.spec)
    report, _ = validate_dataset(spec, Path(args.data))
    print(report.text())
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        report.write(Path(args.report))
    return EXIT_OK if report.ok else EXIT_INVALID


def _config(args: argparse.Namespace) -> Any:
    from ml.training import TrainConfig

    if getattr(args, "params", None):
        return TrainConfig.load(Path(args.params))
    if getattr(args, "fast", False):
        return TrainConfig.fast()
    return TrainConfig()


def cmd_train(args: argparse.Namespace) -> int:
    from ml.pipeline import train_run

    spec = _load_spec(args.spec)
    manifest = train_run(
        spec=spec,
        data_path=Path(args.data),
        out_dir=Path(args.out),
        seed=args.seed,
        model_type=args.model,
        config=_config(args),
        tracking=not args.no_tracking,
        progress=None if args.quiet else _progress,
        tracking_uri=args.tracking_uri,
    )
    t = manifest["metrics"]["test"]
    cv = manifest["metrics"]["cv"]
    b = manifest["linear_baseline"]["test"]
    sel = manifest["model_selection"]
    print(f"model:      {manifest['model_type']} -> {args.out}")
    for family, res in sel["families"].items():
        c = res["cv"]
        mark = "*" if family == sel["chosen"] else " "
        print(f"  {mark} {family:<9} CV AUROC {c['auroc']:.3f} ± {c['se']['auroc']:.3f} (SE), log loss "
              f"{c['log_loss']:.3f}, {c['n_folds']} folds, best {json.dumps(res['selected_params'], sort_keys=True)}")
    print(f"chosen:     {sel['chosen']}: {sel['reason']}")
    print(f"CV:         AUROC {cv['auroc']:.3f} ± {cv['auroc_sd']:.3f}, AUPRC {cv['auprc']:.3f}")
    print(f"test:       AUROC {t['auroc']:.3f} (95% CI {t['auroc_ci'][0]:.3f}-{t['auroc_ci'][1]:.3f}), "
          f"AUPRC {t['auprc']:.3f} (95% CI {t['auprc_ci'][0]:.3f}-{t['auprc_ci'][1]:.3f}), Brier {t['brier']:.3f}, "
          f"calibration slope {t['calibration_slope']:.2f} intercept {t['calibration_intercept']:.2f}")
    print(f"baseline:   logistic AUROC {b['auroc']:.3f} (95% CI {b['auroc_ci'][0]:.3f}-{b['auroc_ci'][1]:.3f})")
    small = manifest["small_data"]
    if small["active"]:
        o = small["optimism"]
        print(f"small data: {small['n_rows']} rows, {small['n_events']} events; {small['cv_repeats']}x repeated CV; "
              f"optimism-corrected AUROC {o['corrected_auroc']:.3f} (apparent {o['apparent_auroc']:.3f}, "
              f"{o['n_boot']} resamples)")
    if manifest["final_fit"]["refit_on_all_rows"]:
        print(f"final fit:  refitted on all {manifest['final_fit']['n_rows']} rows; the test figures above are the "
              "same procedure fitted on the training part")
    print(f"threshold:  {manifest['threshold']:.4f} ({manifest['threshold_rule']})")
    print(f"parity:     max |p_joblib - p_onnx| = {manifest['onnx_parity_max_abs_diff']:.2e}")
    print(f"onnx:       sha256 {manifest['artifacts']['model.onnx']['sha256']}")
    if manifest.get("mlflow_run_id"):
        print(f"mlflow:     run {manifest['mlflow_run_id']}, {manifest['mlflow_model_name']} "
              f"version {manifest['mlflow_model_version']}")
    signal = manifest["signal"]
    if signal["verdict"] == "no_signal":
        warning = ("WARNING: NO SIGNAL: this data shows no usable signal for the outcome; the model is written but "
                   "the promotion gate will refuse it. " + "; ".join(signal["reasons"]))
        print(warning)
        _progress(warning)
    else:
        print(f"signal:     yes (CV AUROC 95% CI {signal['cv_auroc_ci'][0]:.3f}-{signal['cv_auroc_ci'][1]:.3f})")
    return EXIT_OK


def _model_dir_spec(model_dir: Path) -> tuple[dict[str, Any], Any, Any]:
    from ml.export import load_joblib
    from ml.pipeline import load_manifest
    from ml.schema import UseCaseSpec

    manifest = load_manifest(model_dir)
    return manifest, UseCaseSpec.from_dict(manifest["spec"]), load_joblib(model_dir / "model.joblib")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ml import evaluation
    from ml.training import train_test_split_grouped
    from ml.validation import load_dataset

    model_dir = Path(args.model)
    manifest, spec, model = _model_dir_spec(model_dir)
    data = load_dataset(spec, Path(args.data))
    rows = np.arange(len(data.y))
    note = "all rows"
    if args.part != "all":
        split = train_test_split_grouped(data.y, data.groups, seed=manifest["seed"],
                                         test_fraction=manifest["split"]["test_fraction"])
        rows = split.test if args.part == "test" else split.train
        same = split.sha256 == manifest["split_sha256"]
        note = f"{args.part} part of the training split (split sha256 {'matches' if same else 'DIFFERS from'} " \
               "the manifest)"
        if args.part == "test" and (manifest.get("final_fit") or {}).get("refit_on_all_rows"):
            note += ("; NOT held out: this model was refitted on all rows, so these figures are "
                     "apparent performance, not the manifest's held-out estimate")
    threshold = float(manifest["threshold"])
    p = model.predict_proba(data.X[rows])[:, 1]
    y = data.y[rows]
    _progress(f"evaluating {len(rows)} rows ({note}), bootstrap {args.bootstrap}")
    metrics = evaluation.full_metrics(y, p, threshold, n_boot=args.bootstrap, seed=manifest["seed"])
    frame_rows = {sg.name: data.frame[f"__sg_{sg.name}"].to_numpy()[rows] for sg in spec.subgroups}
    result = {
        "model": str(model_dir),
        "use_case": manifest["use_case"],
        "dataset_sha256": data.report.dataset_sha256,
        "rows": note,
        "threshold": threshold,
        "metrics": metrics,
        "subgroups": evaluation.subgroup_metrics(spec, frame_rows, y, p, threshold,
                                                 n_boot=min(args.bootstrap, 200), seed=manifest["seed"]),
    }
    ci = metrics["auroc_ci"]
    print(f"AUROC {metrics['auroc']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}), AUPRC {metrics['auprc']:.3f}, "
          f"Brier {metrics['brier']:.3f} on {metrics['n']} rows ({metrics['events']} events)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from ml import export
    from ml.validation import load_dataset

    model_dir = Path(args.model)
    manifest, spec, model = _model_dir_spec(model_dir)
    _progress("converting model.joblib to ONNX")
    onx = export.to_onnx(model, doc=f"ClinPredict {spec.use_case} {manifest['model_type']}")
    onnx_bytes = onx.SerializeToString(deterministic=True)
    import hashlib

    sha = hashlib.sha256(onnx_bytes).hexdigest()
    expected = manifest["artifacts"]["model.onnx"]["sha256"]
    result: dict[str, Any] = {"sha256": sha, "matches_manifest": sha == expected}
    if args.data:
        data = load_dataset(spec, Path(args.data))
        result["parity"] = export.parity_check(model, onnx_bytes, export.parity_rows(data.X, manifest["seed"]))
        _progress(f"parity max |p_joblib - p_onnx| = {result['parity']['max_abs_diff']:.2e} over "
                  f"{result['parity']['n_rows']} rows")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(onnx_bytes)
        result["path"] = args.out
    print(f"ONNX sha256 {sha} ({'matches' if result['matches_manifest'] else 'DIFFERS from'} the manifest)")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK if result["matches_manifest"] else EXIT_FAILED


def cmd_card(args: argparse.Namespace) -> int:
    from ml.card import write_model_card
    from ml.export import sha256_file
    from ml.pipeline import load_manifest

    model_dir = Path(args.model)
    manifest = load_manifest(model_dir)
    validation = json.loads((model_dir / "validation_report.json").read_text(encoding="utf-8"))
    out_dir = Path(args.out_dir) if args.out_dir else model_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    md, html = write_model_card(manifest, validation, out_dir)
    if out_dir.resolve() == model_dir.resolve():
        for p in (md, html):
            manifest["artifacts"][p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {md} and {html}")
    return EXIT_OK


def cmd_data(args: argparse.Namespace) -> int:
    from ml.datasets import write_pima_csv, write_synthetic_csv

    if args.kind == "pima":
        path = write_pima_csv(Path(args.out))
    else:
        if not args.spec:
            _error("--spec is required for synthetic data")
            return EXIT_INVALID
        path = write_synthetic_csv(Path(args.out), _load_spec(args.spec), args.rows, prevalence=args.prevalence,
                                   seed=args.seed)
    print(f"wrote {path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml", description="ClinPredict ML library command line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate a dataset against a use-case spec (exit 2 when unusable)")
    p.add_argument("--spec", required=True, help="use-case spec YAML")
    p.add_argument("--data", required=True, help="CSV file")
    p.add_argument("--report", help="write the JSON report here")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="train, evaluate and export a model into --out")
    p.add_argument("--spec", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="run folder (replaced atomically on success)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", choices=("auto", "logistic", "xgboost", "mlp"), default="auto",
                   help="model family; auto (default): every family's CV search, the simplest within one standard "
                        "error of the best wins")
    p.add_argument("--params", help="YAML file whose 'train' section holds TrainConfig fields (e.g. params.yaml)")
    p.add_argument("--fast", action="store_true", help="small grid, 3 folds, 200 bootstrap resamples")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///var/mlflow.db)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained model folder on a dataset")
    p.add_argument("--model", required=True, help="run folder written by train")
    p.add_argument("--data", required=True)
    p.add_argument("--part", choices=("all", "test", "train"), default="all",
                   help="rows to use; test/train recompute the run's split (for the training dataset)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", help="write the JSON result here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="re-export model.joblib to ONNX, compare sha256 with the manifest, check parity")
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="dataset for the parity check")
    p.add_argument("--out", help="write the ONNX file here")
    p.add_argument("--report", help="write the JSON result here")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("card", help="regenerate model_card.md/.html from a run folder")
    p.add_argument("--model", required=True)
    p.add_argument("--out-dir", help="default: the run folder (its manifest's sha256 values are updated)")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("data", help="write a dataset: the Pima CSV or a synthetic one")
    p.add_argument("kind", choices=("pima", "synthetic"))
    p.add_argument("--out", required=True)
    p.add_argument("--spec", help="spec for synthetic data")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--prevalence", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ml.export import ExportError
    from ml.schema import SpecError
    from ml.validation import DataValidationError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DataValidationError as exc:
        print(exc.report.text(), file=sys.stderr)
        _error(str(exc))
        return EXIT_INVALID
    except (SpecError, FileNotFoundError) as exc:
        _error(str(exc))
        return EXIT_INVALID
    except ExportError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except ValueError as exc:
        _error(str(exc))
        return EXIT_INVALID
