from typing import Any

import pytest
from django.db import connection, transaction

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.audit.services import audit_event_record, audit_event_record_standalone

ACTOR = Actor(type="system", id="tests")


def _record(n: int) -> list[AuditEvent]:
    return [audit_event_record_standalone(actor=ACTOR, action="test.event", inputs={"i": i, "x": i / 3})
            for i in range(n)]


def test_events_are_chained_with_contiguous_sequence(db: None) -> None:
    events = _record(4)

    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert events[0].prev_hash == "0" * 64
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(events, events[1:], strict=False))
    result = audit_chain_verify()
    assert result.ok and result.count == 4 and result.head_hash == events[-1].hash


def test_writer_refuses_to_run_outside_a_transaction(db: None) -> None:
    # pytest-django wraps each test in a transaction; leave it to prove the guard.
    with pytest.raises(RuntimeError, match="inside the transaction"):
        connection.in_atomic_block = False
        try:
            audit_event_record(actor=ACTOR, action="test.event")
        finally:
            connection.in_atomic_block = True


def test_event_rolls_back_with_its_transaction(db: None) -> None:
    with pytest.raises(ValueError), transaction.atomic():
        audit_event_record(actor=ACTOR, action="test.event")
        raise ValueError("the change failed")

    assert AuditEvent.objects.count() == 0


def test_model_refuses_update_and_delete(db: None) -> None:
    (event,) = _record(1)

    with pytest.raises(PermissionError):
        event.action = "changed"
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(action="changed")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()


def _raw_update(seq: int, column: str, value: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE audit_auditevent SET {column} = %s WHERE seq = %s", [value, seq])  # noqa: S608


def test_verify_names_an_altered_event(db: None) -> None:
    _record(5)
    _raw_update(3, "actor_id", "mallory")

    result = audit_chain_verify()

    assert not result.ok and result.broken_seq == 3 and "altered" in result.reason


def test_verify_names_a_gap(db: None) -> None:
    _record(5)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 4")

    result = audit_chain_verify()

    assert not result.ok and result.broken_seq == 4 and "gap" in result.reason
