from typing import Any

from django.test import Client

from apps.registry.loader import clear_caches, model_dir


def test_healthz_is_ok_without_anything_else(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_200_with_a_loaded_champion(champion: Any, client: Client) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200, response.content
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    assert checks["models"]["champions"]["diabetes"]["version"] == champion.label


def test_readyz_is_503_without_a_champion(db: None, client: Client) -> None:
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["models"]["ok"] is False


def test_readyz_reports_a_tampered_model(champion: Any, client: Client) -> None:
    path = model_dir(champion) / "model.onnx"
    path.write_bytes(b"not the registered file")
    clear_caches()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert "sha256" in response.json()["checks"]["models"]["champions"]["diabetes"]["error"]


def test_metrics_exposes_prediction_counter(champion: Any, api_client: Any, client: Client,
                                            valid_features: dict) -> None:
    import json

    api_client("predictions:write").post("/api/v1/predictions", data=json.dumps(
        {"use_case": "diabetes", "features": valid_features}), content_type="application/json")

    body = client.get("/metrics").content.decode()

    assert "django_http_requests_total_by_view_transport_method_total" in body
    assert 'clinpredict_predictions_total{channel="api"' in body


def test_request_id_is_echoed_or_generated(client: Client) -> None:
    given = client.get("/healthz", HTTP_X_REQUEST_ID="abc12345-request")
    generated = client.get("/healthz")

    assert given["X-Request-ID"] == "abc12345-request"
    assert len(generated["X-Request-ID"]) == 32


def test_unmatched_api_path_answers_json_and_pages_answer_html(db: None, client: Client) -> None:
    api = client.get("/api/v1/predictions/not-a-uuid")
    page = client.get("/no-such-page/")

    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
