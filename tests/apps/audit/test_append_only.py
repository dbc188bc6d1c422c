"""The database itself refuses to change or remove audit rows. On PostgreSQL the tests connect as `postgres`, a
superuser, and the triggers still fire: they are ENABLE ALWAYS and no role bypasses them short of DDL."""

from collections.abc import Callable

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent


def _raw(sql: str) -> None:
    # A savepoint, so the rejected statement leaves the test's transaction usable.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)


def test_raw_update_is_rejected_by_the_database(record_events: Callable[..., list[AuditEvent]]) -> None:
    record_events(3)

    with pytest.raises(DatabaseError, match="append-only: UPDATE rejected"):
        _raw("UPDATE audit_auditevent SET actor_id = 'mallory' WHERE seq = 2")

    assert AuditEvent.objects.get(seq=2).actor_id == "tests"


def test_raw_delete_is_rejected_by_the_database(record_events: Callable[..., list[AuditEvent]]) -> None:
    record_events(3)

    with pytest.raises(DatabaseError, match="append-only: DELETE rejected"):
        _raw("DELETE FROM audit_auditevent WHERE seq = 2")

    assert AuditEvent.objects.count() == 3


def test_truncate_is_rejected_by_the_database(record_events: Callable[..., list[AuditEvent]]) -> None:
    record_events(3)
    # SQLite has no TRUNCATE; its equivalent is an unqualified DELETE (which still runs the DELETE trigger).
    statement, refused = (("TRUNCATE audit_auditevent", "TRUNCATE rejected") if connection.vendor == "postgresql"
                          else ("DELETE FROM audit_auditevent", "DELETE rejected"))

    with pytest.raises(DatabaseError, match=f"append-only: {refused}"):
        _raw(statement)

    assert AuditEvent.objects.count() == 3


def test_replica_mode_does_not_switch_the_triggers_off(record_events: Callable[..., list[AuditEvent]]) -> None:
    record_events(2)
    if connection.vendor == "postgresql":
        # The usual way to bypass triggers (pg_dump/logical replication) must not work on the ledger.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'audit_auditevent'::regclass "
                           "AND NOT tgisinternal ORDER BY tgname")
            triggers = cursor.fetchall()
        assert triggers == [("audit_auditevent_no_delete", "A"), ("audit_auditevent_no_truncate", "A"),
                            ("audit_auditevent_no_update", "A")]
        for statement in ("UPDATE audit_auditevent SET action = 'x'", "DELETE FROM audit_auditevent",
                          "TRUNCATE audit_auditevent"):
            with pytest.raises(DatabaseError, match="append-only"):
                _raw(statement)
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_auditevent' "
                           "ORDER BY name")
            assert [row[0] for row in cursor.fetchall()] == ["audit_auditevent_no_delete",
                                                              "audit_auditevent_no_update"]

    assert AuditEvent.objects.count() == 2


def test_inserts_still_work_after_a_rejected_change(record_events: Callable[..., list[AuditEvent]]) -> None:
    record_events(1)
    with pytest.raises(DatabaseError):
        _raw("UPDATE audit_auditevent SET action = 'x'")

    (event,) = record_events(1)

    assert event.seq == 2
