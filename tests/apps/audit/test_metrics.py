import io
import re
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from apps.audit.models import AuditEvent
from apps.audit.testing import audit_triggers_disabled


def _gauge(name: str) -> float | None:
    text = Client().get("/metrics").content.decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_metrics_report_the_latest_stored_verification(record_events: Callable[..., list[AuditEvent]]) -> None:
    record_events(3)
    assert _gauge("clinpredict_audit_chain_ok") is None  # never verified: no value rather than a wrong one

    call_command("verify_audit_chain", stdout=io.StringIO())

    assert _gauge("clinpredict_audit_chain_ok") == 1.0
    assert _gauge("clinpredict_audit_chain_events") == 3.0
    assert _gauge("clinpredict_audit_chain_verified_timestamp_seconds") > 0

    with audit_triggers_disabled(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = 'x' WHERE seq = 2")
    with pytest.raises(CommandError):
        call_command("verify_audit_chain", stdout=io.StringIO())

    assert _gauge("clinpredict_audit_chain_ok") == 0.0
