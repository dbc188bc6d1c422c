"""Sessions (idle and absolute timeouts, a fresh id at sign-in, server-side logout) and the security headers every
page carries."""

from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.test import Client

PAGES = ["/", "/predict/diabetes/", "/accounts/login/", "/healthz", "/readyz", "/api/v1/predictions", "/api/docs/",
         "/api/schema/", "/cds-services", "/metrics"]


def _signed_in(clinician: Any) -> Client:
    client = Client()
    signed_in = client.post("/accounts/login/", {"username": "clinician", "password": "a-long-test-password"})
    assert signed_in.status_code == 302
    client.get("/healthz")  # the first signed-in request starts the session clocks
    return client


def _age_session(client: Client, **shifts: float) -> None:
    session = client.session
    for key, seconds in shifts.items():
        session[key] = session[key] - seconds
    session.save()


def test_sign_in_issues_a_new_session_id(clinician: Any) -> None:
    client = Client()
    client.get("/accounts/login/")
    client.cookies["sessionid"] = "attacker-chosen-session-id"

    client.post("/accounts/login/", {"username": "clinician", "password": "a-long-test-password"})

    assert client.cookies["sessionid"].value != "attacker-chosen-session-id"


def test_idle_session_is_signed_out_after_fifteen_minutes(champion: Any, clinician: Any) -> None:
    client = _signed_in(clinician)
    assert client.get("/").status_code == 200

    _age_session(client, clinpredict_last_seen=15 * 60 + 5)
    response = client.get("/")

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.get("/").status_code == 302  # and it stays signed out


def test_activity_keeps_the_session_but_not_past_twelve_hours(champion: Any, clinician: Any) -> None:
    client = _signed_in(clinician)
    _age_session(client, clinpredict_last_seen=14 * 60)
    assert client.get("/").status_code == 200

    _age_session(client, clinpredict_login_at=12 * 3600 + 5)
    assert client.get("/").status_code == 302


def test_logout_deletes_the_server_side_session(champion: Any, clinician: Any) -> None:
    client = _signed_in(clinician)
    key = client.cookies["sessionid"].value
    assert Session.objects.filter(session_key=key).exists()

    client.post("/accounts/logout/")

    assert not Session.objects.filter(session_key=key).exists()
    replay = Client()
    replay.cookies["sessionid"] = key
    assert replay.get("/").status_code == 302


@pytest.mark.parametrize("path", PAGES)
def test_security_headers_on_every_page(champion: Any, clinician: Any, path: str) -> None:
    response = _signed_in(clinician).get(path)

    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp


def test_production_settings_add_hsts_and_secure_cookies() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "clinpredict.settings.production", "SECRET_KEY": "x" * 60,
           "ALLOWED_HOSTS": "clinpredict.example.org"}
    code = ("from django.conf import settings as s; import django; django.setup(); "
            "print(s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
            "s.DEBUG)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)

    assert out.stdout.split() == ["31536000", "True", "True", "True", "False"], out.stderr


def test_static_files_may_be_cached(client: Client) -> None:
    response = client.get("/static/css/app.css")

    assert response.status_code == 200 and "no-store" not in response.get("Cache-Control", "")


def test_cached_csp_header_is_django_csps_own(client: Any) -> None:
    """The middleware builds the site-wide header once (apps/core/middleware.CSPMiddleware): it must be exactly the
    header django-csp builds from the settings, on pages and API answers alike."""
    from csp.utils import build_policy

    for url in ("/accounts/login/", "/api/v1/predictions", "/healthz"):
        assert client.get(url)["Content-Security-Policy"] == build_policy(), url
