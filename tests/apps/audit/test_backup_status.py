"""The daily encrypted backup is either on (it has its key) or visibly off: its state is on the monitoring page and
in /readyz, and the beat schedule carries the job only with a key. Never a silent daily failure."""

import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditBackup, AuditEvent
from apps.audit.selectors import audit_backup_status
from apps.audit.services import audit_backup_create

from .conftest import TEST_ACTOR

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def model_admin_client(db: None, user_in_group: Callable[..., Any]) -> Client:
    client = Client()
    client.force_login(user_in_group("Model admins", "modeladmin", staff=True))
    return client


def test_without_a_key_the_backup_is_off_and_readyz_and_the_monitoring_page_say_so(
        db: None, settings: Any, client: Client, model_admin_client: Client) -> None:
    settings.AUDIT_BACKUP_KEY = ""

    ready = client.get("/readyz").json()["checks"]["audit_backup"]
    page = model_admin_client.get("/monitoring/").content.decode()

    assert ready["ok"] is True and ready["state"] == "off" and "AUDIT_BACKUP_KEY is not set" in ready["detail"]
    assert 'data-backup-state="off"' in page and "AUDIT_BACKUP_KEY is not set" in page


def test_with_a_key_and_a_recent_backup_it_is_on(
        record_events: Callable[..., list[AuditEvent]], backup_key: str, settings: Any, client: Client,
        model_admin_client: Client) -> None:
    record_events(3)
    backup = audit_backup_create(actor=TEST_ACTOR, key=backup_key, directory=settings.AUDIT_BACKUP_DIR)
    assert backup is not None

    ready = client.get("/readyz").json()["checks"]["audit_backup"]
    page = model_admin_client.get("/monitoring/").content.decode()

    assert ready["state"] == "on" and f"up to event {backup.last_seq}" in ready["detail"]
    assert ready["last_backup_at"] is not None
    assert 'data-backup-state="on"' in page


def test_a_backup_older_than_a_day_with_new_events_is_overdue(
        record_events: Callable[..., list[AuditEvent]], backup_key: str, settings: Any) -> None:
    record_events(2)
    backup = audit_backup_create(actor=TEST_ACTOR, key=backup_key, directory=settings.AUDIT_BACKUP_DIR)
    assert backup is not None
    record_events(1)  # happened after the backup

    later = AuditBackup.objects.get().created_at + timedelta(hours=27)
    soon = AuditBackup.objects.get().created_at + timedelta(hours=2)

    assert audit_backup_status(key=backup_key, now=later).state == "overdue"
    assert audit_backup_status(key=backup_key, now=soon).state == "on"
    assert audit_backup_status(key="", now=timezone.now()).state == "off"


def test_the_beat_schedule_has_the_daily_backup_only_with_a_key() -> None:
    code = ("from django.conf import settings; "
            "print('audit-backup-daily' in settings.CELERY_BEAT_SCHEDULE)")

    def scheduled(key: str) -> str:
        env = {"DJANGO_SETTINGS_MODULE": "clinpredict.settings.test", "AUDIT_BACKUP_KEY": key,
               "PATH": "/usr/bin:/bin"}
        result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=120, check=True)
        return result.stdout.strip()

    assert scheduled("") == "False"
    assert scheduled("a2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODlhYmM=") == "True"
