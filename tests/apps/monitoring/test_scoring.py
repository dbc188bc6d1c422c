"""Daily scoring in this process (eager tasks): the patients with new observations are scored in chunks through the
prediction service, channel system, each prediction audited; rerunning the same day adds nothing."""

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.monitoring.models import ScoringChunk, ScoringRun
from apps.monitoring.services import scoring_run_start
from apps.patients.services import patients_import_csv
from apps.predictions.models import Prediction
from ml.schema import UseCaseSpec
from ml.validation import validate_record

from .conftest import ACTOR, DIABETES_SPEC, pima_features


def _pima_subset(pima_rows: list[dict[str, str]], path: Path, rows: int, **changes: str) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(pima_rows[0]))
        writer.writeheader()
        writer.writerows({**row, **changes} for row in pima_rows[:rows])
    return path


def test_score_daily_scores_patients_with_new_observations_in_audited_chunks(
        champion: Any, pima_rows: list[dict[str, str]], tmp_path: Path, eager_celery: None,
        django_capture_on_commit_callbacks: Any) -> None:
    spec = UseCaseSpec.load(DIABETES_SPEC)
    assert patients_import_csv(spec=DIABETES_SPEC, csv_path=_pima_subset(pima_rows, tmp_path / "a.csv", 30),
                               actor=ACTOR, source_name="scoring").ok
    scorable = {row["patient_id"] for row in pima_rows[:30] if validate_record(spec, pima_features(row)).ok}
    assert 0 < len(scorable) < 30  # some rows lack a required value (Pima's BMI 0 means "not measured")
    out = io.StringIO()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("score_daily", "--chunk-size", "10", stdout=out)

    run = ScoringRun.objects.get()
    assert (run.status, run.patients, run.chunks, run.predicted, run.skipped) == (
        "done", 30, 3, len(scorable), 30 - len(scorable))
    assert run.skipped_reasons == {"cannot be scored: bmi": 30 - len(scorable)}
    assert list(run.chunk_rows.values_list("status", flat=True)) == ["done"] * 3
    predictions = Prediction.objects.filter(channel=Prediction.Channel.SYSTEM)
    assert {p.patient_ref for p in predictions} == scorable
    assert {p.actor for p in predictions} == {"system:monitoring.score_daily"}
    events = {e.seq: e for e in AuditEvent.objects.filter(action="prediction.create")}
    for prediction in predictions:
        event = events[prediction.audit_seq]
        assert (event.object_id, event.patient_ref, event.output["channel"]) == (
            str(prediction.pk), prediction.patient_ref, "system")
    assert "30 patient(s) with new observations in 3 chunk(s) of at most 10" in out.getvalue()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("score_daily", stdout=(again := io.StringIO()))
    assert "already planned today" in again.getvalue()
    assert Prediction.objects.filter(channel="system").count() == len(scorable)

    # A new value for one patient: the next day's run scores that patient again (and retries the unscorable one).
    one = next(iter(sorted(scorable)))
    row = next(r for r in pima_rows if r["patient_id"] == one)
    update = _pima_subset([{**row, "BMI": "31.5", "Insulin": "100"}], tmp_path / "b.csv", 1)
    assert patients_import_csv(spec=DIABETES_SPEC, csv_path=update, actor=ACTOR, source_name="scoring").ok
    with django_capture_on_commit_callbacks(execute=True):
        plan = scoring_run_start(use_case="diabetes", actor=ACTOR, trigger="test",
                                 day=timezone.localdate() + timedelta(days=1))
    plan.run.refresh_from_db()
    assert (plan.run.patients, plan.run.predicted, plan.run.skipped, plan.run.status) == (2, 1, 1, "done")
    latest = Prediction.objects.filter(patient_ref=one).order_by("-created_at").first()
    assert (latest.features["bmi"], latest.features["insulin"]) == (31.5, 100.0)


def test_a_chunk_delivered_twice_is_scored_once(champion: Any, pima_rows: list[dict[str, str]], tmp_path: Path,
                                                eager_celery: None, django_capture_on_commit_callbacks: Any) -> None:
    from apps.monitoring.tasks import score_chunk_task

    patients_import_csv(spec=DIABETES_SPEC, csv_path=_pima_subset(pima_rows, tmp_path / "a.csv", 5), actor=ACTOR,
                        source_name="twice")
    with django_capture_on_commit_callbacks(execute=True):
        scoring_run_start(use_case="diabetes", actor=ACTOR, trigger="test")
    chunk = ScoringChunk.objects.get()
    before = Prediction.objects.count()

    result = score_chunk_task.apply(args=[chunk.pk]).get()

    assert result["status"] == "done" and Prediction.objects.count() == before
