"""The OAuth2 token endpoint, hardened: repeated failed client authentications from one address are refused for a
while (brute force on client secrets), a token is issued in one transaction with its audit event, and every refused
token request is an audit event too (`oauth2.token.failed`: the client id, grant type and scope asked for, the
address, the status and OAuth2 error; never a secret, code, refresh token, assertion or password). Requests refused
while a client id and address are locked out are not recorded one by one: the lockout is (`oauth2.token_lockout`)."""

import base64
import binascii
import json
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from oauth2_provider import views as oauth2_views

from apps.audit.actors import Actor
from apps.audit.services import audit_event_record_standalone

from .net import client_ip


def _client_id(request: HttpRequest) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials).decode("utf-8", "replace").partition(":")[0][:100]
        except (binascii.Error, ValueError):
            return ""
    return str(request.POST.get("client_id", ""))[:100]


class TokenView(oauth2_views.TokenView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        client_id, address = _client_id(request), client_ip(request)
        key = f"oauth2-token-failures:{client_id}:{address}"
        if cache.get(key, 0) >= settings.TOKEN_FAILURE_LIMIT:
            response = JsonResponse({"error": "slow_down", "error_description":
                                     "Too many failed client authentications; try again later."}, status=429)
            response["Retry-After"] = str(settings.TOKEN_LOCKOUT_SECONDS)
            return response
        with transaction.atomic():  # the token and its "oauth2.token_issued" audit event commit together
            response = super().post(request, *args, **kwargs)
        if response.status_code == 200:
            cache.delete(key)
            return response
        self._audit_failure(request, response, client_id=client_id, address=address)
        if self._client_auth_failed(response):
            # add-then-incr is atomic in Redis: concurrent failures on several workers each count once.
            cache.add(key, 0, timeout=settings.TOKEN_LOCKOUT_SECONDS)
            try:
                failures = int(cache.incr(key))
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=settings.TOKEN_LOCKOUT_SECONDS)
                failures = 1
            if failures == settings.TOKEN_FAILURE_LIMIT:
                audit_event_record_standalone(
                    actor=Actor(type="anonymous", id=""), action="oauth2.token_lockout",
                    object_type="oauth2_application", inputs={"client_id": client_id},
                    output={"failures": failures, "lockout_seconds": settings.TOKEN_LOCKOUT_SECONDS},
                    source_ip=address,
                )
        return response

    @staticmethod
    def _client_auth_failed(response: HttpResponse) -> bool:
        if response.status_code == 401:
            return True
        return _oauth_error(response)[0] == "invalid_client"

    @staticmethod
    def _audit_failure(request: HttpRequest, response: HttpResponse, *, client_id: str, address: str | None) -> None:
        """One audit event per refused token request. Only what identifies the attempt is kept: the request's
        secrets (client secret, authorization code, refresh token, client assertion, password) never are."""
        error, description = _oauth_error(response)
        audit_event_record_standalone(
            actor=Actor(type="anonymous", id=""), action="oauth2.token.failed", object_type="oauth2_application",
            object_id=client_id,
            inputs={"client_id": client_id, "grant_type": str(request.POST.get("grant_type", ""))[:50],
                    "scope": str(request.POST.get("scope", ""))[:300]},
            output={"status": response.status_code, "error": error, "error_description": description},
            source_ip=address,
        )


def _oauth_error(response: HttpResponse) -> tuple[str, str]:
    """The OAuth2 error code and description of a token endpoint response (RFC 6749 5.2), "" where absent."""
    try:
        body = json.loads(response.content)
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error") or "")[:100], str(body.get("error_description") or "")[:300]
