from typing import Any

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    cache.clear()


def test_client_over_its_rate_gets_429_with_retry_after(champion: Any, api_client: Any, settings: Any) -> None:
    settings.CLINPREDICT_API_THROTTLE_RATE = "3/min"
    client = api_client("predictions:read")

    statuses = [client.get("/api/v1/predictions").status_code for _ in range(4)]
    throttled = client.get("/api/v1/predictions")

    assert statuses == [200, 200, 200, 429]
    assert throttled.json()["error"]["code"] == "throttled"
    assert 0 < int(throttled["Retry-After"]) <= 60


def test_budget_is_per_application_not_per_token(champion: Any, api_client: Any, settings: Any) -> None:
    from datetime import timedelta

    from django.test import Client
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application, set_token_value

    settings.CLINPREDICT_API_THROTTLE_RATE = "2/min"
    reader, same_app_other_token = api_client("predictions:read"), api_client("predictions:read predictions:write")
    other_app = Application.objects.create(name="other", client_type=Application.CLIENT_CONFIDENTIAL,
                                           authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    token = AccessToken(application=other_app, scope="predictions:read", expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, "other-app-token")
    token.save()

    for _ in range(2):
        reader.get("/api/v1/predictions")

    assert reader.get("/api/v1/predictions").status_code == 429
    assert same_app_other_token.get("/api/v1/predictions").status_code == 429
    assert Client(HTTP_AUTHORIZATION="Bearer other-app-token").get("/api/v1/predictions").status_code == 200
