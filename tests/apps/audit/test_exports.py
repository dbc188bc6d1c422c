import csv
import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from apps.audit.hashing import GENESIS_HASH
from apps.audit.models import AuditEvent
from apps.audit.selectors import chain_check

EVENTS_URL = "/api/v1/audit/events"


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_api_lists_events_in_sequence_order_with_paging(record_events: Callable[..., list[AuditEvent]],
                                                        api_client: Callable[[str], Client]) -> None:
    record_events(5)

    response = api_client("audit:read").get(EVENTS_URL, {"limit": 2, "offset": 1})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5 and [e["seq"] for e in body["results"]] == [2, 3]
    assert body["results"][0]["inputs"] == {"i": 1, "glucose": 7.9, "x": 1 / 3}


def test_api_filters_by_patient_action_actor_model_and_dates(record_events: Callable[..., list[AuditEvent]],
                                                             api_client: Callable[[str], Client]) -> None:
    record_events(3)
    record_events(2, action="prediction.create", model_version="diabetes@2")
    client = api_client("audit:read")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()

    def seqs(**params: Any) -> list[int]:
        response = client.get(EVENTS_URL, params)
        assert response.status_code == 200, response.content
        return [e["seq"] for e in response.json()["results"]]

    assert seqs(patient="p-1") == [2, 5]
    assert seqs(action="prediction.create") == [4, 5]
    assert seqs(action="prediction.*", patient="p-0") == [4]
    assert seqs(model_version="diabetes@2", actor="tests", actor_type="system") == [4, 5]
    assert seqs(actor="somebody-else") == []
    assert seqs(created_after="2000-01-01", created_before=tomorrow) == [1, 2, 3, 4, 5]
    assert seqs(created_before="2000-01-01T00:00:00Z") == []
    assert seqs(seq_from=2, seq_to=3) == [2, 3]


@pytest.mark.parametrize(("params", "field"), [
    ({"created_after": "yesterday"}, "created_after"),
    ({"created_after": "2026-01-02", "created_before": "2026-01-01"}, "created_before"),
    ({"seq_from": "zero"}, "seq_from"),
    ({"actor_type": "robot"}, "actor_type"),
    ({"patient_id": "p-1"}, "patient_id"),
    ({"format": "xml"}, "format"),
    ({"format": "csv", "seq_to": "-3"}, "seq_to"),
    ({"format": "fhir", "created_before": "1 May"}, "created_before"),
])
def test_api_bad_filter_is_a_400_naming_the_field(db: None, api_client: Callable[[str], Client],
                                                  params: dict[str, str], field: str) -> None:
    events_before = AuditEvent.objects.count()

    response = api_client("audit:read").get(EVENTS_URL, params)

    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "invalid" and list(error["fields"]) == [field] and error["fields"][field][0]
    assert AuditEvent.objects.count() == events_before  # a rejected export records nothing


def test_api_needs_the_audit_scope(db: None, api_client: Callable[[str], Client]) -> None:
    assert Client().get(EVENTS_URL).status_code == 401
    assert api_client("predictions:read predictions:write").get(EVENTS_URL).status_code == 403
    forbidden = api_client("predictions:read").get(EVENTS_URL, {"format": "csv"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "permission_denied"


def test_a_clinicians_token_cannot_read_the_audit_log_whatever_its_scope(clinician: Any, oauth_app: Any) -> None:
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, set_token_value

    token = AccessToken(user=clinician, application=oauth_app, scope="audit:read",
                        expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, "clinician-audit-token")
    token.save()
    client = Client(HTTP_AUTHORIZATION="Bearer clinician-audit-token")

    assert client.get(EVENTS_URL).status_code == 403
    assert client.get(EVENTS_URL, {"format": "jsonl"}).status_code == 403
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_jsonl_export_streams_every_field_and_the_chain_rechecks(record_events: Callable[..., list[AuditEvent]],
                                                                 api_client: Callable[[str], Client]) -> None:
    events = record_events(4)

    response = api_client("audit:read").get(EVENTS_URL, {"format": "jsonl"})

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/x-ndjson"
    rows = _jsonl(_body(response))
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]  # the export event (#5) is not part of its own export
    assert rows[-1]["hash"] == events[-1].hash and rows[0]["patient_ref"] == "p-0"
    for row in rows:
        row["created_at"] = datetime.fromisoformat(row["created_at"])
    assert chain_check(rows, prev_hash=GENESIS_HASH).ok


def test_each_export_is_an_audit_event_with_its_filters(record_events: Callable[..., list[AuditEvent]],
                                                        api_client: Callable[[str], Client]) -> None:
    record_events(3)

    response = api_client("audit:read").get(EVENTS_URL, {"format": "csv", "patient": "p-2",
                                                         "created_after": "2020-01-01"})

    export = AuditEvent.objects.get(action="audit.export")
    assert response["X-Audit-Export-Seq"] == str(export.seq) == "4"
    assert export.actor_type == "client" and export.actor_id == "test-system"
    assert export.inputs == {"channel": "api", "format": "csv",
                             "filters": {"created_after": "2020-01-01T00:00:00+00:00", "patient": "p-2"}}
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert [r["seq"] for r in rows] == ["3"] and json.loads(rows[0]["inputs"])["i"] == 2


def test_csv_export_has_a_header_and_one_row_per_event(record_events: Callable[..., list[AuditEvent]],
                                                       api_client: Callable[[str], Client]) -> None:
    events = record_events(3, inputs={"note": 'comma, "quote"\nnewline'})

    response = api_client("audit:read").get(EVENTS_URL, {"format": "csv"})

    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="audit-events-before-4.csv"'
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert len(rows) == 3 and rows[1]["hash"] == events[1].hash
    assert json.loads(rows[0]["inputs"]) == {"note": 'comma, "quote"\nnewline'}
    assert rows[2]["created_at"] == events[2].created_at.isoformat(timespec="microseconds")


def test_fhir_export_is_a_valid_r4_bundle_of_audit_events(record_events: Callable[..., list[AuditEvent]],
                                                          api_client: Callable[[str], Client]) -> None:
    from fhir.resources.R4B.bundle import Bundle

    record_events(2, action="prediction.create", model_version="diabetes@1", model_sha256="ab" * 32,
                  source_ip="10.0.0.7", output={"probability": 0.42})
    record_events(1, action="auth.login_failed", patient_ref="")

    response = api_client("audit:read").get(EVENTS_URL, {"format": "fhir"})

    assert response["Content-Type"] == "application/fhir+json"
    data = json.loads(_body(response))
    bundle = Bundle.model_validate(data)
    assert bundle.type == "collection" and len(bundle.entry) == 3
    first = bundle.entry[0].resource
    assert first.get_resource_type() == "AuditEvent" and first.id == "1" and first.action == "C"
    assert first.agent[0].network.address == "10.0.0.7"
    assert first.entity[0].what.identifier.value == "p-0"
    details = {d.type: d.valueString for d in first.entity[-1].detail}
    assert details["model_version"] == "diabetes@1" and json.loads(details["output"]) == {"probability": 0.42}
    assert details["hash"] == AuditEvent.objects.get(seq=1).hash
    assert bundle.entry[2].resource.outcome == "4"  # a failed login is a failure outcome
    assert bundle.entry[2].resource.subtype[0].code == "110122"


def test_export_command_writes_a_file_and_records_itself(record_events: Callable[..., list[AuditEvent]],
                                                         tmp_path: Any) -> None:
    record_events(3)
    target = tmp_path / "out.jsonl"

    call_command("export_audit", "--format", "jsonl", "--output", str(target), "--patient", "p-1",
                 "--actor-name", "alice")

    rows = _jsonl(target.read_bytes())
    assert [r["seq"] for r in rows] == [2]
    export = AuditEvent.objects.get(action="audit.export")
    assert export.actor_id == "export_audit:alice"
    assert export.inputs == {"channel": "command", "format": "jsonl", "filters": {"patient": "p-1"}}


def test_export_command_rejects_a_bad_filter(db: None) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--created-after: 'last week' is not a date"):
        call_command("export_audit", "--created-after", "last week", "--output", "-")
    assert not AuditEvent.objects.exists()


def test_csv_export_neutralises_formulas_while_jsonl_and_the_chain_stay_unchanged(
        record_events: Callable[..., list[AuditEvent]], api_client: Callable[[str], Client]) -> None:
    """OWASP CSV injection: a patient id starting with `=` (and the other formula starts) reaches the CSV behind a
    single quote; JSONL carries the stored value; the chain verifies in the database, from JSONL and from the CSV
    once each cell's leading quote is dropped again."""
    from apps.audit.selectors import audit_chain_verify
    from apps.core.csv_safe import csv_cell_value

    hostile = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1:A9)", "\tx", "\r=x", "'quoted"]
    events = [*[e for value in hostile for e in record_events(1, patient_ref=value)],
              *record_events(1, patient_ref="-42", inputs={"delta": -3.5})]
    client = api_client("audit:read")

    csv_body = _body(client.get(EVENTS_URL, {"format": "csv"})).decode()
    jsonl_rows = _jsonl(_body(client.get(EVENTS_URL, {"format": "jsonl"})))

    rows = list(csv.DictReader(io.StringIO(csv_body, newline="")))
    assert [r["patient_ref"] for r in rows[:len(hostile)]] == ["'" + value for value in hostile]
    assert rows[len(hostile)]["patient_ref"] == "-42"  # a plain negative number is not a formula: kept
    negative_number = re.compile(r"-[0-9]+(\.[0-9]+)?")
    assert not [cell for row in rows for cell in row.values()
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not negative_number.fullmatch(cell)]
    assert [r["patient_ref"] for r in jsonl_rows[:len(events)]] == [e.patient_ref for e in events]  # unchanged
    assert jsonl_rows[0]["patient_ref"] == hostile[0]
    assert AuditEvent.objects.get(seq=events[0].seq).patient_ref == hostile[0]  # nothing stored changed
    assert audit_chain_verify().ok
    for row in jsonl_rows:
        row["created_at"] = datetime.fromisoformat(row["created_at"])
    assert chain_check(jsonl_rows, prev_hash=GENESIS_HASH).ok
    from_csv = []
    for row in rows[:len(events)]:
        values = {name: csv_cell_value(cell) for name, cell in row.items()}
        values.update(seq=int(values["seq"]), created_at=datetime.fromisoformat(values["created_at"]),
                      inputs=json.loads(values["inputs"]) if values["inputs"] else None,
                      output=json.loads(values["output"]) if values["output"] else None,
                      source_ip=values["source_ip"] or None)
        from_csv.append(values)
    assert chain_check(from_csv, prev_hash=GENESIS_HASH).ok
