"""The API's bearer check (apps/core/authentication.py) accepts exactly what django-oauth-toolkit accepts and refuses
the rest with the toolkit's own answer: the token is looked up on every request, so expiry and revocation apply at
once, and a token in the query string is never taken."""

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import AccessToken, set_token_value
from oauth2_provider.oauth2_validators import OAuth2Validator

from apps.core.authentication import load_access_token

URL = "/api/v1/predictions"


def _token(app: Any, raw: str, *, scope: str = "predictions:read", user: Any = None, **extra: Any) -> Any:
    token = AccessToken(application=app, user=user, scope=scope, expires=timezone.now() + timedelta(hours=1), **extra)
    set_token_value(token, raw)
    token.save()
    return token


@pytest.mark.django_db
def test_loaded_token_equals_the_toolkits(oauth_app: Any) -> None:
    user = get_user_model().objects.create_user("ehr-service-user")
    _token(oauth_app, "raw-token-1", user=user)
    ours, theirs = load_access_token("raw-token-1"), OAuth2Validator()._load_access_token("raw-token-1")
    assert ours.pk == theirs.pk
    fields = [f.attname for f in AccessToken._meta.concrete_fields]
    assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert ours.application.client_id == theirs.application.client_id == "test-system"
    assert ours.user.username == theirs.user.username == "ehr-service-user"
    assert load_access_token("not-a-token") is None


@pytest.mark.django_db
def test_valid_token_passes_and_revocation_applies_on_the_next_request(oauth_app: Any) -> None:
    token = _token(oauth_app, "raw-token-2")
    client = Client(HTTP_AUTHORIZATION="Bearer raw-token-2")
    assert client.get(URL).status_code == 200
    token.revoke()  # the toolkit deletes the row
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="api"')


@pytest.mark.django_db
def test_expired_token_gets_the_toolkits_refusal(oauth_app: Any) -> None:
    token = _token(oauth_app, "raw-token-3")
    AccessToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    response = Client(HTTP_AUTHORIZATION="Bearer raw-token-3").get(URL)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.mark.django_db
def test_wrong_scope_is_403_and_no_token_is_401(oauth_app: Any) -> None:
    _token(oauth_app, "raw-token-4", scope="patients:read")
    assert Client(HTTP_AUTHORIZATION="Bearer raw-token-4").get(URL).status_code == 403
    assert Client().get(URL).status_code == 401
    assert Client(HTTP_AUTHORIZATION="Basic raw-token-4").get(URL).status_code == 401


@pytest.mark.django_db
def test_token_in_the_query_string_is_refused(oauth_app: Any) -> None:
    _token(oauth_app, "raw-token-5")
    assert Client().get(f"{URL}?access_token=raw-token-5").status_code == 401


@pytest.mark.django_db
def test_resource_bound_token_is_left_to_the_toolkit(oauth_app: Any) -> None:
    _token(oauth_app, "raw-token-6", resource=["https://other.example/api"])
    assert Client(HTTP_AUTHORIZATION="Bearer raw-token-6").get(URL).status_code == 401
