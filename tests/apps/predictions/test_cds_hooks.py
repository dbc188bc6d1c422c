"""CDS Hooks patient-view: discovery, a JWT-authenticated call with prefetch, cards, and refusals."""

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client

from apps.audit.models import AuditEvent
from apps.predictions.models import CdsClient, Prediction

SERVICE = "/cds-services/clinpredict-diabetes"
AUDIENCE = f"http://testserver{SERVICE}"
ISSUER = "https://ehr.example.org"


@pytest.fixture
def ehr_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def ehr(db: None, ehr_key: ec.EllipticCurvePrivateKey) -> CdsClient:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ehr_key.public_key()))
    return CdsClient.objects.create(name="Test EHR", issuer=ISSUER, jwks={"keys": [{**public, "kid": "ehr-1"}]})


def signed(key: Any, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 240, "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(body, key, algorithm="ES384", headers={"kid": "ehr-1"})


def observation(oid: str, loinc: str, value: float, unit: str, when: str = "2026-11-20T09:00:00Z") -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/pat-42"},
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": unit, "code": unit,
                                                         "system": "http://unitsofmeasure.org"}}


def hook_request(observations: list[dict], *, prefetch: bool = True) -> dict:
    body: dict[str, Any] = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                            "context": {"userId": "Practitioner/1", "patientId": "pat-42"}}
    if prefetch:
        body["prefetch"] = {
            "patient": {"resourceType": "Patient", "id": "pat-42", "gender": "female", "birthDate": "1975-03-02"},
            "observations": {"resourceType": "Bundle", "type": "searchset",
                             "entry": [{"resource": o} for o in observations]},
        }
    return body


FULL = [
    observation("g-old", "20438-8", 95, "mg/dL", "2025-01-01T09:00:00Z"),
    observation("g-new", "20438-8", 9.1, "mmol/L"),
    observation("b-1", "39156-5", 34.2, "kg/m2"),
    observation("bp-1", "8462-4", 76, "mm[Hg]"),
]


def call(body: dict, token: str | None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().post(SERVICE, data=json.dumps(body), content_type="application/json", **headers)


def test_discovery_lists_a_patient_view_service_with_prefetch(champion: Any, client: Client) -> None:
    services = client.get("/cds-services").json()["services"]

    (service,) = services
    assert service["id"] == "clinpredict-diabetes" and service["hook"] == "patient-view"
    assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert "http://loinc.org|20438-8" in service["prefetch"]["observations"]


def test_signed_call_with_prefetch_returns_a_card_and_records_an_audited_prediction(
    champion: Any, ehr: CdsClient, ehr_key: Any
) -> None:
    response = call(hook_request(FULL), signed(ehr_key))

    assert response.status_code == 200, response.content
    (card,) = response.json()["cards"]
    prediction = Prediction.objects.get()
    assert card["indicator"] == {"low": "info", "moderate": "warning", "high": "critical"}[prediction.risk_band]
    assert f"{round(prediction.probability * 100)}%" in card["summary"] and len(card["summary"]) <= 140
    assert card["source"]["label"] == f"ClinPredict {champion.label}"
    assert card["links"][0]["url"] == f"http://testserver/predictions/{prediction.id}/"
    assert prediction.channel == "cds" and prediction.patient_ref == "pat-42"
    assert prediction.features["glucose"] == pytest.approx(9.1 * 18.016)  # the newest result, converted
    assert prediction.features["age"] == 51.0  # from Patient.birthDate
    assert sorted(prediction.basis) == ["Observation/b-1", "Observation/bp-1", "Observation/g-new"]
    event = AuditEvent.objects.get(action="prediction.create")
    assert (event.actor_type, event.actor_id) == ("client", f"cds:{ISSUER}")


def test_risk_assessment_of_a_cds_prediction_points_at_its_observations(champion: Any, ehr: CdsClient,
                                                                         ehr_key: Any, api_client: Any) -> None:
    call(hook_request(FULL), signed(ehr_key))
    prediction = Prediction.objects.get()

    # A CDS prediction belongs to no OAuth2 application: reading it takes predictions:read:all.
    resource = api_client("predictions:read predictions:read:all").get(f"/fhir/RiskAssessment/{prediction.id}").json()

    assert {b["reference"] for b in resource["basis"]} == {"Observation/b-1", "Observation/bp-1", "Observation/g-new"}


def test_missing_required_data_gives_an_info_card_and_no_prediction(champion: Any, ehr: CdsClient,
                                                                    ehr_key: Any) -> None:
    response = call(hook_request(FULL[2:]), signed(ehr_key))  # no glucose

    (card,) = response.json()["cards"]
    assert response.status_code == 200 and card["indicator"] == "info"
    assert "not calculated" in card["summary"] and "glucose" in card["detail"].lower()
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize("case", ["no token", "wrong key", "wrong audience", "too long-lived", "unknown issuer",
                                  "not a jwt"])
def test_unsigned_or_wrongly_signed_calls_get_401(champion: Any, ehr: CdsClient, ehr_key: Any, case: str) -> None:
    other_key = ec.generate_private_key(ec.SECP384R1())
    token = {
        "no token": None,
        "wrong key": signed(other_key),
        "wrong audience": signed(ehr_key, aud="http://testserver/cds-services/other"),
        "too long-lived": signed(ehr_key, exp=int(time.time()) + 3600),
        "unknown issuer": signed(ehr_key, iss="https://mallory.example.org"),
        "not a jwt": "abc.def",
    }[case]

    response = call(hook_request(FULL), token)

    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"not_authenticated", "invalid_token"}
    assert Prediction.objects.count() == 0


def test_a_replayed_jwt_is_refused(champion: Any, ehr: CdsClient, ehr_key: Any) -> None:
    from django.core.cache import cache

    cache.clear()
    token = signed(ehr_key)

    assert call(hook_request(FULL), token).status_code == 200
    assert call(hook_request(FULL), token).status_code == 401
    assert Prediction.objects.count() == 1


def test_without_prefetch_the_service_reads_the_ehr_fhir_server(champion: Any, ehr: CdsClient, ehr_key: Any,
                                                                fhir_server_factory: Any) -> None:
    server = fhir_server_factory()
    patient = server.create({"resourceType": "Patient", "gender": "female", "birthDate": "1980-06-01"})
    created = []
    for loinc, value, unit in (("20438-8", 8.6, "mmol/L"), ("39156-5", 31.0, "kg/m2"), ("8462-4", 70, "mm[Hg]")):
        resource = observation("x", loinc, value, unit)
        del resource["id"]
        resource["subject"] = {"reference": f"Patient/{patient['id']}"}
        created.append(server.create(resource)["id"])
    ehr.fhir_base_urls = [server.base_url]  # registered in admin: only then is fhirServer read
    ehr.save(update_fields=["fhir_base_urls"])
    body = hook_request([], prefetch=False)
    body["context"]["patientId"] = patient["id"]
    body["fhirServer"] = server.base_url
    body["fhirAuthorization"] = {"access_token": server.token(), "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "clinpredict"}

    response = call(body, signed(ehr_key))

    assert response.status_code == 200, response.content
    assert "%" in response.json()["cards"][0]["summary"]
    prediction = Prediction.objects.get()
    assert prediction.features["glucose"] == pytest.approx(8.6 * 18.016)
    assert prediction.features["age"] == 46.0
    assert sorted(prediction.basis) == sorted(f"Observation/{i}" for i in created)


def test_an_unreachable_fhir_server_is_a_clear_412(champion: Any, ehr: CdsClient, ehr_key: Any,
                                                   fhir_helpers: Any) -> None:
    body = hook_request([], prefetch=False)
    body["fhirServer"] = f"http://127.0.0.1:{fhir_helpers.free_port()}/fhir"  # nothing listens there
    ehr.fhir_base_urls = [body["fhirServer"]]  # registered, so it is tried
    ehr.save(update_fields=["fhir_base_urls"])

    response = call(body, signed(ehr_key))

    assert response.status_code == 412
    assert response.json()["error"]["code"] == "fhir_unavailable"
    assert Prediction.objects.count() == 0


def test_without_prefetch_or_fhir_server_the_call_is_a_412(champion: Any, ehr: CdsClient, ehr_key: Any) -> None:
    response = call(hook_request([], prefetch=False), signed(ehr_key))

    assert response.status_code == 412
    assert response.json()["error"]["code"] == "prefetch_missing"
    assert Prediction.objects.count() == 0


def test_an_unregistered_fhir_server_is_a_412_naming_it(champion: Any, ehr: CdsClient, ehr_key: Any) -> None:
    body = hook_request([], prefetch=False)
    body["fhirServer"] = "https://elsewhere.example.org/fhir"

    response = call(body, signed(ehr_key))

    assert response.status_code == 412
    error = response.json()["error"]
    assert error["code"] == "fhir_server_not_allowed" and "registered" in error["fields"]["fhirServer"][0]
