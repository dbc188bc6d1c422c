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


def test_an_unreachable_rate_limit_cache_does_not_stop_predictions(champion: Any, api_client: Any, settings: Any,
                                                                   valid_features: dict) -> None:
    import json
    import socket

    from django.core.cache import caches

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{port}/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
    # (pytest-django's settings fixture resets Django's cache handlers when CACHES changes)
    assert type(caches["default"]).__name__ == "RedisCache"

    response = api_client("predictions:write").post(
        "/api/v1/predictions", data=json.dumps({"use_case": "diabetes", "features": valid_features}),
        content_type="application/json")

    assert response.status_code == 201


def test_counts_live_in_redis_one_counter_per_client_and_window(champion: Any, api_client: Any,
                                                                settings: Any) -> None:
    """With Redis (as in production) each request is one atomic increment of a per-window counter shared by every
    worker, not a list of request times rewritten on every request."""
    from django.core.cache import caches

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:6379/13"}}
    settings.CLINPREDICT_API_THROTTLE_RATE = "3/min"
    redis_cache = caches["default"]
    redis_cache.clear()
    client = api_client("predictions:read")

    statuses = [client.get("/api/v1/predictions").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    keys = [k.decode() for k in redis_cache._cache.get_client().keys("*throttle_client_app*")]
    assert len(keys) == 1 and keys[0].rsplit(":", 1)[1].isdigit()  # one counter: <client key>:<window number>
    assert redis_cache.get(keys[0].split(":", 2)[-1]) == 4
    redis_cache.clear()
