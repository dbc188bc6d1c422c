"""Retraining in this process (the real pipeline, fast config): a candidate is registered and never promoted; the
same request never trains twice; invalid data fail with the validation report and register nothing."""

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.audit.models import AuditEvent
from apps.monitoring.models import RetrainingRun
from apps.monitoring.services import retraining_request, retraining_run_execute
from apps.registry.models import ModelVersion

from .conftest import ACTOR


def test_retrain_command_registers_a_candidate_and_never_promotes(champion: Any, retrain_settings: Any) -> None:
    out = io.StringIO()

    call_command("retrain", "--use-case", "diabetes", "--inline", stdout=out)

    run = RetrainingRun.objects.get()
    candidate = run.candidate
    champion.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 1 and run.candidate_created
    assert candidate.status == ModelVersion.Status.CANDIDATE and candidate.label == "diabetes@2"
    assert champion.status == ModelVersion.Status.CHAMPION  # never promoted
    assert candidate.source == f"retraining run {run.pk}"
    assert run.validation_report["valid"] is True and run.dataset_sha256
    assert "registered candidate diabetes@2" in out.getvalue()
    actions = list(AuditEvent.objects.filter(action__in=["retraining.request", "retraining.start", "model.register",
                                                         "retraining.succeed"]).order_by("seq")
                   .values_list("action", flat=True))
    assert actions[-4:] == ["retraining.request", "retraining.start", "model.register", "retraining.succeed"]
    assert not (Path(retrain_settings.CLINPREDICT_RETRAIN["work_dir"]) / str(run.pk)).exists()


def test_a_finished_run_is_not_trained_again(champion: Any, retrain_settings: Any) -> None:
    run = retraining_request(use_case="diabetes", actor=ACTOR, trigger="test", enqueue_task=False).run
    retraining_run_execute(run_id=run.pk)
    versions = ModelVersion.objects.count()

    again = retraining_run_execute(run_id=run.pk)  # a redelivered message

    assert again is not None and again.status == "succeeded" and again.attempts == 1
    assert ModelVersion.objects.count() == versions


def test_the_same_request_and_an_active_run_never_train_twice(champion: Any, retrain_settings: Any) -> None:
    first = retraining_request(use_case="diabetes", actor=ACTOR, trigger="test", request_key="k-1")
    same_key = retraining_request(use_case="diabetes", actor=ACTOR, trigger="test", request_key="k-1")
    other_key = retraining_request(use_case="diabetes", actor=ACTOR, trigger="test", request_key="k-2")

    assert first.created and not same_key.created and not other_key.created
    assert same_key.run.pk == other_key.run.pk == first.run.pk  # queued (this test never commits): one run
    assert RetrainingRun.objects.count() == 1


def test_invalid_training_data_fail_with_the_validation_report_and_register_nothing(
        champion: Any, retrain_settings: Any) -> None:
    data = Path(retrain_settings.CLINPREDICT_RETRAIN["datasets"]["diabetes"])
    rows = list(csv.DictReader(data.open()))
    with data.open("w", newline="") as handle:  # every glucose value unusable (not a number)
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "Glucose": "high"} for row in rows)
    versions = ModelVersion.objects.count()

    with pytest.raises(CommandError, match="the training data are invalid"):
        call_command("retrain", "--use-case", "diabetes", "--inline", stdout=io.StringIO())

    run = RetrainingRun.objects.get()
    assert run.status == "failed" and run.candidate is None
    assert run.validation_report["valid"] is False
    assert any(error["column"] == "Glucose" for error in run.validation_report["errors"])
    assert ModelVersion.objects.count() == versions
    assert AuditEvent.objects.filter(action="retraining.fail", output__valid_data=False).count() == 1


def test_retraining_a_use_case_without_data_is_refused_naming_the_field(champion: Any, settings: Any,
                                                                        tmp_path: Path) -> None:
    settings.CLINPREDICT_RETRAIN = {**settings.CLINPREDICT_RETRAIN,
                                    "datasets": {"diabetes": tmp_path / "missing.csv"}}

    with pytest.raises(CommandError, match="does not exist"):
        call_command("retrain", "--use-case", "diabetes", stdout=io.StringIO())
    assert RetrainingRun.objects.count() == 0


def test_a_run_whose_worker_was_lost_too_often_is_given_up(champion: Any, retrain_settings: Any,
                                                           settings: Any) -> None:
    run = retraining_request(use_case="diabetes", actor=ACTOR, trigger="test", enqueue_task=False).run
    RetrainingRun.objects.filter(pk=run.pk).update(status="running", attempts=3)

    result = retraining_run_execute(run_id=run.pk)

    assert result is not None and result.status == "failed" and "gave up after 3 attempts" in result.error
    assert result.candidate is None
