import json
from typing import Any

from fhir.resources.R4B.riskassessment import RiskAssessment


def _create(api_client: Any, features: dict, patient_id: str = "p-77") -> dict:
    response = api_client("predictions:write").post(
        "/api/v1/predictions", data=json.dumps({"use_case": "diabetes", "patient_id": patient_id,
                                                "features": features}), content_type="application/json")
    assert response.status_code == 201
    return response.json()


def test_prediction_as_fhir_risk_assessment_validates(champion: Any, api_client: Any, valid_features: dict) -> None:
    created = _create(api_client, valid_features)
    reader = api_client("predictions:read")

    via_accept = reader.get(f"/api/v1/predictions/{created['id']}", HTTP_ACCEPT="application/fhir+json")
    via_fhir_path = reader.get(f"/fhir/RiskAssessment/{created['id']}")

    assert via_accept.status_code == via_fhir_path.status_code == 200
    assert via_accept["Content-Type"].startswith("application/fhir+json")
    assert via_accept.json() == via_fhir_path.json()
    resource = RiskAssessment.model_validate(via_fhir_path.json())
    assert resource.status == "final"
    assert resource.subject.identifier.value == "p-77"
    assert float(resource.prediction[0].probabilityDecimal) == round(created["probability"], 6)
    assert resource.prediction[0].qualitativeRisk.coding[0].code == created["risk_band"]
    assert resource.performer.reference == "#model"
    device = resource.contained[0]
    assert device.version[0].value == champion.label
    assert device.identifier[0].value == champion.onnx_sha256


def test_plain_json_is_still_the_default(champion: Any, api_client: Any, valid_features: dict) -> None:
    created = _create(api_client, valid_features)

    response = api_client("predictions:read").get(f"/api/v1/predictions/{created['id']}")

    assert response["Content-Type"] == "application/json"
    assert response.json() == created


def test_fhir_path_needs_the_read_scope(champion: Any, api_client: Any, client: Any, valid_features: dict) -> None:
    created = _create(api_client, valid_features)

    assert client.get(f"/fhir/RiskAssessment/{created['id']}").status_code == 401
    assert api_client("predictions:write").get(f"/fhir/RiskAssessment/{created['id']}").status_code == 403
    assert api_client("predictions:read").get(
        "/fhir/RiskAssessment/00000000-0000-0000-0000-000000000000").status_code == 404
