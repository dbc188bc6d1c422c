"""Every API view declares its OAuth2 scopes, and the scope matrix holds: for every endpoint and method, no token
gives 401, a token without the required scope gives 403, and a token with it gets past authorization. Every scope
the server grants is in the matrix."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

# `predictions:read:all` only widens `predictions:read` (to other applications' predictions): alone it opens nothing,
# so every endpoint must refuse it (tests/hostile/test_read_scoping.py covers what it widens).
SCOPES = ["predictions:read", "predictions:write", "patients:read", "patients:write", "audit:read",
          "predictions:read:all"]
# Views that are deliberately not OAuth2-protected, and why.
OPEN = {
    "SpectacularAPIView": "the OpenAPI schema is public",
    "SpectacularSwaggerView": "the API docs page is public",
    "SpectacularSwaggerSplitView": "the API docs page (and its init script) is public",
    "CdsDiscoveryApi": "CDS Hooks discovery describes services only",
    "CdsServiceApi": "CDS Hooks calls are authenticated by the EHR's signed JWT (tests/apps/predictions)",
}


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _sample_path(route: str) -> str:
    path = route.replace("<uuid:", "<").replace("<int:", "<").replace("<slug:", "<").replace("<str:", "<")
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        name = path[start + 1:end]
        value = "00000000-0000-4000-8000-000000000001" if "id" in name else "1"
        path = path[:start] + value + path[end + 1:]
    return "/" + path.lstrip("^").rstrip("$")


def api_views() -> list[tuple[str, type[APIView]]]:
    found = []
    for route, callback in _walk(get_resolver().url_patterns):
        view_class = getattr(callback, "cls", None)
        if view_class is not None and issubclass(view_class, APIView):
            found.append((route, view_class))
    return found


def scoped_endpoints() -> list[tuple[str, str, list[list[str]]]]:
    rows = []
    for route, view in api_views():
        if view.__name__ in OPEN:
            continue
        requirements = getattr(view, "required_alternate_scopes", None)
        if requirements is None and getattr(view, "required_scopes", None):
            requirements = {m.upper(): [list(view.required_scopes)] for m in view.http_method_names
                            if hasattr(view, m) and m not in {"options", "head"}}
        for method, alternatives in (requirements or {}).items():
            rows.append((_sample_path(route), method, alternatives))
    return rows


def test_every_api_view_declares_authentication_permission_and_scopes() -> None:
    offenders = []
    for route, view in api_views():
        if view.__name__ in OPEN:
            continue
        declared = view.__dict__.keys() | {k for base in view.__mro__[1:-1] if base is not APIView
                                           for k in base.__dict__}
        scopes = getattr(view, "required_alternate_scopes", None) or getattr(view, "required_scopes", None)
        if not {"authentication_classes", "permission_classes"} <= declared or not scopes:
            offenders.append(f"{route} ({view.__name__})")
    assert not offenders, f"API views without declared auth/permission/scopes: {offenders}"
    assert len(api_views()) >= 4


@pytest.mark.parametrize(("path", "method", "alternatives"), scoped_endpoints(),
                         ids=lambda value: value if isinstance(value, str) else None)
def test_scope_matrix(db: None, api_client: Any, client: Any, path: str, method: str,
                      alternatives: list[list[str]]) -> None:
    def send(c: Any) -> Any:
        return getattr(c, method.lower())(path, data="{}" if method in {"POST", "PUT", "PATCH"} else None,
                                          content_type="application/json")

    assert send(client).status_code == 401, "no token"
    allowed = {scope for alternative in alternatives for scope in alternative}
    for scope in SCOPES:
        status = send(api_client(scope)).status_code
        if scope in allowed and [scope] in alternatives:
            assert status not in {401, 403}, f"{scope} should pass authorization, got {status}"
        elif scope not in allowed:
            assert status == 403, f"{scope} should be refused, got {status}"


def test_the_matrix_covers_every_scope_the_server_grants(settings: Any) -> None:
    assert set(SCOPES) == set(settings.OAUTH2_PROVIDER["SCOPES"])
