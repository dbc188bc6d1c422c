from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from apps.audit.actors import Actor
from apps.audit.models import AuditChainVerification, AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.audit.services import audit_event_record, audit_event_record_standalone
from apps.audit.testing import audit_triggers_disabled

ACTOR = Actor(type="system", id="tests")


def _record(n: int) -> list[AuditEvent]:
    return [audit_event_record_standalone(actor=ACTOR, action="test.event", inputs={"i": i, "x": i / 3})
            for i in range(n)]


def _tamper(sql: str, params: list[Any]) -> None:
    """What a database superuser can do once they switch the append-only triggers off on purpose."""
    with audit_triggers_disabled(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def _verify_command() -> tuple[str, str]:
    from io import StringIO

    out = StringIO()
    try:
        call_command("verify_audit_chain", stdout=out)
    except CommandError as exc:
        return out.getvalue().strip(), str(exc)
    return out.getvalue().strip(), ""


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


def test_verify_command_prints_ok_with_count_and_head(db: None) -> None:
    events = _record(3)

    out, error = _verify_command()

    assert out == f"OK 3 events, head {events[-1].hash}" and error == ""
    record = AuditChainVerification.objects.get()
    assert record.ok and record.event_count == 3 and record.head_seq == 3 and record.head_hash == events[-1].hash


def test_one_byte_changed_in_an_input_names_that_sequence_number(db: None) -> None:
    _record(5)
    original = AuditEvent.objects.values_list("inputs", flat=True).get(seq=3)
    # One byte of the stored JSON: the digit 2 of {"i": 2, ...} becomes 3.
    _tamper("UPDATE audit_auditevent SET inputs = replace(inputs::text, '\"i\": 2', '\"i\": 3')::jsonb WHERE seq = 3"
            if connection.vendor == "postgresql" else
            "UPDATE audit_auditevent SET inputs = replace(inputs, '\"i\": 2', '\"i\": 3') WHERE seq = 3", [])
    assert AuditEvent.objects.values_list("inputs", flat=True).get(seq=3) == {**original, "i": 3}

    out, error = _verify_command()

    assert out == "BROKEN at #3: #3 content was altered (hash mismatch)"
    assert "broken at #3" in error
    assert not AuditChainVerification.objects.get().ok


def test_verify_names_an_altered_actor(db: None) -> None:
    _record(5)
    _tamper("UPDATE audit_auditevent SET actor_id = %s WHERE seq = %s", ["mallory", 3])

    result = audit_chain_verify()

    assert not result.ok and result.broken_seq == 3 and "altered" in result.reason


def test_deleted_row_is_named_as_a_gap(db: None) -> None:
    _record(5)
    _tamper("DELETE FROM audit_auditevent WHERE seq = %s", [4])

    out, _error = _verify_command()

    assert out == "BROKEN at #4: sequence gap: expected #4, found #5 (#4 missing)"


def test_rehashed_forgery_is_named_at_the_next_event(db: None) -> None:
    from apps.audit.hashing import HASHED_FIELDS, event_hash

    events = _record(4)
    forged = {name: getattr(events[1], name) for name in HASHED_FIELDS} | {"actor_id": "mallory"}
    _tamper("UPDATE audit_auditevent SET actor_id = %s, hash = %s WHERE seq = 2",
            ["mallory", event_hash(forged, events[1].prev_hash)])

    result = audit_chain_verify()

    assert not result.ok and result.broken_seq == 3 and "does not follow #2" in result.reason


def test_swapped_events_are_reported_as_reordered(db: None) -> None:
    _record(4)
    _tamper("UPDATE audit_auditevent SET seq = -seq WHERE seq IN (2, 3)", [])
    _tamper("UPDATE audit_auditevent SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE seq IN (-2, -3)", [])

    result = audit_chain_verify()

    assert not result.ok and result.broken_seq == 2 and "reordered" in result.reason


def test_removing_the_newest_events_is_caught_by_the_last_verified_head(db: None) -> None:
    _record(5)
    assert _verify_command()[0].startswith("OK 5 events")
    _tamper("DELETE FROM audit_auditevent WHERE seq >= %s", [4])
    assert audit_chain_verify().ok  # the chain alone cannot see a shorter tail

    out, _error = _verify_command()

    assert out == ("BROKEN at #4: tail removed: the chain ends at #3, but #5 was the verified head earlier "
                   "(#4..#5 missing)")


def test_empty_ledger_verifies(db: None) -> None:
    assert _verify_command() == (f"OK 0 events, head {'0' * 64}", "")


def test_the_periodic_task_stores_the_result(record_events: Callable[..., list[AuditEvent]]) -> None:
    from apps.audit.tasks import audit_chain_verify_task

    record_events(2)

    result = audit_chain_verify_task.apply().get()

    assert result["ok"] is True and result["events"] == 2
    assert AuditChainVerification.objects.get().trigger == AuditChainVerification.Trigger.TASK
