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
from ml.features import one_hot_columns
from ml.schema import UseCaseSpec
from ml.training import (
    MODEL_CHOICES,
    MODEL_TYPES,
    FamilySearch,
    TrainConfig,
    TrainedModel,
    bootstrap_optimism,
    cv_search,
    fit_final,
    logistic_penalty,
    refit_all_rows,
    select_family,
    train_baseline,
    train_test_split_grouped,
)
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
    model_type: str = "auto",
    config: TrainConfig | None = None,
    tracking: bool = True,
    progress: Callable[[str], None] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and export one model; write the run folder ``out_dir``; return the manifest dict.

    ``model_type`` "auto" runs every family's CV search (``ml.training.MODEL_TYPES``) and keeps one by the
    one-standard-error rule (``manifest["model_selection"]``); a family name runs that family only. Small data
    (``TrainConfig.is_small``): repeated CV, the chosen model refitted on all rows, bootstrap optimism
    (``manifest["small_data"]``, ``manifest["final_fit"]``). ``manifest["signal"]`` says whether the data showed
    any signal.

    Raises ``ml.validation.DataValidationError`` for unusable data, ``ml.export.ExportError`` when the ONNX export
    does not reproduce the model, ``ValueError`` for bad arguments. Nothing is left in ``out_dir`` or MLflow then.
    """
    config = config or TrainConfig()
    say = _Progress(progress)
    t_start = time.perf_counter()
    data_path = Path(data_path)
    out_dir = Path(out_dir)
    if model_type not in MODEL_CHOICES:
        raise ValueError(f"unknown model type {model_type!r}; use one of {', '.join(MODEL_CHOICES)}")
    one_hot = one_hot_columns(spec)

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

    small = config.is_small(report.n_rows, report.n_events)
    repeats = config.small_data_cv_repeats if small else 1
    if small:
        say(f"small data ({report.n_rows} rows < {config.small_data_rows} or {report.n_events} events < "
            f"{config.small_data_events}): {repeats}x repeated {config.cv_folds}-fold CV, refit on all rows "
            f"{'on' if config.refit_on_all_rows else 'off'}, {config.optimism_bootstrap} optimism resamples")
    families = MODEL_TYPES if model_type == "auto" else (model_type,)
    searches: dict[str, FamilySearch] = {}
    for family in families:
        searches[family] = cv_search(family, X_tr, y_tr, g_tr, seed=seed, config=config, repeats=repeats,
                                     one_hot=one_hot, progress=say)
    selection = select_family(searches, config)
    selection["requested"] = model_type
    chosen = selection["chosen"]
    say(f"model family: {chosen} ({selection['reason']})")
    search = searches[chosen]
    trained = fit_final(chosen, search, X_tr, y_tr, spec.feature_names, seed=seed, config=config, one_hot=one_hot,
                        progress=say)
    model_type = chosen
    say("fitting the logistic baseline")
    baseline, baseline_cv = train_baseline(X_tr, y_tr, g_tr, seed=seed, config=config, one_hot=one_hot)

    say(f"evaluating on the test part ({len(y_te)} rows, {int(y_te.sum())} events; bootstrap {config.bootstrap})")
    p_te = trained.model.predict_proba(X_te)[:, 1]
    test_metrics = evaluation.full_metrics(y_te, p_te, trained.threshold, n_boot=config.bootstrap, seed=seed)
    signal = signal_verdict(search, trained, y_tr, test_metrics, config=config, seed=seed)
    if signal["verdict"] == "no_signal":
        say("WARNING: NO SIGNAL: " + "; ".join(signal["reasons"]))

    # At every size the held-out estimate above stays as evidence of how the procedure does on unseen rows; the
    # model that is exported is the same family and hyperparameters refitted on every row. Small data: a k-fold CV
    # of that candidate on all rows chooses its calibration and threshold anew. Larger data: the calibration and
    # threshold chosen on the training part's out-of-fold predictions are kept (one extra fit, not k + 1: at 100k
    # rows a second CV would cost minutes, and with 80% vs 100% of thousands of rows they barely move).
    refit = config.refit_on_all_rows
    final: TrainedModel = trained
    optimism: dict[str, Any] | None = None
    X_final, y_final = X_tr, y_tr
    if refit:
        say(f"refitting {chosen} {json.dumps(trained.selected.params, sort_keys=True)} on all {len(data.y)} rows")
        if small:
            final = refit_all_rows(chosen, trained.selected.params, data.X, data.y, data.groups, spec.feature_names,
                                   seed=seed, config=config, one_hot=one_hot, progress=say)
        else:
            final = fit_final(chosen, search, X_tr, y_tr, spec.feature_names, seed=seed, config=config,
                              one_hot=one_hot, progress=say, fit_rows=(data.X, data.y))
        X_final, y_final = data.X, data.y
    if small:
        say(f"bootstrap optimism ({config.optimism_bootstrap} resamples)")
        optimism = bootstrap_optimism(chosen, final, X_final, y_final, seed=seed, config=config, one_hot=one_hot)
        say(f"optimism-corrected AUROC {optimism['corrected_auroc']:.3f} (apparent {optimism['apparent_auroc']:.3f})")
    model = final.model
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
        if refit:
            label += ", fitted on the training part"
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
            "threshold": float(final.threshold),
            "threshold_rule": f"{config.threshold_rule} on calibrated out-of-fold predictions of "
                              + ("all rows" if refit and small else "the training part"),
            "risk_bands": {
                "low": f"p < {final.threshold / 2:.4f}",
                "moderate": f"{final.threshold / 2:.4f} <= p < {final.threshold:.4f}",
                "high": f"p >= {final.threshold:.4f}",
                "moderate_from": float(final.threshold / 2),
                "high_from": float(final.threshold),
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
                    **({"categories": list(f.categories)} if f.categories else {}),
                    **({"labels": list(f.labels)} if f.labels else {}),
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
                else "send NaN for a missing input; the pipeline imputes the training median (the most frequent "
                     "category for a one-hot encoded feature)"
            ),
            "encoding": encoding_record(spec, model_type),
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
            "model_selection": {
                **selection,
                "families": {name: {**s.to_dict(config.selection_metric),
                                    **({"penalties": [logistic_penalty(c.params) for c in s.candidates]}
                                       if name == "logistic" else {})}
                             for name, s in searches.items()},
            },
            "small_data": {
                "active": small,
                "thresholds": {"rows": config.small_data_rows, "events": config.small_data_events},
                "n_rows": report.n_rows,
                "n_events": report.n_events,
                "cv_repeats": repeats,
                "optimism": optimism,
            },
            "final_fit": {
                "refit_on_all_rows": refit,
                "n_rows": int(len(y_final)),
                "n_events": int(np.sum(y_final)),
                "rows": "all rows (training and test parts)" if refit else "the training part",
                "threshold_and_calibration_from": (
                    f"out-of-fold predictions of a {config.cv_folds}-fold CV on all rows" if refit and small
                    else "out-of-fold predictions of the training part"),
                "evidence": (
                    "metrics.test is the held-out estimate of the same procedure (family, hyperparameters, "
                    "calibration) fitted on the training part only; the exported model has seen the test rows, so "
                    "its own performance is the optimism-corrected estimate in small_data.optimism" if refit and small
                    else "metrics.test is the held-out estimate of the same procedure (family, hyperparameters, "
                    "calibration, threshold) fitted on the training part only; the exported model is that procedure "
                    "refitted on every row (test rows included), so it has no held-out estimate of its own" if refit
                    else "metrics.test is the exported model's performance on the held-out test part"),
                "test_part_model": ({"threshold": float(trained.threshold), "calibration": trained.calibration}
                                    if refit else None),
            },
            "signal": signal,
            "cv": {
                "method": f"{search.method} on the training part only",
                "folds": config.cv_folds,
                "repeats": repeats,
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
            "imbalance": final.imbalance,
            "calibration": final.calibration,
            "explanation": {"method": explain.explanation_method(model), "global_importance": importance},
            # What the web process explains with (ml/serving_explain.py): no pickle, no scikit-learn.
            "explainer": explainer,
            "onnx_parity_max_abs_diff": parity["max_abs_diff"],
            "onnx_parity": {
                **parity,
                "rows": "test part plus a copy of it with ~30% of values set to NaN",
            },
            "reference_profile": evaluation.reference_profile(spec, X_final, final.oof_calibrated),
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


def signal_verdict(search: FamilySearch, trained: TrainedModel, y_train: np.ndarray, test_metrics: dict[str, Any],
                   *, config: TrainConfig, seed: int) -> dict[str, Any]:
    """Does the data show any signal? "no_signal" when the chosen candidate's CV AUROC 95% CI (stratified bootstrap
    of its out-of-fold predictions) includes 0.5, or the calibration slope of its out-of-fold predictions or of the
    held-out test predictions is below ``signal_min_calibration_slope`` (near zero: the predicted risks do not
    track the outcome). The reasons name each failed condition with its numbers."""
    oof = search.best.oof
    ok = np.isfinite(oof)
    lo, hi = evaluation.bootstrap_ci(y_train[ok], oof[ok], evaluation.fast_auroc, n_boot=config.bootstrap, seed=seed)
    cv_auroc = evaluation.auroc(y_train[ok], oof[ok])
    cv_slope = evaluation.calibration_slope_intercept(y_train[ok], oof[ok])[0]
    test_slope = test_metrics.get("calibration_slope")
    limit = config.signal_min_calibration_slope
    reasons: list[str] = []
    if np.isfinite(lo) and lo <= 0.5 <= hi:
        reasons.append(f"the CV AUROC's 95% CI ({lo:.3f}-{hi:.3f}) includes 0.5 (no better than chance)")
    if np.isfinite(cv_slope) and cv_slope < limit:
        reasons.append(f"the CV calibration slope {cv_slope:.2f} is below {limit:g}: predicted risks barely track "
                       "the outcome")
    if test_slope is not None and np.isfinite(test_slope) and test_slope < limit:
        reasons.append(f"the test calibration slope {test_slope:.2f} is below {limit:g}: predicted risks barely "
                       "track the outcome")
    return {
        "verdict": "no_signal" if reasons else "signal",
        "reasons": reasons,
        "cv_auroc": cv_auroc,
        "cv_auroc_ci": [lo, hi],
        "cv_calibration_slope": cv_slope,
        "test_calibration_slope": test_slope,
        "min_calibration_slope": limit,
        "rule": "no_signal when the CV AUROC 95% CI (stratified bootstrap of the selected candidate's out-of-fold "
                "predictions on the training part) includes 0.5, or the calibration slope of those predictions "
                f"or of the test predictions is below {limit:g}",
    }


def encoding_record(spec: UseCaseSpec, model_type: str) -> dict[str, Any]:
    """How each categorical/binary feature reaches the model (``manifest["encoding"]``)."""
    out: dict[str, Any] = {}
    for f in spec.features:
        if f.type == "categorical":
            how = ("one-hot (one 0/1 column per category; missing -> most frequent category)"
                   if f.one_hot and model_type != "xgboost" else "category code 0..k-1 (spec order)")
            out[f.name] = {"type": "categorical", "ordinal": f.ordinal, "categories": list(f.categories),
                           "encoding": how}
        elif f.type == "binary":
            out[f.name] = {"type": "binary", "labels": list(f.labels) or None, "encoding": "0/1"}
    return out


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
