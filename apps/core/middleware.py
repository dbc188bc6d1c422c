import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import csp.constants
import csp.middleware
import csp.utils
import django.contrib.auth.middleware
import django.contrib.messages.middleware
import django.contrib.sessions.middleware
import django_prometheus.middleware
from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse

from .context import request_id_var
from .exception_handler import error_body
from .parsers import too_large
from .views import JSON_ERROR_PREFIXES

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Takes a well-formed X-Request-ID from the caller or makes one; echoes it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        # Not reset afterwards: Django logs the response status after this middleware returns, and that line
        # must carry the id too. Every request sets its own value first.
        request_id_var.set(request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class BodyLimitMiddleware:
    """Refuses an API request whose declared body is over CLINPREDICT_MAX_BODY_BYTES with 413 in the API's error
    shape, before anything reads it. Without it Django raises RequestDataTooBig from whichever code first touches
    the body, which the 400 handler also answers with 413 (apps/core/views.py), but only after logging a traceback
    as a security error for what is usually a client sending too large a batch."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(JSON_ERROR_PREFIXES):
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > settings.CLINPREDICT_MAX_BODY_BYTES:
                error = too_large(declared)
                return JsonResponse(error_body(error.code, error.message, **error.extra), status=error.status_code)
        return self.get_response(request)


# API paths whose requests authenticate with an `Authorization: Bearer` token (OAuth2, or the CDS Hooks JWT) and never
# with the session: every view under them names its own authentication (apps/core/authentication.py, cds_views.py).
BEARER_API_PREFIXES = ("/api/", "/fhir/", "/cds-services")


def bearer_api_request(request: HttpRequest) -> bool:
    """A request to an API path that carries a bearer token: it needs none of the middleware that serves people's
    sessions (session, sign-in, session timeout, messages). Decided once per request."""
    try:
        return bool(request._clinpredict_bearer_api)  # type: ignore[attr-defined]
    except AttributeError:
        bearer = (request.path.startswith(BEARER_API_PREFIXES)
                  and request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer ")
        request._clinpredict_bearer_api = bearer  # type: ignore[attr-defined]
        return bearer


class PagesOnly:
    """Mixin for a middleware that serves people's sessions: a bearer-token API request (`bearer_api_request`)
    passes straight through it; every other request, API or page, gets the middleware unchanged. On the prediction
    path these did nothing but cost calls (the session was even read, for SessionTimeoutMiddleware's
    `request.user`): API views authenticate with the token alone and no API view reads the session or sets a
    message. Such a request has no `request.session`; `request.user` is what the API view's authentication set.

    CSRF and django-axes keep their own middleware for every request: both are cheap on the API (DRF views are
    CSRF-exempt; axes only looks for a lockout flag), and Django's and axes' security checks (security.W003,
    axes.W002) look for their exact dotted paths in MIDDLEWARE."""

    # Synchronous only (gunicorn's WSGI workers): under ASGI Django adapts these with sync_to_async.
    sync_capable = True
    async_capable = False

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if bearer_api_request(request):
            return self.get_response(request)  # type: ignore[attr-defined, no-any-return]
        return super().__call__(request)  # type: ignore[misc, no-any-return]


class SessionMiddleware(PagesOnly, django.contrib.sessions.middleware.SessionMiddleware):
    pass


class AuthenticationMiddleware(PagesOnly, django.contrib.auth.middleware.AuthenticationMiddleware):
    pass


class MessageMiddleware(PagesOnly, django.contrib.messages.middleware.MessageMiddleware):
    pass


class SessionTimeoutMiddleware:
    """Signs a person out after SESSION_IDLE_TIMEOUT_SECONDS without a request, and SESSION_ABSOLUTE_TIMEOUT_SECONDS
    after sign-in whatever the activity (HIPAA automatic logoff; ASVS 3.3)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if bearer_api_request(request):  # pages only (PagesOnly): no session on a bearer-token API request
            return self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            now = time.time()
            started = request.session.setdefault("clinpredict_login_at", now)
            last = request.session.get("clinpredict_last_seen", now)
            if (now - last > settings.SESSION_IDLE_TIMEOUT_SECONDS
                    or now - started > settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS):
                logout(request)
                if request.path.startswith("/api/"):
                    return self.get_response(request)
                return redirect_to_login(request.get_full_path())
            request.session["clinpredict_last_seen"] = now
        return self.get_response(request)


class NoStoreMiddleware:
    """`Cache-Control: no-store` on every response except static files: pages and API answers may carry patient
    data and must not be kept by browsers or proxies."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not request.path.startswith(f"/{settings.STATIC_URL.strip('/')}/"):
            response["Cache-Control"] = "no-store, max-age=0"
            response["Pragma"] = "no-cache"
        return response


_CSP_OVERRIDES = ("_csp_config", "_csp_update", "_csp_replace", "_csp_exempt",
                  "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro", "_csp_exempt_ro")


class CSPMiddleware(csp.middleware.CSPMiddleware):
    """django-csp's middleware, with the site-wide header built once instead of on every response.

    A response that used a nonce, carries a per-view policy (the csp decorators), or meets a report-only policy or
    DEBUG goes through django-csp unchanged. The rest (every API answer and most pages) get the very header
    `build_policy()` gives for the settings, rebuilt whenever the CONTENT_SECURITY_POLICY object changes."""

    _cached: tuple[object, str] = (None, "")

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (settings.DEBUG or getattr(request, "_csp_nonce", None) is not None
                or getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
                or any(hasattr(response, name) for name in _CSP_OVERRIDES)):
            return super().process_response(request, response)
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", None) or {}
        if CSPMiddleware._cached[0] is not policy:
            CSPMiddleware._cached = (policy, csp.utils.build_policy())
        header = CSPMiddleware._cached[1]
        excluded = request.path_info.startswith(tuple(policy.get("EXCLUDE_URL_PREFIXES") or ()))
        if header and csp.constants.HEADER not in response and not excluded:
            response[csp.constants.HEADER] = header
        request.csp_nonce = csp.middleware.CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response


class PrometheusAfterMiddleware(django_prometheus.middleware.PrometheusAfterMiddleware):
    """django-prometheus' request metrics, with the `method` label always one of the standard methods or
    "<invalid method>". django-prometheus already does so for its counters but labels the latency histogram with the
    raw request method, which a client chooses freely (gunicorn accepts any upper-case token): each invented method
    would add a histogram series to /metrics."""

    def label_metric(self, metric: Any, request: Any, response: Any = None, **labels: Any) -> Any:
        if "method" in labels:
            labels["method"] = self._method(request)
        return super().label_metric(metric, request, response, **labels)
