from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ml import export
from ml.datasets import low_prevalence_frame, pima_frame
from ml.pipeline import ARTIFACT_FILES, train_run
from ml.schema import UseCaseSpec
from ml.training import TrainConfig
from ml.validation import DataValidationError

INTERFACE_KEYS = {
    "use_case", "model_type", "created_at", "dataset_sha256", "split_sha256", "seed", "threshold", "features",
    "metrics", "onnx_parity_max_abs_diff", "artifacts", "versions",
}
EXTRA_KEYS = {
    "spec", "input_name", "output_name", "feature_order", "reference_profile", "linear_baseline", "imbalance",
    "calibration", "cv", "threshold_rule", "mlflow_run_id", "mlflow_model_version", "explainer",
}


def test_run_folder_has_every_artifact(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = xgb_run
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for name in (*ARTIFACT_FILES, manifest["explainer"]["file"]):
        assert (out / name).is_file(), name
        assert manifest["artifacts"][name]["sha256"] == export.sha256_file(out / name)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temp folders left behind"


def test_manifest_has_interface_keys(xgb_run: tuple[Path, dict[str, Any]], diabetes_spec: UseCaseSpec) -> None:
    _, m = xgb_run
    assert INTERFACE_KEYS | EXTRA_KEYS <= set(m)
    assert m["use_case"] == "diabetes" and m["model_type"] == "xgboost" and m["seed"] == 7
    assert m["created_at"].endswith("+00:00")
    assert len(m["dataset_sha256"]) == 64 and len(m["split_sha256"]) == 64
    assert 0 < m["threshold"] < 1
    assert [f["name"] for f in m["features"]] == list(diabetes_spec.feature_names) == m["feature_order"]
    assert {"name", "unit", "loinc", "min", "max"} <= set(m["features"][0])
    assert {"auroc", "auprc"} <= set(m["metrics"]["cv"])
    test = m["metrics"]["test"]
    assert {"auroc", "auroc_ci", "auprc", "brier", "calibration_slope", "calibration_intercept"} <= set(test)
    assert test["auroc_ci"][0] < test["auroc"] < test["auroc_ci"][1]
    assert {"python", "sklearn", "xgboost", "onnxruntime"} <= set(m["versions"])
    assert UseCaseSpec.from_dict(m["spec"]) == diabetes_spec
    assert m["input_name"] == "features" and m["output_name"] == "probabilities"
    assert set(m["reference_profile"]["features"]) == set(diabetes_spec.feature_names)
    assert m["reference_profile"]["features"]["insulin"]["missing_fraction"] > 0.3
    assert m["linear_baseline"]["test"]["auroc"] > 0.7
    # No imbalance correction by default (weights move every predicted risk); the option is tested below.
    assert m["imbalance"]["method"] == "none" and m["imbalance"]["positive_weight"] == 1.0
    assert m["calibration"]["method"] in ("none", "sigmoid")
    assert "youden" in m["threshold_rule"]
    json.dumps(m)  # serialisable


def test_pima_discrimination_is_plausible(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    _, m = xgb_run
    assert 0.75 < m["metrics"]["test"]["auroc"] < 0.95
    assert 0.75 < m["metrics"]["cv"]["auroc"] < 0.95
    at = m["metrics"]["test"]["at_threshold"]
    assert at["tp"] + at["fp"] + at["tn"] + at["fn"] == m["split"]["n_test"]


def test_subgroups_cover_the_test_part(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    _, m = xgb_run
    groups = m["metrics"]["subgroups"]["age_band"]
    assert [g["group"] for g in groups][:2] == ["21-29", "30-39"]
    assert sum(g["n"] for g in groups) == m["split"]["n_test"]
    assert all({"sensitivity", "specificity", "ppv", "npv"} <= set(g["at_threshold"]) for g in groups)


def test_model_card_marks_human_parts_and_reports_ci(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, m = xgb_run
    md = (out / "model_card.md").read_text()
    html = (out / "model_card.html").read_text()
    assert "HUMAN INPUT REQUIRED" in md and 'class="human"' in html
    lo, hi = m["metrics"]["test"]["auroc_ci"]
    assert f"95% CI {lo:.3f}-{hi:.3f}" in md
    assert "logistic baseline" in md and "age_band" in md and "Disguised missing" in md
    assert "<table>" in html and "plots/roc.png" in html


def test_same_seed_gives_identical_metrics_and_onnx(xgb_run: tuple[Path, dict[str, Any]],
                                                    diabetes_spec: UseCaseSpec, pima_csv: Path,
                                                    fast_config: TrainConfig, tmp_path: Path) -> None:
    _, first = xgb_run
    second = train_run(spec=diabetes_spec, data_path=pima_csv, out_dir=tmp_path / "again", seed=7,
                       model_type="xgboost", config=fast_config, tracking=False)
    assert second["artifacts"]["model.onnx"]["sha256"] == first["artifacts"]["model.onnx"]["sha256"]
    assert second["metrics"] == first["metrics"]
    assert second["split_sha256"] == first["split_sha256"]
    assert second["threshold"] == first["threshold"]


def test_failed_validation_writes_nothing(diabetes_spec: UseCaseSpec, tmp_path: Path, tracking_uri: str) -> None:
    bad = tmp_path / "bad.csv"
    df = pima_frame()
    df["Outcome"] = 0
    df.to_csv(bad, index=False)
    out = tmp_path / "runs" / "fail"
    with pytest.raises(DataValidationError, match="label_no_positive"):
        train_run(spec=diabetes_spec, data_path=bad, out_dir=out, config=TrainConfig.fast(), tracking=True,
                  tracking_uri=tracking_uri)
    assert not out.exists()


def test_failed_export_writes_nothing_and_keeps_previous_run(
        diabetes_spec: UseCaseSpec, pima_csv: Path, tmp_path: Path, tracking_uri: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    out = tmp_path / "runs" / "keep"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text('{"previous": true}')
    mlflow.set_tracking_uri(tracking_uri)
    runs_before = len(mlflow.search_runs(search_all_experiments=True))

    def broken(*_args: object, **_kwargs: object) -> dict[str, Any]:
        raise export.ExportError("ONNX parity check failed: simulated")

    monkeypatch.setattr(export, "parity_check", broken)
    with pytest.raises(export.ExportError, match="simulated"):
        train_run(spec=diabetes_spec, data_path=pima_csv, out_dir=out, model_type="xgboost",
                  config=TrainConfig.fast(xgb_grid=({"max_depth": 2, "n_estimators": 20},)),
                  tracking=True, tracking_uri=tracking_uri)
    assert json.loads((out / "manifest.json").read_text()) == {"previous": True}
    assert sorted(p.name for p in out.parent.iterdir()) == ["keep"]
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


def test_failed_tracking_leaves_no_run_folder(diabetes_spec: UseCaseSpec, pima_csv: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ml import tracking

    def broken(*_args: object, **_kwargs: object) -> dict[str, Any]:
        raise RuntimeError("tracking server unavailable")

    monkeypatch.setattr(tracking, "log_training_run", broken)
    out = tmp_path / "runs" / "track"
    with pytest.raises(RuntimeError, match="unavailable"):
        train_run(spec=diabetes_spec, data_path=pima_csv, out_dir=out, model_type="xgboost",
                  config=TrainConfig.fast(xgb_grid=({"max_depth": 2, "n_estimators": 20},)), tracking=True)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_low_prevalence_dataset_trains_and_reports_auprc_ci(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = low_prevalence_frame(pima_frame(), "Outcome", 1, prevalence=0.03, seed=1, min_rows=2500)
    path = tmp_path / "rare.csv"
    df.to_csv(path, index=False)
    prevalence = df["Outcome"].mean()
    assert 0.025 < prevalence < 0.035
    m = train_run(spec=diabetes_spec, data_path=path, out_dir=tmp_path / "rare", seed=3, model_type="xgboost",
                  config=TrainConfig.fast(class_weight="balanced"), tracking=False)
    test = m["metrics"]["test"]
    assert test["events"] >= 10
    lo, hi = test["auprc_ci"]
    assert lo is not None and hi is not None and lo <= test["auprc"] <= hi
    assert m["imbalance"]["positive_weight"] > 20 and "scale_pos_weight" in m["imbalance"]["method"]
    assert m["onnx_parity_max_abs_diff"] <= 1e-5


def test_mlp_run_has_parity_and_calibration(mlp_run: tuple[Path, dict[str, Any]]) -> None:
    out, m = mlp_run
    assert m["model_type"] == "mlp"
    assert m["onnx_parity_max_abs_diff"] <= 1e-5
    assert m["metrics"]["test"]["auroc"] > 0.7
    assert m["imbalance"]["method"] == "none"  # no class weights by default (TrainConfig.class_weight)
    model = export.load_joblib(out / "model.joblib")
    steps = [name for name, _ in model.pipeline.steps]
    assert steps == ["impute", "scale", "mlp"]


def test_xgboost_pipeline_has_no_scaler_or_imputer(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = xgb_run
    model = export.load_joblib(out / "model.joblib")
    assert [name for name, _ in model.pipeline.steps] == ["xgb"]


def test_bad_model_type_is_rejected(diabetes_spec: UseCaseSpec, pima_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model type"):
        train_run(spec=diabetes_spec, data_path=pima_csv, out_dir=tmp_path / "x", model_type="svm", tracking=False)
    assert not (tmp_path / "x").exists()


def test_synthetic_fhir_dataset_trains(fhir_spec: UseCaseSpec, tmp_path: Path) -> None:
    from ml.datasets import write_synthetic_csv

    path = write_synthetic_csv(tmp_path / "t2d.csv", fhir_spec, 600, prevalence=0.2, seed=5)
    assert pd.read_csv(path).columns[0] == "patient_id"
    m = train_run(spec=fhir_spec, data_path=path, out_dir=tmp_path / "t2d", seed=1,
                  config=TrainConfig.fast(bootstrap=50), tracking=False)
    assert m["metrics"]["test"]["auroc"] > 0.6
    assert [g["group"] for g in m["metrics"]["subgroups"]["sex"]] == ["0", "1"]
    assert np.isfinite(m["onnx_parity_max_abs_diff"])


def test_benchmark_spec_mlp_on_adam_exports_with_parity_and_reproduces(tmp_path: Path) -> None:
    """The minibatch (Adam) MLP path used for large data: ONNX parity holds and the same seed gives the same
    model, metrics and ONNX bytes; the solver is recorded with the selected parameters."""
    from ml.datasets import write_synthetic_csv

    spec = UseCaseSpec.load(Path(__file__).resolve().parents[2] / "benchmarks" / "specs" / "synthetic30.yaml")
    path = write_synthetic_csv(tmp_path / "syn30.csv", spec, 1_500, prevalence=0.2, seed=2)
    cfg = TrainConfig.fast(bootstrap=50, mlp_adam_from_rows=0, large_data_rows=0, mlp_batch_size=64,
                          mlp_max_epochs=200)
    first = train_run(spec=spec, data_path=path, out_dir=tmp_path / "a", seed=3, model_type="mlp", config=cfg,
                      tracking=False)
    second = train_run(spec=spec, data_path=path, out_dir=tmp_path / "b", seed=3, model_type="mlp", config=cfg,
                       tracking=False)
    assert first["cv"]["selected_params"]["solver"] == "adam"
    assert len(first["cv"]["candidates"]) == len(cfg.mlp_grid_large)
    assert first["config"]["mlp_adam_from_rows"] == 0
    assert first["onnx_parity_max_abs_diff"] <= 1e-5
    # Adam keeps float32 weights: the non-pickle explainer still reproduces the fitted model's explanations.
    assert first["explainer"]["parity"]["max_abs_diff"] <= 1e-6
    assert first["metrics"]["test"]["auroc"] > 0.7
    assert second["artifacts"]["model.onnx"]["sha256"] == first["artifacts"]["model.onnx"]["sha256"]
    assert second["metrics"] == first["metrics"]
