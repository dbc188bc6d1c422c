import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.patients.models import Observation, Outcome, Patient
from apps.predictions.models import Prediction


@pytest.fixture
def stored_patient(db: None) -> Patient:
    patient = Patient.objects.create(identifier="pt-0001", sex="female", birth_date="1976-05-01",
                                     source="https://fhir.example.org/fhir", external_id="123")
    now = timezone.now()
    for code, value, unit, canonical, source_id in [
        ("20438-8", 8.0, "mmol/L", 8.0 * 18.016, "Observation/g1"),
        ("39156-5", 32.5, "kg/m2", 32.5, "Observation/b1"),
        ("8462-4", 74, "mm[Hg]", 74, "Observation/bp1#8462-4"),
    ]:
        Observation.objects.create(patient=patient, code=code, value=value, unit=unit, value_canonical=canonical,
                                   unit_canonical=unit if code != "20438-8" else "mg/dL",
                                   effective_at=now - timedelta(days=3), source=patient.source,
                                   source_id=source_id, source_resource=source_id.split("#")[0])
    return patient


def test_patient_list_detail_and_observations(stored_patient: Patient, api_client: Any) -> None:
    client = api_client("patients:read")

    listed = client.get("/api/v1/patients", {"identifier": "pt-0"}).json()
    detail = client.get("/api/v1/patients/pt-0001").json()
    observations = client.get("/api/v1/patients/pt-0001/observations", {"code": "20438-8"}).json()

    assert listed["count"] == 1 and listed["results"][0]["identifier"] == "pt-0001"
    assert detail["sex"] == "female"
    assert observations["count"] == 1
    assert observations["results"][0]["unit"] == "mmol/L"
    assert observations["results"][0]["value_canonical"] == pytest.approx(144.128)
    assert client.get("/api/v1/patients/nobody").status_code == 404


def test_predict_for_a_stored_patient_assembles_features_and_basis(champion: Any, stored_patient: Patient,
                                                                    api_client: Any) -> None:
    response = api_client("predictions:write").post(
        "/api/v1/predictions", data=json.dumps({"use_case": "diabetes", "patient_id": "pt-0001"}),
        content_type="application/json")

    assert response.status_code == 201, response.content
    prediction = Prediction.objects.get()
    assert prediction.features["glucose"] == pytest.approx(144.128)
    assert prediction.features["age"] == 50.0  # from the stored birth date
    assert prediction.patient_ref == "pt-0001"
    assert prediction.basis == ["Observation/b1", "Observation/bp1", "Observation/g1"]
    assert set(response.json()["imputed"]) == {"pregnancies", "skin_thickness", "insulin", "pedigree"}


def test_predict_for_an_unknown_patient_without_features_is_400(champion: Any, api_client: Any) -> None:
    response = api_client("predictions:write").post(
        "/api/v1/predictions", data=json.dumps({"use_case": "diabetes", "patient_id": "nobody"}),
        content_type="application/json")

    assert response.status_code == 400
    assert "patient_id" in response.json()["error"]["fields"]
    assert Prediction.objects.count() == 0


def test_outcomes_are_recorded_once_per_source_id_and_audited(stored_patient: Patient, api_client: Any) -> None:
    writer = api_client("patients:write")
    body = {"patient_id": "pt-0001", "use_case": "diabetes", "present": True,
            "onset_at": "2026-10-01T00:00:00Z", "source_id": "ehr-outcome-9"}

    first = writer.post("/api/v1/outcomes", data=json.dumps(body), content_type="application/json")
    again = writer.post("/api/v1/outcomes", data=json.dumps({**body, "present": False}),
                        content_type="application/json")
    listed = api_client("patients:read").get("/api/v1/outcomes", {"patient_id": "pt-0001"}).json()

    assert (first.status_code, again.status_code) == (201, 200)
    outcome = Outcome.objects.get()
    assert outcome.present is False and outcome.source == "api:test-system"
    assert listed["count"] == 1 and listed["results"][0]["present"] is False
    assert AuditEvent.objects.filter(action="outcome.record").count() == 2


@pytest.mark.parametrize(("change", "field"), [
    ({"patient_id": "nobody"}, "patient_id"), ({"present": "maybe"}, "present"),
    ({"onset_at": "yesterday"}, "onset_at"), ({"extra": 1}, "extra"),
    ({"onset_at": "2999-01-01T00:00:00Z"}, "onset_at"),
])
def test_bad_outcomes_are_refused_with_the_field_named(stored_patient: Patient, api_client: Any, change: dict,
                                                       field: str) -> None:
    body = {"patient_id": "pt-0001", "use_case": "diabetes", "present": True, **change}

    response = api_client("patients:write").post("/api/v1/outcomes", data=json.dumps(body),
                                                  content_type="application/json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Outcome.objects.count() == 0
