"""Brute-force protection: the sign-in page and admin sign-in lock a (username, address) pair after repeated
failures, the token endpoint refuses a client id that keeps failing, the client address comes from the configured
number of proxies, and every lockout is audited."""

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from apps.audit.models import AuditEvent


@pytest.fixture(autouse=True)
def _clean_counters() -> None:
    cache.clear()


def _login(client: Client, password: str, path: str = "/accounts/login/", **extra: Any) -> Any:
    return client.post(path, {"username": "clinician", "password": password}, **extra)


def test_five_failures_lock_the_sign_in_even_for_the_right_password(clinician: Any, settings: Any) -> None:
    client = Client()
    statuses = [_login(client, "wrong-password").status_code for _ in range(5)]

    locked = _login(client, "a-long-test-password")

    assert statuses[:4] == [200] * 4  # the form again, with its error
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="auth.lockout", inputs__username="clinician").exists()
    assert AuditEvent.objects.filter(action="auth.login_failed").count() >= 5


def test_admin_sign_in_is_protected_too(clinician: Any) -> None:
    client = Client()
    for _ in range(5):
        _login(client, "wrong", path="/admin/login/")

    assert _login(client, "a-long-test-password", path="/admin/login/").status_code == 429


def test_lockout_is_per_address_behind_the_configured_proxy(clinician: Any, settings: Any) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    attacker = {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    for _ in range(5):
        _login(Client(), "wrong", **attacker)

    from_elsewhere = _login(Client(), "a-long-test-password", HTTP_X_FORWARDED_FOR="198.51.100.20")
    spoofed = _login(Client(), "a-long-test-password", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9")

    assert from_elsewhere.status_code == 302  # another client of the same proxy signs in normally
    assert spoofed.status_code == 429  # a made-up left-most hop does not escape the lockout
    lockouts = AuditEvent.objects.filter(action="auth.lockout")
    assert lockouts.exists() and {e.source_ip for e in lockouts} == {"203.0.113.9"}


def test_without_trusted_proxies_x_forwarded_for_is_ignored(clinician: Any) -> None:
    for i in range(5):
        _login(Client(), "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")

    assert _login(Client(), "a-long-test-password").status_code == 429


def test_token_endpoint_refuses_a_client_after_repeated_bad_secrets(oauth_app: Any, settings: Any) -> None:
    settings.TOKEN_FAILURE_LIMIT = 3
    bad = {"grant_type": "client_credentials", "client_id": "test-system", "client_secret": "guess"}
    good = {**bad, "client_secret": "test-system-secret"}

    failures = [Client().post("/o/token/", bad).status_code for _ in range(3)]
    refused = Client().post("/o/token/", good)

    assert failures == [401, 401, 401]
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert AuditEvent.objects.filter(action="oauth2.token_lockout", inputs__client_id="test-system").count() == 1


def test_a_successful_token_is_issued_with_its_audit_event(oauth_app: Any) -> None:
    response = Client().post("/o/token/", {"grant_type": "client_credentials", "client_id": "test-system",
                                           "client_secret": "test-system-secret", "scope": "predictions:read"})

    assert response.status_code == 200
    assert AuditEvent.objects.filter(action__startswith="oauth2.token").exclude(
        action="oauth2.token_lockout").count() == 1
