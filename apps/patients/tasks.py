"""Patients tasks: no patient data in arguments, one service call each, safe to rerun."""

import logging
from typing import Any

from celery import shared_task

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError

from .services import DEFAULT_SYNC_USE_CASE, fhir_sync_run

logger = logging.getLogger(__name__)

SYNC_ACTOR = Actor(type="system", id="patients.sync_fhir task")


@shared_task(name="patients.sync_fhir", acks_late=True)
def sync_fhir_task(use_case: str = DEFAULT_SYNC_USE_CASE, full: bool = False) -> dict[str, Any]:
    """Incremental FHIR sync for one use case. Idempotent: upserts by (source, source id); a failed run leaves the
    watermark where it was, so the next run (or a retry) asks for the same resources again."""
    try:
        run = fhir_sync_run(spec=use_case, actor=SYNC_ACTOR, full=full)
    except ApplicationError as exc:
        logger.warning("FHIR sync not started", extra={"code": exc.code, "error": exc.message})
        return {"run_id": None, "status": "not_started", "code": exc.code, "error": exc.message}
    if not run.complete:
        logger.warning("FHIR sync failed", extra={"run_id": run.pk, "error": run.error})
    return {"run_id": run.pk, "status": run.status, "counts": run.counts,
            "unmapped": {reason: entry["count"] for reason, entry in run.unmapped.items()}, "error": run.error}
