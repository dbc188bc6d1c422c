"""The PostgreSQL export path (database-built text, orjson, pages read ahead in a thread) writes exactly the bytes of
the reference Python path (`export_stream` over `audit_event_rows`), whatever the events hold."""

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit import selectors
from apps.audit.actors import Actor
from apps.audit.exports import FORMATS, _canonical, audit_export_stream, export_stream
from apps.audit.hashing import canonical_json
from apps.audit.models import AuditEvent
from apps.audit.selectors import AuditEventFilters, audit_event_rows, audit_event_text_batches
from apps.audit.services import audit_event_record_standalone
from apps.core.context import request_id_var

EXPORTED_AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)

# Values where orjson and the json module disagree (negative exponents, integers beyond 64 bits), or where jsonb
# text differs from canonical JSON (key order, separators, escapes), next to ordinary ones.
AWKWARD_JSON: list[Any] = [
    None, {}, [], 0, -3, 5, 1.5, 37.0, 0.0001, 1e-05, -1.5e-07, 1e16, 1.2345e20, 2**63 - 1, 2**64 - 1, 2**70,
    -2**63, -2**63 - 1, 0.1 + 0.2, 1 / 3, 0.0012345678901234567, 123456789012345.6, True, False, "str", "null",
    'é\n"\\', "12345678901234567890",
    ["x", 1, None, {"b": 1, "a": [1.0, 2.5e-10]}],
    {"b": 1, "a": 2, "aa": 3, "B": 4, "é": 5, "Z": 6, "ab": {"zz": None, "y": [True]}, "10": 1, "9": 2, "😀": 0},
    {"note": 'comma, "quote"\nnewline', "k\tey": "v\\al", "ctl": "\x01\x1f\x7f\u2028", "sha": "ab" * 32},
    {"features": {"glucose": {"value": 7.0, "unit": "mmol/L"}, "insulin": None}, "x": 100.0, "y": 1e-4},
]
AWKWARD_TEXT = ["", "plain", 'comma, "quote"', "new\nline", "cr\rlf\r\n", "tab\there", "back\\slash", "é日本😀",
                "\u2028\u2029", "\x01\x1f\x7f", " lead", '"', ",", "'single'",
                # Formula starts (CSV injection): neutralised alike by both paths; negative numbers are left alone.
                "=1+1", '=HYPERLINK("http://x","y")', "+cmd", "@SUM(A1)", "\tformula", "\r=cr", "'=quoted", "-",
                "-x", "-5", "-0.25", "-1.5e-07", "-.5", "-5\n", "-5e", "--5", "-٣", "=a,b"]
ACTIONS = ["auth.login", "auth.logout", "auth.login_failed", "oauth2.token.issue", "audit.export",
           "prediction.create", "prediction.failed", "registry.model.promote", "registry.delete", "x.revoke",
           "thing.read", "foo", "a.b_failed", "model.archive", "z.view", 'odd,"action"']
IPS = [None, "10.0.0.1", "::1", "2001:db8::1", "::ffff:10.0.0.1"]


@pytest.fixture
def awkward_events(db: None) -> int:
    """Events through the real writer covering every branch of every format; returns the last seq."""
    token = request_id_var.set("")
    try:
        for i in range(len(AWKWARD_JSON) * 2):
            text, other = AWKWARD_TEXT[i % len(AWKWARD_TEXT)], AWKWARD_TEXT[(i * 5 + 3) % len(AWKWARD_TEXT)]
            request_id_var.set(["", f"req-{i}", text][i % 3])
            audit_event_record_standalone(
                actor=Actor(type=["user", "client", "system", "anonymous"][i % 4], id=[text, f"user{i}", ""][i % 3]),
                action=ACTIONS[i % len(ACTIONS)], object_type=[other, "", "prediction", ""][i % 4],
                object_id=["", text, f"{i:x}"][i % 3], patient_ref=["", other, f"patient-{i}"][(i // 2) % 3],
                model_version=["", "diabetes@1", text][(i // 3) % 3], model_sha256=["", "ab" * 32, other][(i // 5) % 3],
                inputs=AWKWARD_JSON[i % len(AWKWARD_JSON)], output=AWKWARD_JSON[(i * 7 + 1) % len(AWKWARD_JSON)],
                source_ip=IPS[i % len(IPS)])
    finally:
        request_id_var.reset(token)
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True)[0]


def _reference(export_format: str, filters: AuditEventFilters, up_to_seq: int, export_seq: int | None) -> bytes:
    rows = audit_event_rows(filters=filters, up_to_seq=up_to_seq)
    return b"".join(export_stream(export_format, rows, exported_at=EXPORTED_AT, export_seq=export_seq))


def _exported(export_format: str, filters: AuditEventFilters, up_to_seq: int, export_seq: int | None) -> bytes:
    return b"".join(audit_export_stream(export_format, filters=filters, up_to_seq=up_to_seq, exported_at=EXPORTED_AT,
                                        export_seq=export_seq))


@pytest.mark.parametrize("export_format", FORMATS)
@pytest.mark.parametrize("filters", [
    AuditEventFilters(),
    AuditEventFilters(seq_from=3, actor_type="user"),
    AuditEventFilters(action="auth.*"),
    AuditEventFilters(actor="nobody"),
], ids=["all", "seq-and-actor-type", "action-prefix", "none-match"])
def test_the_export_path_writes_the_reference_bytes(awkward_events: int, export_format: str,
                                                    filters: AuditEventFilters, monkeypatch: Any) -> None:
    monkeypatch.setattr(selectors, "EXPORT_BATCH_SIZE", 7)  # several pages, and a last page that is not full

    exported = _exported(export_format, filters, awkward_events, 99)

    assert exported == _reference(export_format, filters, awkward_events, 99)
    if connection.vendor == "postgresql" and filters == AuditEventFilters():
        assert exported.count(b"\n" if export_format != "fhir" else b'"resourceType":"AuditEvent"') >= awkward_events


def test_the_fhir_bundle_without_an_export_seq_matches_too(awkward_events: int) -> None:
    assert _exported("fhir", AuditEventFilters(), awkward_events, None) == _reference(
        "fhir", AuditEventFilters(), awkward_events, None)


@pytest.mark.parametrize("value", AWKWARD_JSON[1:] + [[[[[[1e-7]]]]], {"deep": [[[[{"n": 2**80}]]]]}])
def test_canonical_matches_canonical_json_from_jsonb_text(db: None, value: Any) -> None:
    # What PostgreSQL hands back for the stored value (its own key order, ", " separators, numbers as numeric).
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            pytest.skip("jsonb text is PostgreSQL's")
        cursor.execute("SELECT (%s::jsonb)::text", [json.dumps(value)])
        (text,) = cursor.fetchone()

    assert _canonical(text.encode()) == canonical_json(json.loads(text)).encode()


def test_closing_an_export_early_stops_its_reader_and_frees_the_connection(awkward_events: int,
                                                                           monkeypatch: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the reader thread is the PostgreSQL path")
    monkeypatch.setattr(selectors, "EXPORT_BATCH_SIZE", 2)
    threads_before = threading.active_count()
    blocks = audit_export_stream("jsonl", filters=AuditEventFilters(), up_to_seq=awkward_events,
                                 exported_at=EXPORTED_AT)

    first = next(blocks)
    blocks.close()  # what a server does when the client goes away

    assert first.count(b"\n") == 2
    assert threading.active_count() == threads_before
    assert AuditEvent.objects.count() == awkward_events  # the connection is usable again


def test_a_database_error_while_reading_ahead_reaches_the_caller(db: None) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the reader thread is the PostgreSQL path")
    pages = audit_event_text_batches(filters=AuditEventFilters(), select=["no_such_column"])

    with pytest.raises(DatabaseError, match="no_such_column"), transaction.atomic():
        list(pages)
