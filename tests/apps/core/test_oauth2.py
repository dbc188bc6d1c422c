"""OAuth2 as external systems use it: client credentials, and authorization code with PKCE (S256 only) for
interactive apps; RFC 9700 hardening (code replay, refresh-token reuse, exact redirect URIs, hashed secrets)."""

import base64
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.hashers import check_password
from django.test import Client
from oauth2_provider.models import AccessToken, Application, RefreshToken

REDIRECT = "https://ehr.example.org/callback"
SECRET = "interactive-app-secret"
VERIFIER = "a" * 43 + "-verifier-with-enough-entropy-1234567890"


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@pytest.fixture
def interactive_app(db: None, clinician: Any) -> Application:
    return Application.objects.create(
        name="bedside app", client_id="bedside-app", client_secret=SECRET, user=clinician,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT, skip_authorization=True,
    )


def _authorize(client: Client, **overrides: str) -> Any:
    params = {"response_type": "code", "client_id": "bedside-app", "redirect_uri": REDIRECT,
              "scope": "predictions:read", "state": "st-1", "code_challenge": _challenge(VERIFIER),
              "code_challenge_method": "S256", **overrides}
    return client.get("/o/authorize/", {k: v for k, v in params.items() if v != ""})


def _code(response: Any) -> str:
    assert response.status_code == 302, response.content[:300]
    query = parse_qs(urlsplit(response["Location"]).query)
    assert "code" in query, response["Location"]
    return query["code"][0]


def _exchange(code: str, verifier: str = VERIFIER) -> Any:
    return Client().post("/o/token/", {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
        "client_id": "bedside-app", "client_secret": SECRET,
    })


def test_authorization_code_with_pkce_s256_gives_an_hour_token(interactive_app: Any, clinician_client: Client,
                                                                champion: Any) -> None:
    response = _authorize(clinician_client)
    assert parse_qs(urlsplit(response["Location"]).query)["state"] == ["st-1"]

    token = _exchange(_code(response))

    assert token.status_code == 200, token.content
    body = token.json()
    assert body["expires_in"] <= 3600 and body["scope"] == "predictions:read" and "refresh_token" in body
    api = Client(HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert api.get("/api/v1/predictions").status_code == 200
    write = api.post("/api/v1/predictions", data=json.dumps({}), content_type="application/json")
    assert write.status_code == 403  # the token carries the read scope only


@pytest.mark.parametrize(("overrides", "why"), [
    ({"code_challenge": "", "code_challenge_method": ""}, "missing"),
    ({"code_challenge": VERIFIER, "code_challenge_method": "plain"}, "plain"),
])
def test_pkce_is_required_and_only_s256(interactive_app: Any, clinician_client: Client, overrides: dict,
                                        why: str) -> None:
    response = _authorize(clinician_client, **overrides)

    assert response.status_code in {302, 400}
    if response.status_code == 302:
        assert "error=" in response["Location"] and "code=" not in response["Location"], why


def test_wrong_verifier_and_code_replay_are_rejected(interactive_app: Any, clinician_client: Client) -> None:
    code = _code(_authorize(clinician_client))

    wrong = _exchange(code, verifier="b" * 60)
    code2 = _code(_authorize(clinician_client))
    first = _exchange(code2)
    replay = _exchange(code2)

    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert first.status_code == 200
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_exactly(interactive_app: Any, clinician_client: Client) -> None:
    for uri in (REDIRECT + "/extra", REDIRECT + "?x=1", "https://ehr.example.org/", REDIRECT.upper()):
        response = _authorize(clinician_client, redirect_uri=uri)
        assert response.status_code == 400, uri  # an error page, never a redirect to the unregistered URI


def test_refresh_rotates_and_reuse_revokes_the_family(interactive_app: Any, clinician_client: Client) -> None:
    first = _exchange(_code(_authorize(clinician_client))).json()

    def refresh(token: str) -> Any:
        return Client().post("/o/token/", {"grant_type": "refresh_token", "refresh_token": token,
                                           "client_id": "bedside-app", "client_secret": SECRET})

    second = refresh(first["refresh_token"])
    assert second.status_code == 200 and second.json()["refresh_token"] != first["refresh_token"]
    reuse = refresh(first["refresh_token"])
    after_reuse = refresh(second.json()["refresh_token"])

    assert reuse.status_code == 400
    assert after_reuse.status_code == 400  # the whole family is revoked once a rotated token is replayed
    assert Client(HTTP_AUTHORIZATION=f"Bearer {second.json()['access_token']}").get(
        "/api/v1/predictions").status_code == 401


def test_client_secrets_and_tokens_are_not_stored_in_clear(interactive_app: Any, clinician_client: Client) -> None:
    body = _exchange(_code(_authorize(clinician_client))).json()

    stored_app = Application.objects.get(pk=interactive_app.pk)
    assert stored_app.client_secret != SECRET and check_password(SECRET, stored_app.client_secret)
    assert not AccessToken.objects.filter(token=body["access_token"]).exists()
    assert not RefreshToken.objects.filter(token=body["refresh_token"]).exists()
    assert all(token.token == "" for token in AccessToken.objects.all())


def test_bearer_token_in_the_query_string_is_refused(champion: Any, api_client: Any) -> None:
    api_client("predictions:read")

    response = Client().get("/api/v1/predictions", {"access_token": "tok-predictions_read"})

    assert response.status_code == 401
