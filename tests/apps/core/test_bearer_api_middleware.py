"""A request to an API path with a bearer token passes the pages-only middleware (session, sign-in, session timeout,
messages) straight through; pages, and API requests without a bearer token, get them as before. The headers every
answer carries (request id, no-store, CSP, frame options) stay, and CSRF and the lockout middleware run for all."""

import json
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from apps.core import middleware


def test_the_pages_only_middleware_are_djangos_own_in_the_same_places() -> None:
    import django.contrib.auth.middleware
    import django.contrib.messages.middleware
    import django.contrib.sessions.middleware

    wrapped = {
        "apps.core.middleware.SessionMiddleware": django.contrib.sessions.middleware.SessionMiddleware,
        "apps.core.middleware.AuthenticationMiddleware": django.contrib.auth.middleware.AuthenticationMiddleware,
        "apps.core.middleware.SessionTimeoutMiddleware": object,
        "apps.core.middleware.MessageMiddleware": django.contrib.messages.middleware.MessageMiddleware,
    }
    for path, original in wrapped.items():
        assert path in settings.MIDDLEWARE
        assert issubclass(getattr(middleware, path.rsplit(".", 1)[1]), original)
    order = [settings.MIDDLEWARE.index(path) for path in (*wrapped, "django.middleware.csrf.CsrfViewMiddleware")]
    assert order[:4] == sorted(order[:4])  # session before sign-in before its timeout before messages
    assert "axes.middleware.AxesMiddleware" in settings.MIDDLEWARE  # every request, as Django's and axes' checks
    assert order[0] < order[4] < order[1]  # CSRF between session and sign-in, as before


def test_a_bearer_prediction_touches_no_session_and_keeps_every_api_header(
        champion: Any, api_client: Any, valid_features: dict) -> None:
    client = api_client("predictions:write")
    client.cookies["sessionid"] = "not-a-session"  # a stray cookie changes nothing on the API
    response = client.post("/api/v1/predictions", content_type="application/json", HTTP_X_REQUEST_ID="req-12345678",
                           data=json.dumps({"use_case": "diabetes", "features": valid_features}))

    assert response.status_code == 201
    assert "Cookie" not in response.get("Vary", "")  # the session was never read
    assert "sessionid" not in response.cookies
    assert response["X-Request-ID"] == "req-12345678"
    assert response["Cache-Control"] == "no-store, max-age=0"
    assert response["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in response


@pytest.mark.parametrize(("path", "authorization", "bearer"), [
    ("/api/v1/predictions", "Bearer abc", True),
    ("/api/v1/predictions", "bearer abc", True),
    ("/fhir/RiskAssessment/1", "Bearer abc", True),
    ("/cds-services/diabetes", "Bearer abc", True),
    ("/api/v1/predictions", "", False),
    ("/api/v1/predictions", "Basic abc", False),
    ("/o/token/", "Bearer abc", False),  # the token endpoint keeps the lockout middleware
    ("/predictions/", "Bearer abc", False),  # a page is a page, whatever it carries
    ("/admin/", "Bearer abc", False),
])
def test_which_requests_skip_the_pages_only_middleware(rf: Any, path: str, authorization: str,
                                                       bearer: bool) -> None:
    request = rf.get(path, HTTP_AUTHORIZATION=authorization) if authorization else rf.get(path)
    assert middleware.bearer_api_request(request) is bearer


def test_a_page_still_enforces_csrf_even_with_a_bearer_header(clinician: Any) -> None:
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION="Bearer abc")
    client.force_login(clinician)

    response = client.post("/accounts/logout/")

    assert response.status_code == 403  # no CSRF token: refused, as for any page


def test_an_api_request_without_a_bearer_token_still_gets_the_session(clinician: Any) -> None:
    client = Client()
    client.force_login(clinician)

    response = client.get("/api/v1/predictions")

    assert response.status_code == 401  # the API takes no session, but the session middleware did run
    assert "Cookie" in response.get("Vary", "")
