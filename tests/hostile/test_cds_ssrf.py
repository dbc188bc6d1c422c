"""CDS Hooks as an attacker with a valid signed JWT would use it: `fhirServer` pointed anywhere (server-side request
forgery), redirects off the registered base, and bodies of the wrong shape.

The target is a real listener on a 127.0.0.1 port that records every TCP connection it accepts: a refused call must
leave it with none (no connection, so nothing was sent, the EHR's access token included)."""

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.cache import cache
from django.test import Client

from apps.audit.models import AuditEvent
from apps.predictions.models import CdsClient, Prediction

SERVICE = "/cds-services/clinpredict-diabetes"
AUDIENCE = f"http://testserver{SERVICE}"
ISSUER = "https://ehr.hostile.example.org"
TOKEN = "ehr-access-token-that-must-stay-home"  # noqa: S105 - a made-up token whose travels the tests follow


class ConnectionRecorder:
    """A TCP listener on 127.0.0.1 that accepts, records and closes every connection (answering a bare 404 so that a
    client that did connect fails fast instead of waiting)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                self.connections.append(data)
                try:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def settle(self) -> list[bytes]:
        """The connections seen, after giving a connection still in the accept queue the chance to be counted."""
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and not self.connections:
            time.sleep(0.05)
        return self.connections

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class Redirector(ThreadingHTTPServer):
    """A registered 'FHIR server' on 127.0.0.1 that answers every request with a redirect to `location`."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append((self.path, self.headers.get("Authorization")))
                self.send_response(302)
                self.send_header("Location", server.location + self.path.split("/fhir", 1)[-1])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def listener() -> Iterator[ConnectionRecorder]:
    recorder = ConnectionRecorder()
    yield recorder
    recorder.close()


@pytest.fixture
def ehr_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def ehr(db: None, ehr_key: ec.EllipticCurvePrivateKey) -> CdsClient:
    cache.clear()  # jti marks of other tests
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ehr_key.public_key()))
    return CdsClient.objects.create(name="Hostile EHR", issuer=ISSUER, jwks={"keys": [{**public, "kid": "ehr-1"}]})


def register(client: CdsClient, *bases: str) -> None:
    client.fhir_base_urls = list(bases)
    client.full_clean()  # as admin saves it: validated and normalised
    client.save(update_fields=["fhir_base_urls"])


def signed(key: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 240, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "ehr-1"})


def observation(oid: str, loinc: str, value: float, unit: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/pat-7"},
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "effectiveDateTime": "2026-11-20T09:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "code": unit, "system": "http://unitsofmeasure.org"}}


def with_prefetch() -> dict[str, Any]:
    return {
        "hook": "patient-view", "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": "pat-7"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "pat-7", "gender": "male", "birthDate": "1970-01-15"},
            "observations": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": observation("g", "20438-8", 8.2, "mmol/L")},
                {"resource": observation("b", "39156-5", 30.1, "kg/m2")},
                {"resource": observation("bp", "8462-4", 80, "mm[Hg]")},
            ]},
        },
    }


def with_fhir_server(url: Any) -> dict[str, Any]:
    body = with_prefetch()
    del body["prefetch"]
    body["fhirServer"] = url
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "clinpredict"}
    return body


def call(body: Any, token: str) -> Any:
    return Client().post(SERVICE, data=json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {token}")


def assert_error(response: Any, status: int, code: str, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "fields"}
    assert error["code"] == code, error
    assert field in error["fields"], error
    assert all(isinstance(m, str) and m for m in error["fields"][field])
    return error


# --- fhirServer: only under a registered base, nothing fetched otherwise -------------------------------------------

OFF_BASE = {
    # name: (registered bases, fhirServer sent); {L} is the recording listener's port, {R} another port
    "nothing registered": ([], "http://127.0.0.1:{L}/fhir"),
    "another port": (["http://127.0.0.1:{R}/fhir"], "http://127.0.0.1:{L}/fhir"),
    "another scheme": (["https://127.0.0.1:{L}/fhir"], "http://127.0.0.1:{L}/fhir"),
    "another host name for the same address": (["http://127.0.0.1:{L}/fhir"], "http://localhost:{L}/fhir"),
    "path prefix not on a segment boundary": (["http://127.0.0.1:{L}/fhir"], "http://127.0.0.1:{L}/fhirx"),
    "path above the base": (["http://127.0.0.1:{L}/fhir/r4"], "http://127.0.0.1:{L}/fhir"),
    "dot-dot out of the base": (["http://127.0.0.1:{L}/fhir"], "http://127.0.0.1:{L}/fhir/../admin"),
    "percent-encoded dot-dot": (["http://127.0.0.1:{L}/fhir"], "http://127.0.0.1:{L}/fhir/%2e%2e/admin"),
    "path parameter dot-dot": (["http://127.0.0.1:{L}/fhir"], "http://127.0.0.1:{L}/fhir/..;/admin"),
    "userinfo that reads like the registered host": (["http://127.0.0.1:{R}/fhir"],
                                                     "http://127.0.0.1:{R}@127.0.0.1:{L}/fhir"),
    "backslash before @": (["http://127.0.0.1:{R}/fhir"], "http://127.0.0.1:{R}\\@127.0.0.1:{L}/fhir"),
    "full-width digits (IDN mapping)": (["http://127.0.0.1:{L}/fhir"], "http://\uff11\uff12\uff17.0.0.1:{L}/fhir"),
    "decimal IPv4": (["http://127.0.0.1:{L}/fhir"], "http://2130706433:{L}/fhir"),
    "query string": (["http://127.0.0.1:{L}/fhir"], "http://127.0.0.1:{L}/fhir?_format=json"),
    "other scheme": (["http://127.0.0.1:{L}/fhir"], "gopher://127.0.0.1:{L}/fhir"),
}


@pytest.mark.parametrize("case", list(OFF_BASE))
def test_a_fhir_server_off_the_registered_bases_is_refused_and_never_contacted(
    champion: Any, ehr: CdsClient, ehr_key: Any, listener: ConnectionRecorder, case: str
) -> None:
    bases, sent = OFF_BASE[case]
    other = socket.socket()
    other.bind(("127.0.0.1", 0))  # a port held but not listening: {R}
    try:
        ports = {"L": listener.port, "R": other.getsockname()[1]}
        register(ehr, *(base.format(**ports) for base in bases))
        audit_before = AuditEvent.objects.count()

        response = call(with_fhir_server(sent.format(**ports)), signed(ehr_key))
    finally:
        other.close()

    error = assert_error(response, 412, "fhir_server_not_allowed", "fhirServer")
    assert "Nothing was fetched" in error["message"]
    assert listener.settle() == []  # no connection at all: no request, no token
    assert Prediction.objects.count() == 0 and AuditEvent.objects.count() == audit_before


def test_a_refused_fhir_server_does_not_spend_the_jwt(champion: Any, ehr: CdsClient, ehr_key: Any,
                                                      listener: ConnectionRecorder) -> None:
    token = signed(ehr_key)

    refused = call(with_fhir_server(f"http://127.0.0.1:{listener.port}/fhir"), token)
    retried = call(with_prefetch(), token)

    assert refused.status_code == 412 and retried.status_code == 200, retried.content
    assert listener.settle() == []
    assert Prediction.objects.count() == 1


def test_a_redirect_from_a_registered_base_is_not_followed(champion: Any, ehr: CdsClient, ehr_key: Any,
                                                          listener: ConnectionRecorder) -> None:
    redirector = Redirector(location=f"http://127.0.0.1:{listener.port}/fhir")
    try:
        register(ehr, f"http://127.0.0.1:{redirector.port}/fhir")
        audit_before = AuditEvent.objects.count()

        response = call(with_fhir_server(f"http://127.0.0.1:{redirector.port}/fhir"), signed(ehr_key))
    finally:
        redirector.close()

    assert response.status_code == 412, response.content
    error = response.json()["error"]
    assert error["code"] == "fhir_redirect_refused" and "redirect" in error["message"]
    assert redirector.requests == [("/fhir/Patient/pat-7", f"Bearer {TOKEN}")]  # the registered base only
    assert listener.settle() == []  # the redirect target never saw a connection, let alone the token
    assert Prediction.objects.count() == 0 and AuditEvent.objects.count() == audit_before


def test_a_request_climbing_out_of_the_base_is_refused_before_it_is_sent(champion: Any,
                                                                          listener: ConnectionRecorder) -> None:
    """The last line of defence, below the patient id check: every request the FHIR client makes is checked against
    the base before it is sent."""
    from apps.core.exceptions import ApplicationError
    from apps.predictions.cds import fhir_fetch
    from apps.predictions.fhir_base_urls import fhir_base_url_parse
    from apps.registry.loader import champion_model

    model = champion_model("diabetes")
    assert model is not None
    base = fhir_base_url_parse(f"http://127.0.0.1:{listener.port}/fhir/r4")

    with pytest.raises(ApplicationError) as refused:
        fhir_fetch(fhir_server=base, access_token=TOKEN, patient_id="../../admin", spec=model.spec)

    assert refused.value.code == "fhir_server_not_allowed"
    assert listener.settle() == []


def test_a_registered_base_given_in_another_spelling_is_read(champion: Any, ehr: CdsClient, ehr_key: Any,
                                                            fhir_server_factory: Any) -> None:
    server = fhir_server_factory()
    patient = server.create({"resourceType": "Patient", "gender": "male", "birthDate": "1970-01-15"})
    for loinc, value, unit in (("20438-8", 8.2, "mmol/L"), ("39156-5", 30.1, "kg/m2"), ("8462-4", 80, "mm[Hg]")):
        resource = observation("x", loinc, value, unit)
        del resource["id"]
        resource["subject"] = {"reference": f"Patient/{patient['id']}"}
        server.create(resource)
    register(ehr, server.base_url.replace("http://", "HTTP://", 1) + "/")  # scheme case, trailing slash
    body = with_fhir_server(server.base_url)
    body["context"]["patientId"] = patient["id"]
    body["fhirAuthorization"]["access_token"] = server.token()

    response = call(body, signed(ehr_key))

    assert response.status_code == 200, response.content
    assert Prediction.objects.get().features["bmi"] == pytest.approx(30.1)


# --- Bodies of the wrong shape: 400 naming the field, and the JWT is not spent ----------------------------------------

def _set(path: str, value: Any) -> Any:
    def change(body: dict[str, Any]) -> Any:
        target = body
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value
        return body
    return change


WRONG_SHAPES = {
    "body is a list": (lambda body: [body], "non_field_errors"),
    "body is a string": (lambda body: "patient-view", "non_field_errors"),
    "hook missing": (_set("hook", None), "hook"),
    "context is a list": (_set("context", ["pat-7"]), "context"),
    "patientId is a number": (_set("context.patientId", 7), "context.patientId"),
    "patientId is an object": (_set("context.patientId", {"id": "pat-7"}), "context.patientId"),
    "patientId climbs a path": (_set("context.patientId", "../Patient"), "context.patientId"),
    "patientId is dots": (_set("context.patientId", ".."), "context.patientId"),
    "prefetch is a list": (_set("prefetch", []), "prefetch"),
    "prefetch patient is a string": (_set("prefetch.patient", "Patient/pat-7"), "prefetch.patient"),
    "observations is a list": (_set("prefetch.observations", []), "prefetch.observations"),
    "entry is an object": (_set("prefetch.observations.entry", {}), "prefetch.observations.entry"),
    "entry item is a string": (_set("prefetch.observations.entry", ["x"]), "prefetch.observations.entry[0]"),
    "resource is a list": (_set("prefetch.observations.entry.0.resource", []),
                           "prefetch.observations.entry[0].resource"),
    "effectivePeriod is a string": (_set("prefetch.observations.entry.0.resource.effectivePeriod", "2026"),
                                    "prefetch.observations.entry[0].resource.effectivePeriod"),
    "coding item is a string": (_set("prefetch.observations.entry.0.resource.code.coding", ["20438-8"]),
                                "prefetch.observations.entry[0].resource.code.coding[0]"),
}


@pytest.mark.parametrize("case", list(WRONG_SHAPES))
def test_a_body_of_the_wrong_shape_is_a_400_naming_the_field_and_the_jwt_can_be_reused(
    champion: Any, ehr: CdsClient, ehr_key: Any, case: str
) -> None:
    change, field = WRONG_SHAPES[case]
    token = signed(ehr_key)
    audit_before = AuditEvent.objects.count()

    refused = call(change(with_prefetch()), token)

    assert_error(refused, 400, "invalid", field)
    assert Prediction.objects.count() == 0 and AuditEvent.objects.count() == audit_before
    retried = call(with_prefetch(), token)  # the same JWT: its jti was not spent on the refused body
    assert retried.status_code == 200, retried.content
    assert Prediction.objects.count() == 1
    assert call(with_prefetch(), token).status_code == 401  # and now it is


@pytest.mark.parametrize(("field", "value"), [("fhirServer", 8080), ("fhirAuthorization", "Bearer x"),
                                              ("fhirAuthorization", {"access_token": ["x"]})])
def test_fhir_server_fields_of_the_wrong_type_are_a_400(champion: Any, ehr: CdsClient, ehr_key: Any,
                                                        listener: ConnectionRecorder, field: str, value: Any) -> None:
    register(ehr, f"http://127.0.0.1:{listener.port}/fhir")
    body = with_fhir_server(f"http://127.0.0.1:{listener.port}/fhir")
    if field == "fhirAuthorization" and isinstance(value, dict):
        body[field] = value
        field = "fhirAuthorization.access_token"
    else:
        body[field] = value

    assert_error(call(body, signed(ehr_key)), 400, "invalid", field)
    assert listener.settle() == []


def test_an_unauthenticated_body_of_the_wrong_shape_is_still_a_401(champion: Any, ehr: CdsClient) -> None:
    other = ec.generate_private_key(ec.SECP384R1())

    response = call([with_prefetch()], signed(other))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
