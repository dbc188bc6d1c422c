"""Periodic ledger jobs (scheduled by CELERY_BEAT_SCHEDULE in settings): chain verification and encrypted backup.
Each calls one service, takes no arguments and is safe to rerun."""

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from .actors import Actor
from .models import AuditChainVerification
from .services import audit_backup_create, audit_chain_verification_run

logger = logging.getLogger(__name__)

BACKUP_ACTOR = Actor(type="system", id="audit.backup task")


@shared_task(name="audit.verify_chain", acks_late=True)
def audit_chain_verify_task() -> dict[str, Any]:
    record = audit_chain_verification_run(trigger=AuditChainVerification.Trigger.TASK)
    return {"ok": record.ok, "events": record.event_count, "head_hash": record.head_hash,
            "broken_seq": record.broken_seq, "reason": record.reason}


@shared_task(name="audit.backup", acks_late=True)
def audit_backup_task() -> dict[str, Any]:
    backup = audit_backup_create(actor=BACKUP_ACTOR, key=settings.AUDIT_BACKUP_KEY,
                                 directory=settings.AUDIT_BACKUP_DIR)
    if backup is None:
        logger.info("audit backup: nothing new to back up")
        return {"backed_up": 0}
    logger.info("audit backup written", extra={"file": backup.file_name, "events": backup.event_count})
    return {"backed_up": backup.event_count, "file": backup.file_name, "first_seq": backup.first_seq,
            "last_seq": backup.last_seq}
