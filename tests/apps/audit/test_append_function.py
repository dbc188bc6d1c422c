"""The chain written in one database call (PostgreSQL `audit_auditevent_append`, migration 0004) is the chain the
Python verifier expects: same canonical serialisation, same SHA-256, contiguous seq, database-clock times that
never go backwards, and non-ASCII, nulls, nested JSON and addresses survive byte for byte."""

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection, transaction

from apps.audit.actors import SYSTEM, Actor
from apps.audit.hashing import HASHED_FIELDS, canonical_json, event_hash, hash_template
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.audit.services import AuditEventDraft, audit_event_record, audit_events_record_many


def test_hash_template_splits_the_canonical_json_around_created_at_and_seq() -> None:
    fields: dict[str, Any] = {name: f"value of {name}" for name in HASHED_FIELDS}
    fields.update(inputs={"z": [1, 2.5, None], "a": "Zoë 患者 \"quoted\"\n"}, output=None, source_ip=None,
                  seq=1234567, created_at=datetime(2026, 11, 26, 11, 30, 0, 12, tzinfo=UTC))
    head, middle, tail = hash_template(fields)
    assembled = head + canonical_json(fields["created_at"]) + middle + str(fields["seq"]) + tail
    assert assembled == canonical_json({name: fields[name] for name in HASHED_FIELDS})


@pytest.mark.django_db
def test_events_appended_by_the_database_verify_in_python() -> None:
    client = Actor(type="client", id="ehr-Zoë", user_id=None)
    with transaction.atomic():
        audit_event_record(actor=SYSTEM, action="test.first")
    with transaction.atomic():
        events = audit_events_record_many(actor=client, source_ip="10.1.2.3", drafts=[
            AuditEventDraft(action="prediction.create", object_type="prediction", object_id="p-1",
                            patient_ref="患者-0001", model_version="diabetes@1", model_sha256="ab" * 32,
                            inputs={"features": {"glucose": {"value": 7.9, "unit": "mmol/L"}, "bmi": None}},
                            output={"probability": 0.123456789012345, "positive": False, "imputed": []}),
            AuditEventDraft(action="prediction.create", inputs=None, output=["a", 1, 1.5e-300]),
        ])
    with transaction.atomic():
        audit_event_record(actor=SYSTEM, action="test.last", source_ip="::1")

    assert [e.seq for e in events] == [2, 3]
    assert events[1].prev_hash == events[0].hash
    stored = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in stored] == [1, 2, 3, 4]
    for event in stored:  # each stored row hashes, in Python, to the hash it was written with
        fields = {name: getattr(event, name) for name in HASHED_FIELDS}
        assert event_hash(fields, event.prev_hash) == event.hash
    assert [e.created_at for e in stored] == sorted(e.created_at for e in stored)
    assert stored[1].patient_ref == "患者-0001" and stored[1].source_ip == "10.1.2.3"
    assert stored[2].inputs is None and stored[2].output == ["a", 1, 1.5e-300]
    assert audit_chain_verify().ok


@pytest.mark.django_db
def test_the_database_append_is_what_postgresql_runs() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the one-call append exists on PostgreSQL only")
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        audit_event_record(actor=SYSTEM, action="test.one_call")
    appends = [q["sql"] for q in queries.captured_queries if "audit_auditevent_append" in q["sql"]]
    assert len(appends) == 1
    assert not [q for q in queries.captured_queries if "pg_advisory_xact_lock" in q["sql"]]


@pytest.mark.django_db
def test_only_the_action_prefix_index_is_kept_among_pattern_indexes() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("varchar_pattern_ops indexes exist on PostgreSQL only")
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename, indexname FROM pg_indexes WHERE indexname LIKE '%%\\_like' "
                       "AND tablename IN ('audit_auditevent', 'predictions_prediction')")
        like = cursor.fetchall()
    assert [(table, name.startswith("audit_auditevent_action_")) for table, name in like] == [
        ("audit_auditevent", True)]
