import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections
from django.test import Client

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.predictions.models import Prediction

URL = "/api/v1/predictions"


def post(client: Client, body: Any, key: str) -> Any:
    return client.post(URL, data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)


def test_same_key_and_body_returns_the_first_response(champion: Any, api_client: Any, valid_features: dict) -> None:
    client = api_client("predictions:write")
    body = {"use_case": "diabetes", "patient_id": "p-9", "features": valid_features}

    first = post(client, body, "key-1")
    second = post(client, body, "key-1")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Prediction.objects.count() == 1
    assert AuditEvent.objects.filter(action="prediction.create").count() == 1


def test_same_key_with_another_body_is_422_and_stores_nothing(champion: Any, api_client: Any,
                                                              valid_features: dict) -> None:
    client = api_client("predictions:write")
    post(client, {"use_case": "diabetes", "features": valid_features}, "key-2")

    other = post(client, {"use_case": "diabetes", "features": {**valid_features, "age": 61}}, "key-2")

    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert Prediction.objects.count() == 1


def test_a_rejected_request_does_not_consume_the_key(champion: Any, api_client: Any, valid_features: dict) -> None:
    client = api_client("predictions:write")
    bad = post(client, {"use_case": "diabetes", "features": {**valid_features, "bmi": 500}}, "key-3")

    good = post(client, {"use_case": "diabetes", "features": valid_features}, "key-3")

    assert bad.status_code == 400 and good.status_code == 201
    assert Prediction.objects.count() == 1


def test_keys_are_scoped_to_the_client(champion: Any, api_client: Any, valid_features: dict, oauth_app: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application, set_token_value

    other_app = Application.objects.create(
        name="other", client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS, client_id="other-system")
    body = {"use_case": "diabetes", "features": valid_features}
    post(api_client("predictions:write"), body, "shared-key")
    token = AccessToken(application=other_app, scope="predictions:write", expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, "other-raw-token")
    token.save()

    response = post(Client(HTTP_AUTHORIZATION="Bearer other-raw-token"), body, "shared-key")

    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert Prediction.objects.count() == 2


def test_fifty_concurrent_duplicates_make_one_prediction_and_one_audit_event(
    transactional_db: None, trained_dir: Any, oauth_app: Any, valid_features: dict
) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import AccessToken, set_token_value

    from apps.audit.actors import Actor
    from apps.registry.services import model_version_promote, model_version_register

    version = model_version_register(source_dir=trained_dir, actor=Actor("system", "tests")).version
    model_version_promote(version_id=version.pk, actor=Actor("system", "tests"), reason="concurrency test")
    token = AccessToken(application=oauth_app, scope="predictions:write", expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, "concurrent-token")
    token.save()
    body = {"use_case": "diabetes", "patient_id": "p-concurrent", "features": valid_features}

    def call(_: int) -> tuple[int, str]:
        try:
            response = post(Client(HTTP_AUTHORIZATION="Bearer concurrent-token"), body, "one-key-for-all")
            return response.status_code, response.json()["id"]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(call, range(50)))

    assert {status for status, _ in results} == {201}
    assert len({prediction_id for _, prediction_id in results}) == 1
    assert Prediction.objects.count() == 1
    assert AuditEvent.objects.filter(action="prediction.create").count() == 1
    assert audit_chain_verify().ok
