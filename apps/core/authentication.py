"""Bearer-token authentication for the API: django-oauth-toolkit's own check, without its per-request set-up cost.

django-oauth-toolkit's `OAuth2Authentication` builds an oauthlib server, an oauthlib request (copying the headers,
the body and the query) and a validator for every call; on the prediction path that was about a quarter of the
Python time per request (benchmarks/results/profile_request.json). The check itself is one indexed lookup: the
SHA-256 of the presented token against `AccessToken.token_checksum` (tokens are stored hashed), then expiry.

`BearerTokenAuthentication` does that lookup directly, as one plain statement mirroring the toolkit's
`OAuth2Validator._load_access_token`, for the common case only: exactly one `Authorization: Bearer <token>` header,
no token in the query string, a token that exists, is unexpired and is not bound to a resource indicator. Every
other request (no header, a wrong scheme, an unknown, expired or resource-bound token, `access_token` anywhere in
the query) is handed to the toolkit's own `OAuth2Authentication`, so refusals and their `WWW-Authenticate`
challenges are exactly the toolkit's. The token is still looked up in the database on every request: revocation
takes effect at once.
"""

import hashlib
from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, models
from drf_spectacular.contrib.django_oauth_toolkit import DjangoOAuthToolkitScheme
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from oauth2_provider.models import get_access_token_model, get_application_model
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

# (model, its concrete fields, each field's converters: what the ORM's compiler applies to a fetched value)
_Part = tuple[type[models.Model], tuple[models.Field, ...], tuple[tuple[Any, tuple[Any, ...]], ...]]


def _part(model: type[models.Model], alias: str) -> _Part:
    fields = tuple(model._meta.concrete_fields)
    converters = []
    for field in fields:
        column = field.get_col(alias)
        converters.append((column, tuple(connection.ops.get_db_converters(column))
                           + tuple(column.get_db_converters(connection))))
    return model, fields, tuple(converters)


@cache
def _token_query() -> tuple[str, tuple[_Part, _Part, _Part]]:
    """The toolkit's `AccessToken.objects.select_related("application", "user").filter(token_checksum=...)` as
    one plain statement (compiling it through the ORM on every request cost more than running it)."""
    token, application, user = get_access_token_model(), get_application_model(), get_user_model()
    qn = connection.ops.quote_name
    parts = tuple(_part(m, alias) for m, alias in ((token, "t"), (application, "a"), (user, "u")))
    select = ", ".join(f"{alias}.{qn(f.column)}" for alias, (_m, fields, _c) in zip("tau", parts, strict=True)
                       for f in fields)
    sql = (
        f"SELECT {select} FROM {qn(token._meta.db_table)} t "  # noqa: S608 - model metadata, not input
        f"LEFT JOIN {qn(application._meta.db_table)} a "
        f"ON a.{qn(application._meta.pk.column)} = t.{qn(token._meta.get_field('application').column)} "
        f"LEFT JOIN {qn(user._meta.db_table)} u "
        f"ON u.{qn(user._meta.pk.column)} = t.{qn(token._meta.get_field('user').column)} "
        f"WHERE t.{qn(token._meta.get_field('token_checksum').column)} = %s"
    )
    return sql, parts  # type: ignore[return-value]


def _instance(part: _Part, values: tuple[Any, ...]) -> models.Model | None:
    model, fields, converters = part
    if values[0] is None:  # no row on this side of the LEFT JOIN
        return None
    converted = []
    for (column, functions), value in zip(converters, values, strict=True):
        for function in functions:
            value = function(value, column, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def load_access_token(token: str) -> Any:
    """The stored AccessToken (with its application and user) for a presented token, or None: the same lookup as
    django-oauth-toolkit's validator (SHA-256 checksum; tokens are stored hashed)."""
    sql, (token_part, application_part, user_part) = _token_query()
    with connection.cursor() as cursor:
        cursor.execute(sql, [hashlib.sha256(token.encode("utf-8")).hexdigest()])
        row = cursor.fetchone()
    if row is None:
        return None
    n_token, n_application = len(token_part[1]), len(application_part[1])
    access_token = _instance(token_part, row[:n_token])
    access_token.application = _instance(application_part, row[n_token:n_token + n_application])  # type: ignore[union-attr]
    access_token.user = _instance(user_part, row[n_token + n_application:])  # type: ignore[union-attr]
    return access_token


class InvalidToken(AuthenticationFailed):
    default_code = "invalid_token"


class BearerTokenAuthentication(OAuth2Authentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != "bearer" or "access_token" in request.META.get("QUERY_STRING", ""):
            return self._toolkit_authenticate(request)
        access_token = load_access_token(parts[1])
        if (access_token is None or access_token.resource or not access_token.is_valid([])
                or (access_token.application is not None and not access_token.application.is_usable(request))):
            return self._toolkit_authenticate(request)  # the toolkit refuses it, with its own error and challenge
        return access_token.user, access_token

    def _toolkit_authenticate(self, request: Request) -> tuple[Any, Any] | None:
        """The toolkit's check. A token that was presented but refused (unknown, expired, revoked, for another
        resource) is a 401 `invalid_token` saying so (RFC 6750 section 3.1), with the toolkit's challenge
        (`WWW-Authenticate: Bearer realm="api",error="invalid_token",...`); no token at all stays DRF's
        "credentials were not provided"."""
        result = super().authenticate(request)
        if result is not None:
            return result
        error = getattr(request, "oauth2_error", None) or {}
        if error.get("error") == "invalid_token":
            description = error.get("error_description") or "The access token is invalid."
            raise InvalidToken(f"The access token is invalid or expired ({description.rstrip('.')}); "
                               "request a new one from /o/token/.")
        return None


class BearerTokenScheme(DjangoOAuthToolkitScheme):
    """OpenAPI: the same `oauth2` security scheme (and per-operation scopes) as the toolkit's class."""

    target_class = "apps.core.authentication.BearerTokenAuthentication"
