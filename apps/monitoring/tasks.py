"""Monitoring tasks: take ids (or nothing), call one service, safe to rerun. Scheduled by CELERY_BEAT_SCHEDULE
(settings/base.py, "Monitoring and the retraining loop").

The two that do real work per message (retrain, score_chunk) are acks_late with reject_on_worker_lost: a worker
killed mid-task leaves the message unacknowledged, the broker hands it out again, and the service's own idempotency
(a finished run or chunk is returned as it is; a chunk commits in one transaction) makes the rerun produce one
result. They have soft and hard time limits; the soft one lets the service record the failure."""

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from apps.core.exceptions import ApplicationError

from .models import Trigger
from .selectors import monitored_use_cases
from .services import (
    MONITORING_ACTOR,
    daily_summary_run,
    drift_check_run,
    performance_snapshots_record,
    retraining_request,
    retraining_run_execute,
    scoring_chunk_run,
    scoring_run_start,
)

logger = logging.getLogger(__name__)
_RETRAIN = settings.CLINPREDICT_RETRAIN


@shared_task(name="monitoring.retrain", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             soft_time_limit=_RETRAIN["soft_time_limit"], time_limit=_RETRAIN["time_limit"])
def retrain_task(run_id: str) -> dict[str, Any]:
    run = retraining_run_execute(run_id=run_id)
    if run is None:
        logger.warning("retraining run not found", extra={"run_id": run_id})
        return {"run_id": run_id, "status": "missing"}
    return {"run_id": str(run.pk), "status": run.status, "attempts": run.attempts,
            "candidate": run.candidate.label if run.candidate else None, "error": run.error or None}


@shared_task(name="monitoring.score_chunk", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             soft_time_limit=_RETRAIN["soft_time_limit"], time_limit=_RETRAIN["time_limit"])
def score_chunk_task(chunk_id: int) -> dict[str, Any]:
    chunk = scoring_chunk_run(chunk_id=chunk_id)
    if chunk is None:
        return {"chunk_id": chunk_id, "status": "missing"}
    return {"chunk_id": chunk.pk, "status": chunk.status, "predicted": chunk.predicted, "skipped": chunk.skipped}


def _each_use_case(action: str, call: Callable[[str], Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for use_case in monitored_use_cases():
        try:
            results[use_case] = call(use_case)
        except ApplicationError as exc:
            logger.warning("monitoring step skipped", extra={"step": action, "use_case": use_case,
                                                             "code": exc.code, "error": exc.message})
            results[use_case] = {"skipped": exc.message}
    return results


@shared_task(name="monitoring.score_daily", acks_late=True)
def score_daily_task() -> dict[str, Any]:
    def start(use_case: str) -> dict[str, Any]:
        plan = scoring_run_start(use_case=use_case, actor=MONITORING_ACTOR, trigger=Trigger.SCHEDULE)
        return {"run": plan.run.pk, "patients": plan.run.patients, "chunks": plan.run.chunks,
                "enqueue_errors": plan.enqueue_errors}

    return _each_use_case("score_daily", start)


@shared_task(name="monitoring.check_drift", acks_late=True)
def check_drift_task() -> dict[str, Any]:
    def check(use_case: str) -> dict[str, Any]:
        result = drift_check_run(use_case=use_case, actor=MONITORING_ACTOR, trigger=Trigger.SCHEDULE)
        return {"check": result.pk, "status": result.status, "alerts": result.alert_features}

    return _each_use_case("check_drift", check)


@shared_task(name="monitoring.realised_performance", acks_late=True)
def realised_performance_task() -> dict[str, Any]:
    def record(use_case: str) -> dict[str, Any]:
        snapshots = performance_snapshots_record(use_case=use_case, actor=MONITORING_ACTOR, trigger=Trigger.SCHEDULE)
        return {s.model_label: {"status": s.status, "n": s.n, "events": s.events, "auroc": s.auroc}
                for s in snapshots}

    return _each_use_case("realised_performance", record)


@shared_task(name="monitoring.daily_summary", acks_late=True)
def daily_summary_task(day: str | None = None) -> dict[str, Any]:
    """Summarise `day` (ISO date; default yesterday, UTC) per model version and log it to MLflow."""
    from datetime import date

    which = date.fromisoformat(day) if day else timezone.localdate() - timedelta(days=1)
    summaries = daily_summary_run(day=which)
    return {"day": which.isoformat(), "summaries": {s.model_label: s.mlflow_status or "pending" for s in summaries}}


@shared_task(name="monitoring.retrain_scheduled", acks_late=True)
def retrain_scheduled_task() -> dict[str, Any]:
    today = timezone.localdate().isoformat()

    def request(use_case: str) -> dict[str, Any]:
        result = retraining_request(use_case=use_case, actor=MONITORING_ACTOR, trigger=Trigger.SCHEDULE,
                                    reason="scheduled retraining", request_key=f"schedule:{use_case}:{today}")
        return {"run": str(result.run.pk), "created": result.created, "status": result.run.status}

    return _each_use_case("retrain_scheduled", request)
