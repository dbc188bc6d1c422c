"""Retries of the FHIR client against a small real HTTP server on 127.0.0.1 that answers from a script: 429 with
Retry-After (seconds or an HTTP date) is waited out up to the cap, 5xx is retried within the budget, other 4xx
never; SMART discovery must advertise private_key_jwt and the key's algorithm. Waits are recorded (client tests) or
kept tiny by the settings (sync tests): the tests count attempts, they never time anything."""

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from apps.patients.fhir_client import FhirClient, FhirError, retry_after_seconds
from apps.patients.models import IngestionRun, Patient
from apps.patients.services import fhir_sync_run
from apps.patients.smart_backend import signing_key_generate, signing_key_load

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body

EMPTY_BUNDLE: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
ONE_PATIENT = {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [
    {"resource": {"resourceType": "Patient", "id": "p-1", "gender": "female", "birthDate": "1970-01-01",
                  "meta": {"versionId": "1"}}, "search": {"mode": "match"}}]}


class ScriptedFhir:
    """A FHIR-ish server whose answers per (method, path) are queued; the last answer of a queue repeats. It counts
    requests and keeps the token requests' forms."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Answer]] = {}
        self.hits: Counter[tuple[str, str]] = Counter()
        self.token_forms: list[dict[str, str]] = []
        self.smart_configuration: dict[str, Any] = {}
        script = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                path = urlsplit(self.path).path
                script.hits[(method, path)] += 1
                if method == "POST":
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                    if path == "/auth/token":
                        script.token_forms.append({k: v[0] for k, v in parse_qs(body).items()})
                if path == "/fhir/.well-known/smart-configuration" and (method, path) not in script.script:
                    status, headers, payload = 200, {}, script.smart_configuration
                else:
                    queue = script.script.get((method, path)) or [(404, {}, {"resourceType": "OperationOutcome"})]
                    status, headers, payload = queue.pop(0) if len(queue) > 1 else queue[0]
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the standard library's handler name
                self._answer("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._answer("POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.smart_configuration = {
            "token_endpoint": f"{self.base}/auth/token",
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "grant_types_supported": ["client_credentials"],
        }
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self.script[(method, path)] = list(answers)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedFhir]:
    server = ScriptedFhir()
    yield server
    server.close()


def _client(server: ScriptedFhir, waits: list[float], **options: Any) -> FhirClient:
    return FhirClient(server.fhir_base, **{"retries": 2, "backoff": 0.5, "max_wait": 30.0, "sleep": waits.append,
                                           **options})


def _patients(client: FhirClient) -> list[dict[str, Any]]:
    return [resource for page in client.search("Patient", {"_count": "10"}) for resource in page.resources]


# --- the client: what is retried, how long it waits -----------------------------------------------------------------

def test_429_with_retry_after_seconds_is_waited_out_then_answered(scripted: ScriptedFhir) -> None:
    scripted.on("GET", "/fhir/Patient", (429, {"Retry-After": "7"}, {}), (200, {}, ONE_PATIENT))
    waits: list[float] = []
    with _client(scripted, waits) as client:
        assert [p["id"] for p in _patients(client)] == ["p-1"]
    assert scripted.hits[("GET", "/fhir/Patient")] == 2
    assert waits == [7.0]


def test_retry_after_as_an_http_date_and_beyond_the_cap(scripted: ScriptedFhir) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    scripted.on("GET", "/fhir/Patient", (503, {"Retry-After": later}, {}), (429, {"Retry-After": "86400"}, {}),
                (200, {}, ONE_PATIENT))
    waits: list[float] = []
    with _client(scripted, waits, max_wait=60.0) as client:
        assert len(_patients(client)) == 1
    assert scripted.hits[("GET", "/fhir/Patient")] == 3
    assert 60.0 >= waits[0] > 0  # the date is 2 minutes ahead: capped at max_wait
    assert waits[1] == 60.0  # a day: capped
    with _client(scripted, waits := [], max_wait=300.0) as client:  # noqa: F841
        scripted.on("GET", "/fhir/Patient", (429, {"Retry-After": later}, {}), (200, {}, ONE_PATIENT))
        _patients(client)
    assert 0 < waits[0] <= 120.0


def test_5xx_beyond_the_retry_budget_fails_after_retries_plus_one_attempts(scripted: ScriptedFhir) -> None:
    scripted.on("GET", "/fhir/Patient", (503, {}, {}))
    waits: list[float] = []
    with _client(scripted, waits, retries=3, backoff=0.5, max_wait=1.0) as client, \
            pytest.raises(FhirError) as raised:
        _patients(client)
    assert scripted.hits[("GET", "/fhir/Patient")] == 4
    assert "GET /fhir/Patient answered 503 (4 attempt(s); FHIR_MAX_RETRIES=3)" in raised.value.message
    assert raised.value.status_code == 503
    assert len(waits) == 3 and all(0 < wait <= 1.0 for wait in waits)  # backoff, capped at max_wait


def test_429_beyond_the_retry_budget_fails_naming_429(scripted: ScriptedFhir) -> None:
    scripted.on("GET", "/fhir/Patient", (429, {"Retry-After": "1"}, {}))
    with _client(scripted, [], retries=1) as client, pytest.raises(FhirError, match="answered 429 \\(2 attempt"):
        _patients(client)
    assert scripted.hits[("GET", "/fhir/Patient")] == 2


@pytest.mark.parametrize("status", [400, 403, 404, 410, 422])
def test_other_4xx_answers_are_never_retried(scripted: ScriptedFhir, status: int) -> None:
    scripted.on("GET", "/fhir/Patient", (status, {"Retry-After": "1"}, {}))
    waits: list[float] = []
    with _client(scripted, waits) as client, pytest.raises(FhirError, match=f"answered {status}"):
        _patients(client)
    assert scripted.hits[("GET", "/fhir/Patient")] == 1
    assert waits == []


def test_a_refused_token_request_is_not_retried(scripted: ScriptedFhir) -> None:
    scripted.on("POST", "/auth/token", (400, {}, {"error": "invalid_scope", "error_description": "no such scope"}))
    with _client(scripted, [], client_id="c", client_secret="s", scope="system/Patient.rs") as client, \
            pytest.raises(FhirError, match="refused the client credentials \\(400\\): invalid_scope: no such scope"):
        _patients(client)
    assert scripted.hits[("POST", "/auth/token")] == 1
    assert scripted.hits[("GET", "/fhir/Patient")] == 0
    assert scripted.token_forms == [{"grant_type": "client_credentials", "scope": "system/Patient.rs"}]


def test_a_retried_token_request_signs_a_fresh_assertion(scripted: ScriptedFhir) -> None:
    scripted.on("POST", "/auth/token", (429, {"Retry-After": "0"}, {}), (503, {}, {}),
                (200, {}, {"access_token": "tok", "token_type": "bearer", "expires_in": 300}))
    scripted.on("GET", "/fhir/Patient", (200, {}, ONE_PATIENT))
    key = signing_key_load(signing_key_generate("ES384"))
    with _client(scripted, [], client_id="clinpredict", signing_key=key,
                 scope="system/Patient.rs system/Observation.rs") as client:
        assert len(_patients(client)) == 1
    assert scripted.hits[("POST", "/auth/token")] == 3
    forms = scripted.token_forms
    assert {f["client_assertion_type"] for f in forms} == {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    assert {f["scope"] for f in forms} == {"system/Patient.rs system/Observation.rs"}
    assert all("client_secret" not in f for f in forms)
    claims = [jwt.decode(f["client_assertion"], key.private_key.public_key(), algorithms=["ES384"],
                         audience=f"{scripted.base}/auth/token") for f in forms]
    assert len({c["jti"] for c in claims}) == 3  # a jti is good for one request only


def test_discovery_must_advertise_private_key_jwt_and_the_keys_algorithm(scripted: ScriptedFhir) -> None:
    key = signing_key_load(signing_key_generate("ES384"))
    scripted.smart_configuration["token_endpoint_auth_methods_supported"] = ["client_secret_basic"]
    with _client(scripted, [], client_id="c", signing_key=key) as client, \
            pytest.raises(FhirError, match="does not advertise private_key_jwt"):
        _patients(client)
    scripted.smart_configuration["token_endpoint_auth_methods_supported"] = ["private_key_jwt"]
    scripted.smart_configuration["token_endpoint_auth_signing_alg_values_supported"] = ["RS384"]
    with _client(scripted, [], client_id="c", signing_key=key) as client, \
            pytest.raises(FhirError, match="does not accept ES384 client assertions"):
        _patients(client)
    assert scripted.hits[("POST", "/auth/token")] == 0  # no assertion was sent to a server that cannot take it


@pytest.mark.parametrize(("header", "expected"), [
    ("120", 120.0), (" 0 ", 0.0), ("", None), ("soon", None), ("-5", None), ("1.5", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a past date: no wait
])
def test_retry_after_parsing(header: str, expected: float | None) -> None:
    assert retry_after_seconds(header) == expected


def test_retry_after_http_date_is_measured_from_now() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:42 GMT", now=now) == 42.0


def test_retries_are_logged_without_query_strings(scripted: ScriptedFhir, caplog: pytest.LogCaptureFixture) -> None:
    scripted.on("GET", "/fhir/Observation", (503, {}, {}), (200, {}, EMPTY_BUNDLE))
    with caplog.at_level(logging.WARNING, logger="apps.patients.fhir_client"), _client(scripted, []) as client:
        list(client.search("Observation", {"code": "http://loinc.org|2345-7", "patient": "p-secret-42"}))
    [record] = [r for r in caplog.records if r.getMessage() == "FHIR request retried"]
    assert (record.path, record.status, record.attempt) == ("/fhir/Observation", 503, 1)  # type: ignore[attr-defined]
    assert "p-secret-42" not in json.dumps({k: str(v) for k, v in vars(record).items()})


# --- the sync: the run records what happened -------------------------------------------------------------------------

@pytest.fixture
def sync_settings(settings: Any, scripted: ScriptedFhir) -> Any:
    settings.FHIR_BASE_URL = scripted.fhir_base
    settings.FHIR_CLIENT_ID = ""  # the scripted server asks for no authentication
    settings.FHIR_PRIVATE_KEY = ""
    settings.FHIR_MAX_RETRIES = 2
    settings.FHIR_RETRY_BACKOFF_SECONDS = 0.001
    settings.FHIR_RETRY_MAX_WAIT_SECONDS = 0.01  # Retry-After: 2 waits 0.01 s here
    scripted.on("GET", "/fhir/Observation", (200, {}, EMPTY_BUNDLE))
    scripted.on("GET", "/fhir/Condition", (200, {}, EMPTY_BUNDLE))
    return settings


@pytest.mark.django_db
def test_sync_waits_out_a_429_and_completes(scripted: ScriptedFhir, sync_settings: Any) -> None:
    scripted.on("GET", "/fhir/Patient", (429, {"Retry-After": "2"}, {}), (200, {}, ONE_PATIENT))

    run = fhir_sync_run(spec="t2d_fhir")

    assert run.status == IngestionRun.Status.SUCCEEDED, run.error
    assert scripted.hits[("GET", "/fhir/Patient")] == 2
    assert Patient.objects.get(source=scripted.fhir_base).external_id == "p-1"


@pytest.mark.django_db
def test_sync_gives_up_on_503_after_the_budget_and_records_why(scripted: ScriptedFhir, sync_settings: Any) -> None:
    scripted.on("GET", "/fhir/Patient", (503, {}, {}))

    run = fhir_sync_run(spec="t2d_fhir")

    assert run.status == IngestionRun.Status.FAILED
    assert scripted.hits[("GET", "/fhir/Patient")] == 3  # FHIR_MAX_RETRIES = 2
    assert "GET /fhir/Patient answered 503 (3 attempt(s); FHIR_MAX_RETRIES=2)" in run.error
    assert scripted.hits[("GET", "/fhir/Observation")] == 0
    assert Patient.objects.count() == 0
