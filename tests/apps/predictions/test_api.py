import json
from typing import Any

import pytest
from oauth2_provider.models import AccessToken

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.predictions.models import Prediction

URL = "/api/v1/predictions"


def post(client: Any, body: Any, **headers: Any) -> Any:
    return client.post(URL, data=json.dumps(body), content_type="application/json", **headers)


def test_client_credentials_token_then_prediction_returns_201_with_audit(champion: Any, oauth_app: Any,
                                                                          client: Any, valid_features: dict) -> None:
    token_response = client.post("/o/token/", {
        "grant_type": "client_credentials", "client_id": "test-system", "client_secret": "test-system-secret",
        "scope": "predictions:write predictions:read",
    })
    assert token_response.status_code == 200, token_response.content
    token = token_response.json()["access_token"]
    assert token_response.json()["expires_in"] <= 3600

    response = post(client, {"use_case": "diabetes", "patient_id": "p-001", "features": valid_features},
                    HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 201, response.content
    body = response.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert body["model_version"] == champion.label
    assert body["model_sha256"] == champion.onnx_sha256
    assert body["risk_band"] in {"low", "moderate", "high"}
    assert body["positive"] == (body["probability"] >= body["threshold"])
    assert body["imputed"] == ["insulin"]
    assert {item["feature"] for item in body["explanation"]} == set(valid_features)
    glucose = next(item for item in body["explanation"] if item["feature"] == "glucose")
    assert glucose["unit"] == "mg/dL" and glucose["value"] == pytest.approx(7.9 * 18.016, rel=1e-6)

    prediction = Prediction.objects.get()
    event = AuditEvent.objects.get(action="prediction.create")
    assert body["audit_seq"] == event.seq == prediction.audit_seq
    assert event.object_id == body["id"] == str(prediction.id)
    assert event.actor_type == "client" and event.actor_id == "test-system"
    assert event.model_sha256 == champion.onnx_sha256
    assert event.inputs["features"]["glucose"] == {"value": 7.9, "unit": "mmol/L"}
    assert event.output["probability"] == pytest.approx(body["probability"])
    assert audit_chain_verify().ok


def test_prediction_is_readable_back_with_read_scope(champion: Any, api_client: Any, valid_features: dict) -> None:
    created = post(api_client("predictions:write"), {"use_case": "diabetes", "features": valid_features}).json()
    reader = api_client("predictions:read")

    one = reader.get(f"{URL}/{created['id']}")
    listed = reader.get(URL, {"use_case": "diabetes"})

    assert one.status_code == 200 and one.json() == created
    assert listed.status_code == 200 and listed.json()["count"] == 1
    assert listed.json()["results"][0]["id"] == created["id"]


def test_batch_creates_one_prediction_and_one_audit_event_each(champion: Any, api_client: Any,
                                                               valid_features: dict) -> None:
    items = [{"use_case": "diabetes", "patient_id": f"p-{i}", "features": {**valid_features, "age": 30 + i}}
             for i in range(5)]

    response = post(api_client("predictions:write"), items)

    assert response.status_code == 201, response.content
    assert [item["patient_id"] for item in response.json()] == [f"p-{i}" for i in range(5)]
    assert Prediction.objects.count() == 5
    assert AuditEvent.objects.filter(action="prediction.create").count() == 5
    assert sorted(Prediction.objects.values_list("audit_seq", flat=True)) == sorted(
        AuditEvent.objects.filter(action="prediction.create").values_list("seq", flat=True))


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"glucose": None}, "glucose", "required"),
        ({"glucose": {"value": 120, "unit": "mg"}}, "glucose", "mmol/L"),
        ({"glucose": "high"}, "glucose", "number"),
        ({"bmi": 95}, "bmi", "80"),
        ({"age": True}, "age", "number"),
        ({"cholesterol": 5}, "cholesterol", "glucose"),
    ],
)
def test_bad_feature_gets_400_naming_the_field_and_stores_nothing(
    champion: Any, api_client: Any, valid_features: dict, change: dict, field: str, fragment: str
) -> None:
    events_before = AuditEvent.objects.count()

    response = post(api_client("predictions:write"), {"use_case": "diabetes", "features": {**valid_features, **change}})

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_features"
    assert field in error["fields"]
    assert fragment in " ".join(error["fields"][field])
    assert Prediction.objects.count() == 0
    assert AuditEvent.objects.count() == events_before


def test_missing_feature_key_is_rejected(champion: Any, api_client: Any, valid_features: dict) -> None:
    del valid_features["bmi"]

    response = post(api_client("predictions:write"), {"use_case": "diabetes", "features": valid_features})

    assert response.status_code == 400
    assert "bmi" in response.json()["error"]["fields"]
    assert Prediction.objects.count() == 0


def test_one_bad_element_rejects_the_whole_batch(champion: Any, api_client: Any, valid_features: dict) -> None:
    items = [{"use_case": "diabetes", "features": valid_features},
             {"use_case": "diabetes", "features": {**valid_features, "bmi": 500}}]
    events_before = AuditEvent.objects.count()

    response = post(api_client("predictions:write"), items)

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["1"]
    assert "bmi" in response.json()["error"]["fields"]["1"]
    assert Prediction.objects.count() == 0
    assert AuditEvent.objects.count() == events_before


def test_unknown_use_case_and_malformed_json_are_400(champion: Any, api_client: Any, valid_features: dict) -> None:
    client = api_client("predictions:write")

    unknown = post(client, {"use_case": "sepsis", "features": valid_features})
    malformed = client.post(URL, data="{not json", content_type="application/json")
    unknown_key = post(client, {"use_case": "diabetes", "features": valid_features, "extra": 1})

    assert unknown.status_code == 400 and "use_case" in unknown.json()["error"]["fields"]
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "parse_error"
    assert unknown_key.status_code == 400 and "extra" in unknown_key.json()["error"]["fields"]
    assert Prediction.objects.count() == 0


def test_no_champion_gives_503(db: None, trained_dir: Any, api_client: Any, valid_features: dict) -> None:
    from apps.audit.actors import Actor
    from apps.registry.services import model_version_register

    model_version_register(source_dir=trained_dir, actor=Actor("system", "tests"))

    response = post(api_client("predictions:write"), {"use_case": "diabetes", "features": valid_features})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_champion"


@pytest.mark.parametrize(("method", "scope"), [("post", "predictions:read"), ("get", "predictions:write")])
def test_wrong_scope_is_403(champion: Any, api_client: Any, valid_features: dict, method: str, scope: str) -> None:
    client = api_client(scope)
    body = {"use_case": "diabetes", "features": valid_features}

    response = post(client, body) if method == "post" else client.get(URL)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert Prediction.objects.count() == 0


def test_missing_or_expired_token_is_401(champion: Any, client: Any, api_client: Any, valid_features: dict) -> None:
    body = {"use_case": "diabetes", "features": valid_features}
    expired_client = api_client("predictions:write")
    AccessToken.objects.update(expires="2000-01-01T00:00:00Z")

    assert post(client, body).status_code == 401
    assert post(client, body, HTTP_AUTHORIZATION="Bearer nonsense").status_code == 401
    assert post(expired_client, body).status_code == 401
    assert Prediction.objects.count() == 0
