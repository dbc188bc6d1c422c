"""One training run end to end: validate -> split -> CV/tune/calibrate -> evaluate -> export -> card -> track.

Everything is written to a temporary folder next to ``out_dir`` and renamed into place only when the run has
succeeded, so a failed run leaves neither files nor an MLflow run behind.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ml import evaluation, explain, export
from ml.card import write_model_card
from ml.schema import UseCaseSpec
from ml.training import TrainConfig, train_baseline, train_model, train_test_split_grouped
from ml.validation import load_dataset

MANIFEST_SCHEMA_VERSION = 1
ARTIFACT_FILES: tuple[str, ...] = (
    "model.onnx",
    "model.joblib",  # the fitted model, for training tools and audit; never read by the web process
    "model_card.md",
    "model_card.html",
    "validation_report.json",
    "plots/roc.png",
    "plots/pr.png",
    "plots/calibration.png",
    "plots/importance.png",
)


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    out = {"python": platform.python_version()}
    names = {
        "sklearn": "scikit-learn",
        "xgboost": "xgboost",
        "onnxruntime": "onnxruntime",
        "onnx": "onnx",
        "skl2onnx": "skl2onnx",
        "onnxmltools": "onnxmltools",
        "numpy": "numpy",
        "pandas": "pandas",
        "scipy": "scipy",
    }
    for key, dist in {**names, **{e: e for e in extra}}.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if key == "xgboost":
                try:
                    out[key] = metadata.version("xgboost-cpu")
                except metadata.PackageNotFoundError:
                    continue
    return out


class _Progress:
    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress = progress
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}")


def _subgroup_values(frame: Any, spec: UseCaseSpec, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {sg.name: frame[f"__sg_{sg.name}"].to_numpy()[rows] for sg in spec.subgroups}


def train_run(
    *,
    spec: UseCaseSpec,
    data_path: Path,
    out_dir: Path,
    seed: int = 42,
    model_type: str = "xgboost",
    config: TrainConfig | None = None,
    tracking: bool = True,
    progress: Callable[[str], None] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and export one model; write the run folder ``out_dir``; return the manifest dict.

    Raises ``ml.validation.DataValidationError`` for unusable data, ``ml.export.ExportError`` when the ONNX export
    does not reproduce the model, ``ValueError`` for bad arguments. Nothing is left in ``out_dir`` or MLflow then.
    """
    config = config or TrainConfig()
    say = _Progress(progress)
    t_start = time.perf_counter()
    data_path = Path(data_path)
    out_dir = Path(out_dir)
    if model_type not in ("xgboost", "mlp"):
        raise ValueError(f"unknown model type {model_type!r}; use xgboost or mlp")

    say(f"validating {data_path} against spec {spec.use_case!r}")
    data = load_dataset(spec, data_path, min_events=config.min_events,
                        max_invalid_fraction=config.max_invalid_fraction)
    report = data.report
    say(f"{report.n_rows} rows, {report.n_events} events ({(report.prevalence or 0):.1%}), "
        f"{len(report.warnings)} warning(s)")

    split = train_test_split_grouped(data.y, data.groups, seed=seed, test_fraction=config.test_fraction)
    X_tr, y_tr, g_tr = data.X[split.train], data.y[split.train], data.groups[split.train]
    X_te, y_te = data.X[split.test], data.y[split.test]
    if y_te.sum() == 0 or y_te.sum() == len(y_te) or y_tr.sum() < config.cv_folds:
        raise ValueError(
            f"the split left too few events (train {int(y_tr.sum())}, test {int(y_te.sum())}) for "
            f"{config.cv_folds}-fold CV and a test set"
        )
    say(f"split: {len(split.train)} train / {len(split.test)} test rows (grouped by patient, stratified)")

    trained = train_model(model_type, X_tr, y_tr, g_tr, spec.feature_names, seed=seed, config=config, progress=say)
    model = trained.model
    say("fitting the logistic baseline")
    baseline, baseline_cv = train_baseline(X_tr, y_tr, g_tr, seed=seed, config=config)

    say(f"evaluating on the test part ({len(y_te)} rows, {int(y_te.sum())} events; bootstrap {config.bootstrap})")
    p_te = model.predict_proba(X_te)[:, 1]
    test_metrics = evaluation.full_metrics(y_te, p_te, trained.threshold, n_boot=config.bootstrap, seed=seed)
    p_base = baseline.predict_proba(np.asarray(X_te, dtype=np.float32))[:, 1]
    base_test = evaluation.full_metrics(y_te, p_base, 0.5, n_boot=config.bootstrap, seed=seed)
    base_test.pop("at_threshold", None)
    subgroups = evaluation.subgroup_metrics(
        spec, _subgroup_values(data.frame, spec, split.test), y_te, p_te, trained.threshold,
        n_boot=min(config.bootstrap, 200), seed=seed,
    )

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        say("exporting ONNX and checking parity")
        onx = export.to_onnx(model, doc=f"ClinPredict {spec.use_case} {model_type}")
        onnx_bytes = onx.SerializeToString(deterministic=True)
        parity_X = export.parity_rows(X_te, seed)
        parity = export.parity_check(model, onnx_bytes, parity_X)
        (tmp / "model.onnx").write_bytes(onnx_bytes)
        export.save_joblib(model, tmp / "model.joblib")
        say(f"parity max |p_joblib - p_onnx| = {parity['max_abs_diff']:.2e} over {parity['n_rows']} rows "
            f"({parity['n_rows_with_missing']} with missing values)")
        explainer_file, explainer_bytes, explainer = export.explainer_artifact(model)
        (tmp / explainer_file).write_bytes(explainer_bytes)
        explainer["parity"] = export.explainer_parity(model, explainer, explainer_bytes, parity_X)
        say(f"explainer {explainer_file}: max |contribution - fitted model's| = "
            f"{explainer['parity']['max_abs_diff']:.2e} over {explainer['parity']['n_rows']} rows")

        importance = explain.global_importance(model, X_te)
        label = f"{model_type} ({trained.calibration['method']} calibration)"
        evaluation.write_plots(tmp / "plots", y_te, p_te, p_base, trained.threshold, importance, spec.title, label)
        report.write(tmp / "validation_report.json")

        manifest: dict[str, Any] = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "use_case": spec.use_case,
            "title": spec.title,
            "model_type": model_type,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "dataset_sha256": report.dataset_sha256,
            "dataset_file": data_path.name,
            "split_sha256": split.sha256,
            "seed": seed,
            "threshold": float(trained.threshold),
            "threshold_rule": f"{config.threshold_rule} on calibrated out-of-fold predictions of the training part",
            "risk_bands": {
                "low": f"p < {trained.threshold / 2:.4f}",
                "moderate": f"{trained.threshold / 2:.4f} <= p < {trained.threshold:.4f}",
                "high": f"p >= {trained.threshold:.4f}",
                "moderate_from": float(trained.threshold / 2),
                "high_from": float(trained.threshold),
            },
            "features": [
                {
                    "name": f.name,
                    "label": f.label,
                    "type": f.type,
                    "unit": f.unit,
                    "accepted_units": list(f.accepted_units),
                    "loinc": f.loinc,
                    "min": f.min,
                    "max": f.max,
                    "allow_missing": f.allow_missing,
                }
                for f in spec.features
            ],
            "feature_order": list(spec.feature_names),
            "input_name": export.ONNX_INPUT_NAME,
            "input_dtype": "float32",
            "input_shape": [None, len(spec.feature_names)],
            "output_name": export.ONNX_OUTPUT_NAME,
            "output_positive_index": 1,
            "missing_value_handling": (
                "send NaN for a missing input; XGBoost routes it down the branch learned in training"
                if model_type == "xgboost"
                else "send NaN for a missing input; the pipeline imputes the training median"
            ),
            "metrics": {
                "cv": {**trained.selected.summary, "folds": config.cv_folds},
                "test": test_metrics,
                "subgroups": subgroups,
            },
            "linear_baseline": {
                "model": "median imputation + standard scaling + logistic regression (C=1, unweighted)",
                "cv": baseline_cv,
                "test": base_test,
            },
            "cv": {
                "method": f"stratified {config.cv_folds}-fold CV grouped by patient "
                          f"(random_state={seed + 1}) on the training part only",
                "folds": config.cv_folds,
                "selection_metric": config.selection_metric,
                "selected_params": trained.selected.params,
                "per_fold": trained.selected.fold_metrics,
                "candidates": [{"params": c.params, **c.summary} for c in trained.candidates],
            },
            "split": {
                "method": split.method,
                "test_fraction": config.test_fraction,
                "n_train": len(split.train),
                "n_test": len(split.test),
                "events_train": int(y_tr.sum()),
                "events_test": int(y_te.sum()),
                "grouped_by": spec.patient_id,
            },
            "data": {
                "n_rows": report.n_rows,
                "n_patients": report.n_patients,
                "n_events": report.n_events,
                "prevalence": report.prevalence,
                "n_warnings": len(report.warnings),
                "per_feature": report.features,
            },
            "imbalance": trained.imbalance,
            "calibration": trained.calibration,
            "explanation": {"method": explain.explanation_method(model), "global_importance": importance},
            # What the web process explains with (ml/serving_explain.py): no pickle, no scikit-learn.
            "explainer": explainer,
            "onnx_parity_max_abs_diff": parity["max_abs_diff"],
            "onnx_parity": {
                **parity,
                "rows": "test part plus a copy of it with ~30% of values set to NaN",
            },
            "reference_profile": evaluation.reference_profile(spec, X_tr, trained.oof_calibrated),
            "spec": spec.to_dict(),
            "config": config.to_dict(),
            "versions": package_versions(),
        }
        say("writing the model card")
        write_model_card(manifest, report.to_dict(), tmp)
        manifest["artifacts"] = {
            name: {"sha256": export.sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            for name in (*ARTIFACT_FILES, explainer_file)
        }
        manifest["train_seconds"] = round(time.perf_counter() - t_start, 2)
        manifest["mlflow_run_id"] = None
        manifest["mlflow_model_version"] = None
        if tracking:
            from ml import tracking as tracking_mod

            say("logging to MLflow")
            manifest = tracking_mod.log_training_run(manifest, tmp, onx, tracking_uri=tracking_uri)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"done: {out_dir} (test AUROC {test_metrics['auroc']:.3f}, CI {test_metrics['auroc_ci'][0]:.3f}-"
        f"{test_metrics['auroc_ci'][1]:.3f})")
    return manifest


def _replace_dir(src: Path, dst: Path) -> None:
    old: Path | None = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:12]}"
        dst.rename(old)
    src.rename(dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_manifest(run_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
    return result
