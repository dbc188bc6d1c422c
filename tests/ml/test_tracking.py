from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ml import tracking


def test_run_is_logged_and_model_version_registered(xgb_run: tuple[Path, dict[str, Any]], tracking_uri: str) -> None:
    import mlflow

    _, m = xgb_run
    assert m["mlflow_run_id"] and m["mlflow_model_name"] == "clinpredict-diabetes"
    assert isinstance(m["mlflow_model_version"], int) and m["mlflow_model_version"] >= 1
    assert m["mlflow_tracking_uri"] == tracking_uri
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(m["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_auroc"] == pytest.approx(m["metrics"]["test"]["auroc"])
    assert run.data.metrics["onnx_parity_max_abs_diff"] <= 1e-5
    assert run.data.params["dataset_sha256"] == m["dataset_sha256"]
    assert run.data.params["split_sha256"] == m["split_sha256"]
    version = client.get_model_version("clinpredict-diabetes", str(m["mlflow_model_version"]))
    assert version.run_id == m["mlflow_run_id"]
    artifacts = {a.path for a in client.list_artifacts(m["mlflow_run_id"], "plots")}
    assert {"plots/roc.png", "plots/pr.png", "plots/calibration.png", "plots/importance.png"} <= artifacts
    run_files = {a.path for a in client.list_artifacts(m["mlflow_run_id"], "run")}
    assert {"run/manifest.json", "run/model.onnx", "run/model_card.md"} <= run_files


def test_tracking_uri_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri() == "sqlite:///var/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    assert tracking.resolve_tracking_uri() == "sqlite:////tmp/x.db"
    assert tracking.resolve_tracking_uri("sqlite:////tmp/y.db") == "sqlite:////tmp/y.db"
    assert tracking.registered_model_name("t2d_fhir") == "clinpredict-t2d_fhir"
