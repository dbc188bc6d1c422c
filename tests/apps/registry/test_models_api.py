"""GET /api/v1/models and /api/v1/models/{use_case}[?version=N]: the live versions and the feature contract an
integrator needs, with scope `predictions:read`; unknown names and versions are 404 in the one error shape."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.test import Client

from apps.registry.models import ModelVersion
from ml.schema import UseCaseSpec

DIABETES_SPEC = Path(__file__).resolve().parents[3] / "ml" / "specs" / "diabetes.yaml"


def test_the_catalogue_lists_each_use_case_with_its_live_version(champion: ModelVersion,
                                                                 api_client: Callable[[str], Client]) -> None:
    response = api_client("predictions:read").get("/api/v1/models")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 1
    (entry,) = body["results"]
    assert entry["use_case"] == "diabetes" and entry["title"] == "Diabetes mellitus (Pima cohort)"
    live = entry["live_version"]
    assert live["model_version"] == champion.label and live["sha256"] == champion.onnx_sha256
    assert live["promoted"]["by"] == "system:tests" and live["promoted"]["reason"] == "test champion"
    assert live["url"] == f"http://testserver/api/v1/models/diabetes?version={champion.version}"
    assert entry["url"] == "http://testserver/api/v1/models/diabetes"


def test_a_use_case_without_a_champion_is_listed_without_a_live_version(
        register: Callable[[Path], Any], trained_dir: Path, api_client: Callable[[str], Client]) -> None:
    register(trained_dir)

    client = api_client("predictions:read")
    (entry,) = client.get("/api/v1/models").json()["results"]
    detail = client.get("/api/v1/models/diabetes")

    assert entry["live_version"] is None
    assert detail.status_code == 404
    assert detail.json()["error"]["fields"] == {"version": ["No live version; registered versions: 1."]}
    assert client.get("/api/v1/models/diabetes", {"version": 1}).json()["live"] is False


def test_the_live_version_carries_the_feature_contract(champion: ModelVersion,
                                                       api_client: Callable[[str], Client]) -> None:
    response = api_client("predictions:read").get("/api/v1/models/diabetes")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["model_version"], body["version"], body["sha256"]) == (champion.label, champion.version,
                                                                       champion.onnx_sha256)
    assert body["status"] == "champion" and body["live"] is True
    assert body["promoted"]["by"] == "system:tests" and body["promoted"]["kind"] == "promote"
    assert body["threshold"] == champion.threshold
    bands = body["risk_bands"]
    assert bands["high_from"] == champion.threshold
    assert bands["moderate_from"] == champion.manifest["risk_bands"]["moderate_from"]
    assert body["intended_use"].startswith("Decision support for adult women")
    assert body["card_url"] == f"http://testserver/models/diabetes/{champion.version}/"
    spec = UseCaseSpec.load(DIABETES_SPEC)
    features = {f["name"]: f for f in body["features"]}
    assert list(features) == list(spec.feature_names)
    assert features["glucose"] == {
        "name": "glucose", "label": "Plasma glucose, 2 h after 75 g oral glucose", "description": None,
        "type": "numeric", "unit": "mg/dL", "unit_display": "mg/dL", "accepted_units": ["mg/dL", "mmol/L"],
        "conversion_factors": {"mg/dL": 1.0, "mmol/L": 18.016}, "min": 40.0, "max": 400.0, "categories": [],
        "loinc": "20438-8", "may_be_missing": False,
    }
    assert features["insulin"]["may_be_missing"] is True
    assert features["blood_pressure"]["unit_display"] == "mmHg"
    assert features["pregnancies"]["loinc"] == "11996-6"


def test_the_contract_is_the_one_predictions_follow(champion: ModelVersion, api_client: Callable[[str], Client],
                                                    valid_features: dict[str, Any]) -> None:
    """A request built only from the contract (each feature in its first alternative unit, the missing ones null)
    is accepted; the contract's `may_be_missing: false` features are the ones a null is refused for."""
    contract = api_client("predictions:read").get("/api/v1/models/diabetes").json()["features"]
    features: dict[str, Any] = {}
    for feature in contract:
        value = valid_features[feature["name"]]
        value = value["value"] / contract_factor(feature, value["unit"]) if isinstance(value, dict) else value
        if feature["may_be_missing"]:
            features[feature["name"]] = None
        elif len(feature["accepted_units"]) > 1:
            unit = feature["accepted_units"][1]
            features[feature["name"]] = {"value": value / feature["conversion_factors"][unit], "unit": unit}
        else:
            features[feature["name"]] = value
    writer = api_client("predictions:write")

    accepted = writer.post("/api/v1/predictions", {"use_case": "diabetes", "features": features},
                           content_type="application/json")
    required = next(f["name"] for f in contract if not f["may_be_missing"])
    refused = writer.post("/api/v1/predictions", {"use_case": "diabetes", "features": {**features, required: None}},
                          content_type="application/json")

    assert accepted.status_code == 201, accepted.content
    assert sorted(accepted.json()["imputed"]) == sorted(f["name"] for f in contract if f["may_be_missing"])
    assert refused.status_code == 400 and required in refused.json()["error"]["fields"]


def contract_factor(feature: dict[str, Any], unit: str) -> float:
    return 1.0 / feature["conversion_factors"][unit] if unit in feature["conversion_factors"] else 1.0


def test_a_past_version_by_number(champion: ModelVersion, register: Callable[[Path], Any],
                                  promote: Callable[..., Any], distinct_model_dir: Callable[[], Path],
                                  api_client: Callable[[str], Client]) -> None:
    newer = promote(register(distinct_model_dir()), reason="newer")
    client = api_client("predictions:read")

    live = client.get("/api/v1/models/diabetes").json()
    past = client.get("/api/v1/models/diabetes", {"version": champion.version}).json()

    assert live["model_version"] == newer.label and live["promoted"]["reason"] == "newer"
    assert past["model_version"] == champion.label and past["status"] == "archived" and past["live"] is False
    assert past["promoted"]["reason"] == "test champion"  # when it last became champion
    assert past["sha256"] == champion.onnx_sha256 and past["features"] == live["features"]


def test_unknown_use_case_and_version_are_404_in_the_error_shape(champion: ModelVersion,
                                                                 api_client: Callable[[str], Client]) -> None:
    client = api_client("predictions:read")

    unknown = client.get("/api/v1/models/heart")
    no_version = client.get("/api/v1/models/diabetes", {"version": 99})
    bad_version = client.get("/api/v1/models/diabetes", {"version": "two"})

    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "code": "not_found", "message": "No model is registered for the use case 'heart'.",
        "fields": {"use_case": ["Unknown use case; registered use cases: diabetes."]}}
    assert no_version.status_code == 404 and no_version.json()["error"]["code"] == "not_found"
    assert no_version.json()["error"]["fields"] == {
        "version": [f"diabetes has no version 99; registered versions: {champion.version}."]}
    assert bad_version.status_code == 400 and list(bad_version.json()["error"]["fields"]) == ["version"]


def test_the_catalogue_needs_predictions_read(champion: ModelVersion, api_client: Callable[[str], Client]) -> None:
    for path in ("/api/v1/models", "/api/v1/models/diabetes"):
        assert Client().get(path).status_code == 401
        for scopes in ("predictions:write", "patients:read patients:write audit:read", "predictions:read:all"):
            refused = api_client(scopes).get(path)
            assert refused.status_code == 403, (path, scopes)
            assert refused.json()["error"]["code"] == "permission_denied"


def test_the_openapi_schema_documents_the_catalogue_and_its_errors(db: None, client: Client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    detail = schema["paths"]["/api/v1/models/{use_case}"]["get"]
    assert {"/api/v1/models", "/api/v1/models/{use_case}"} <= set(schema["paths"])
    assert any(p["name"] == "version" and p["in"] == "query" for p in detail["parameters"])
    ok = detail["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    feature = schema["components"]["schemas"]["FeatureContract"]["properties"]
    assert ok == "ModelVersionDetail"
    assert {"unit", "accepted_units", "min", "max", "categories", "loinc", "may_be_missing"} <= set(feature)
    for status in ("401", "403", "404"):
        assert detail["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
