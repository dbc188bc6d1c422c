import io
from collections.abc import Callable
from typing import Any

from django.test import Client

from apps.audit.models import AuditEvent


def _client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_auditor_sees_events_newest_first_with_filters_and_export_links(
        record_events: Callable[..., list[AuditEvent]], auditor: Any) -> None:
    record_events(3)
    client = _client_for(auditor)

    response = client.get("/audit/", {"patient": "p-1"})

    assert response.status_code == 200
    page = response.context["page"]
    assert [e.seq for e in page.object_list] == [2]
    html = response.content.decode()
    assert 'href="/audit/export.csv?patient=p-1"' in html and 'href="/audit/export.fhir?patient=p-1"' in html
    assert "no-store" in response["Cache-Control"]  # patient data: never cached


def test_auditor_pages_paginate(record_events: Callable[..., list[AuditEvent]], auditor: Any) -> None:
    record_events(55)
    client = _client_for(auditor)

    first = client.get("/audit/")
    second = client.get("/audit/", {"page": 2})

    # The auditor's own login is event #56.
    assert [e.seq for e in first.context["page"].object_list][:2] == [56, 55]
    assert len(first.context["page"].object_list) == 50
    assert [e.seq for e in second.context["page"].object_list] == [6, 5, 4, 3, 2, 1]


def test_a_bad_filter_on_the_page_is_shown_on_the_field(db: None, auditor: Any) -> None:
    response = _client_for(auditor).get("/audit/", {"created_after": "soon"})

    assert response.status_code == 400
    assert "is not a date or date-time" in response.content.decode()
    assert response.context["page"] is None


def test_auditor_opens_one_event_with_its_inputs_and_hashes(record_events: Callable[..., list[AuditEvent]],
                                                            auditor: Any) -> None:
    events = record_events(2)

    response = _client_for(auditor).get("/audit/events/2/")

    html = response.content.decode()
    assert response.status_code == 200 and events[1].hash in html and "&quot;glucose&quot;: 7.9" in html
    assert _client_for(auditor).get("/audit/events/999/").status_code == 404


def test_web_export_streams_and_is_audited_with_the_user(record_events: Callable[..., list[AuditEvent]],
                                                         auditor: Any) -> None:
    record_events(2)
    client = _client_for(auditor)

    response = client.get("/audit/export.jsonl", {"action": "test.*"})

    assert response.status_code == 200 and response.streaming
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 2
    export = AuditEvent.objects.get(action="audit.export")
    assert (export.actor_type, export.actor_id) == ("user", "auditor")
    assert export.inputs == {"channel": "web", "format": "jsonl", "filters": {"action": "test.*"}}


def test_clinicians_cannot_reach_the_audit_pages_or_exports(record_events: Callable[..., list[AuditEvent]],
                                                            clinician_client: Client) -> None:
    record_events(1)

    for url in ("/audit/", "/audit/events/1/", "/audit/export.csv", "/audit/export.jsonl", "/audit/export.fhir"):
        assert clinician_client.get(url).status_code == 403, url
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_anonymous_visitors_are_sent_to_sign_in(db: None) -> None:
    response = Client().get("/audit/")

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_page_shows_the_latest_verification(record_events: Callable[..., list[AuditEvent]], auditor: Any) -> None:
    from django.core.management import call_command

    record_events(2)
    call_command("verify_audit_chain", stdout=io.StringIO())

    html = _client_for(auditor).get("/audit/").content.decode()

    assert "Verified" in html and "2 events" in html


def test_only_auditors_get_the_audit_link_in_the_header(auditor: Any, clinician_client: Client) -> None:
    link = 'href="/audit/">Audit log</a>'

    assert link in _client_for(auditor).get("/").content.decode()
    assert link not in clinician_client.get("/").content.decode()
