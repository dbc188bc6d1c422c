"""Daily summaries per model version, logged to the model's MLflow experiment (a real sqlite tracking store in tmp)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.monitoring.models import DailySummary
from apps.monitoring.services import daily_summary_run, drift_check_run
from apps.monitoring.tasks import daily_summary_task
from apps.patients.models import Patient
from apps.patients.services import outcome_record

from .conftest import ACTOR


@pytest.fixture
def tracking_uri(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    settings.MLFLOW_TRACKING_URI = uri
    return uri


def test_daily_summary_of_each_model_version_is_logged_to_its_mlflow_experiment(
        champion: Any, predict_pima: Callable[..., list[Any]], pima_rows: list[dict[str, str]], tracking_uri: str,
        settings: Any) -> None:
    from mlflow import MlflowClient

    settings.CLINPREDICT_RETRAIN = {**settings.CLINPREDICT_RETRAIN, "on_drift": False}
    settings.CLINPREDICT_PERFORMANCE = {**settings.CLINPREDICT_PERFORMANCE, "min_outcomes": 20}
    predictions = predict_pima(120)
    labels = {row["patient_id"]: row["Outcome"] == "1" for row in pima_rows}
    Patient.objects.bulk_create([Patient(identifier=p.patient_ref, source="csv:t", external_id=p.patient_ref)
                                 for p in predictions])
    ids = dict(Patient.objects.values_list("identifier", "pk"))
    for p in predictions[:60]:
        outcome_record(patient_id=ids[p.patient_ref], use_case="diabetes", present=labels[p.patient_ref],
                       actor=ACTOR, source="tests", source_id=p.patient_ref)
    drift_check_run(use_case="diabetes", actor=ACTOR, trigger="test")
    today = timezone.localdate()

    (summary,) = daily_summary_run(day=today)

    assert (summary.model_label, summary.volume, summary.mlflow_status) == ("diabetes@1", 120, "ok")
    assert summary.mean_risk == pytest.approx(sum(p.probability for p in predictions) / 120)
    assert summary.positive_rate == pytest.approx(sum(p.positive for p in predictions) / 120)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("clinpredict-diabetes")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`clinpredict.inference_of` = 'diabetes@1'")
    assert run.info.run_id == summary.mlflow_run_id and run.info.run_name == "inference diabetes@1"
    logged = run.data.metrics
    assert logged["inference_volume"] == 120
    assert logged["inference_mean_risk"] == pytest.approx(summary.mean_risk)
    assert logged["drift_samples"] == 120 and "drift_psi.glucose" in logged and "drift_missing_rate.insulin" in logged
    assert (logged["realised_n"], logged["realised_events"]) == (60, sum(labels[p.patient_ref]
                                                                           for p in predictions[:60]))
    assert 0.5 < logged["realised_auroc"] <= 1 and "realised_calibration_slope" in logged
    (point,) = client.get_metric_history(run.info.run_id, "inference_volume")
    assert point.step == today.toordinal()

    # Rerunning the day changes nothing and adds no run.
    daily_summary_task.apply(kwargs={"day": today.isoformat()}).get()
    assert DailySummary.objects.count() == 1
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert len(client.get_metric_history(run.info.run_id, "inference_volume")) == 1


def test_an_mlflow_failure_is_recorded_and_retried_never_raised(champion: Any, predict_pima: Callable[..., list[Any]],
                                                                settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{blocker}/mlflow.db"  # cannot be created
    predict_pima(5)
    today = timezone.localdate()

    (summary,) = daily_summary_run(day=today)

    assert summary.mlflow_status == "failed" and summary.mlflow_detail
    assert AuditEvent.objects.filter(action="monitoring.daily_summary_mlflow", output__status="failed").exists()
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'ok' / 'mlflow.db'}"
    (again,) = daily_summary_run(day=today)
    assert again.pk == summary.pk and again.mlflow_status == "ok"
