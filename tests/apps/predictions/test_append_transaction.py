"""A prediction without shadow scoring is stored as one transaction of its own: on PostgreSQL the audit append
statement alone in autocommit (no BEGIN/COMMIT round trips), committed before the 201, all or nothing."""

import copy
import json
from typing import Any

import pytest
from django.db import IntegrityError, connection, connections

from apps.audit.actors import SYSTEM
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.audit.services import AuditEventDraft, audit_events_record_many
from apps.predictions.models import Prediction

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement append is PostgreSQL's"),
]


def _post(client: Any, features: dict) -> Any:
    return client.post("/api/v1/predictions", data=json.dumps({"use_case": "diabetes", "features": features}),
                       content_type="application/json")


def test_the_append_is_its_own_autocommit_transaction_and_committed_before_the_answer(
        champion: Any, api_client: Any, valid_features: dict) -> None:
    client = api_client("predictions:write")
    seen: list[tuple[bool, bool]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "_append" in sql:  # predictions_prediction_append, around audit_auditevent_append
            seen.append((connection.in_atomic_block, connection.get_autocommit()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        response = _post(client, valid_features)

    assert response.status_code == 201
    assert seen == [(False, True)]  # no transaction of Django's around it: the statement is the transaction
    prediction_id = response.json()["id"]
    other = connections.create_connection("default")  # another session sees both rows at once: committed
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT audit_seq FROM predictions_prediction WHERE id = %s", [prediction_id])
            (seq,) = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM audit_auditevent WHERE object_id = %s AND seq = %s",
                           [prediction_id, seq])
            assert cursor.fetchone() == (1,)
    finally:
        other.close()
    assert audit_chain_verify().ok


def test_a_failing_append_outside_a_transaction_stores_neither_event_nor_row(
        champion: Any, api_client: Any, valid_features: dict) -> None:
    response = _post(api_client("predictions:write"), valid_features)
    assert response.status_code == 201
    stored = Prediction.objects.get(id=response.json()["id"])
    duplicate = copy.copy(stored)  # the same primary key again: the row insert fails after the event's
    duplicate._state = copy.copy(stored._state)
    duplicate._state.adding = True
    events, predictions = AuditEvent.objects.count(), Prediction.objects.count()

    with pytest.raises(IntegrityError):
        audit_events_record_many(actor=SYSTEM, own_transaction=True, rows=[duplicate], drafts=[
            AuditEventDraft(action="prediction.create", object_type="prediction", object_id=str(stored.id))])

    assert (AuditEvent.objects.count(), Prediction.objects.count()) == (events, predictions)
    assert _post(api_client("predictions:write"), valid_features).status_code == 201  # the chain moves on
    assert audit_chain_verify().ok


def test_without_own_transaction_the_append_still_demands_the_callers() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_events_record_many(actor=SYSTEM, drafts=[AuditEventDraft(action="test.event")])


@pytest.mark.parametrize("static", [True, False])
def test_the_predictions_own_append_and_the_generic_one_store_the_same(
        champion: Any, api_client: Any, valid_features: dict, monkeypatch: Any, static: bool) -> None:
    """Prediction.AUDITED_APPEND_FUNCTION (a static INSERT, migration 0005) or the generic function's dynamic one:
    each prediction gets its event's seq and time, in request order, and the chain verifies."""
    if not static:
        monkeypatch.setattr(Prediction, "AUDITED_APPEND_FUNCTION", None)
    statements: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    body = [{"use_case": "diabetes", "features": valid_features, "patient_id": f"p-{i}"} for i in range(3)]
    with connection.execute_wrapper(record):
        response = api_client("predictions:write").post("/api/v1/predictions", data=json.dumps(body),
                                                        content_type="application/json")

    assert response.status_code == 201
    appends = [sql for sql in statements if "_append" in sql]
    assert len(appends) == 1
    assert ("predictions_prediction_append" in appends[0]) is static
    answered = response.json()
    for item in answered:
        prediction = Prediction.objects.get(id=item["id"])
        event = AuditEvent.objects.get(object_id=item["id"])
        assert (prediction.audit_seq, prediction.created_at) == (event.seq, event.created_at) == (
            item["audit_seq"], prediction.created_at)
    assert [item["patient_id"] for item in answered] == ["p-0", "p-1", "p-2"]
    assert [item["audit_seq"] for item in answered] == sorted(item["audit_seq"] for item in answered)
    assert audit_chain_verify().ok
