"""An external system end to end: client credentials -> token -> a batch of 100 predictions -> read each back ->
each as a FHIR R4 RiskAssessment that validates."""

import json
from typing import Any

from django.test import Client
from fhir.resources.R4B.riskassessment import RiskAssessment

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.predictions.models import Prediction


def test_external_system_batch_of_100_read_back_as_fhir(champion: Any, oauth_app: Any, valid_features: dict) -> None:
    token = Client().post("/o/token/", {
        "grant_type": "client_credentials", "client_id": "test-system", "client_secret": "test-system-secret",
        "scope": "predictions:write predictions:read",
    }).json()["access_token"]
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    batch = [{"use_case": "diabetes", "patient_id": f"ext-{i:03d}",
              "features": {**valid_features, "age": 25 + i % 50, "bmi": 20 + (i % 30)}} for i in range(100)]

    created = api.post("/api/v1/predictions", data=json.dumps(batch), content_type="application/json")

    assert created.status_code == 201, created.content[:500]
    body = created.json()
    assert [p["patient_id"] for p in body] == [f"ext-{i:03d}" for i in range(100)]
    assert Prediction.objects.count() == 100
    assert AuditEvent.objects.filter(action="prediction.create").count() == 100
    assert audit_chain_verify().ok
    for item in body:
        again = api.get(f"/api/v1/predictions/{item['id']}")
        assert again.status_code == 200 and again.json() == item
        resource = RiskAssessment.model_validate(
            api.get(f"/fhir/RiskAssessment/{item['id']}").json())
        assert resource.subject.identifier.value == item["patient_id"]
        assert float(resource.prediction[0].probabilityDecimal) == round(item["probability"], 6)
    listed = api.get("/api/v1/predictions", {"limit": 500}).json()
    assert listed["count"] == 100


def test_a_batch_over_the_limit_is_refused(champion: Any, api_client: Any, valid_features: dict,
                                           settings: Any) -> None:
    settings.PREDICTION_BATCH_LIMIT = 5
    batch = [{"use_case": "diabetes", "features": valid_features}] * 6

    response = api_client("predictions:write").post("/api/v1/predictions", data=json.dumps(batch),
                                                    content_type="application/json")

    assert response.status_code == 400
    assert "between 1 and 5" in response.json()["error"]["fields"]["non_field_errors"][0]
    assert Prediction.objects.count() == 0
