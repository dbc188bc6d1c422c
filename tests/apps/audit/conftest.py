"""Fixtures for the audit ledger tests."""

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent

TEST_ACTOR = Actor(type="system", id="tests")


@pytest.fixture
def record_events(db: None) -> Callable[..., list[AuditEvent]]:
    """Append n events through the real writer, each with a patient and a small input snapshot."""
    from apps.audit.services import audit_event_record_standalone

    def make(n: int, **fields: Any) -> list[AuditEvent]:
        defaults: dict[str, Any] = {"action": "test.event"}
        return [audit_event_record_standalone(actor=TEST_ACTOR, **{
            **defaults, "inputs": {"i": i, "glucose": 7.9, "x": i / 3}, "patient_ref": f"p-{i}", **fields})
            for i in range(n)]

    return make


@pytest.fixture
def backup_key(settings: Any, tmp_path: Path) -> str:
    key = base64.b64encode(bytes(range(32))).decode()
    settings.AUDIT_BACKUP_KEY = key
    settings.AUDIT_BACKUP_DIR = tmp_path / "audit-backups"
    return key


@pytest.fixture
def other_key() -> str:
    return base64.b64encode(bytes(range(100, 132))).decode()
