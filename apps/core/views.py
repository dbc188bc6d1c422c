"""Liveness and readiness probes (JSON, no authentication, no patient data)."""

from typing import Any

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.defaults import page_not_found

from .context import request_id_var


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:  # any failure means not ready; the type is enough to diagnose
        return {"ok": False, "error": type(exc).__name__}


def _check_broker() -> dict[str, Any]:
    if not settings.CELERY_BROKER_URL:
        return {"ok": True, "mode": "eager"}
    from clinpredict.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True, "mode": "broker"}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}


def _check_models() -> dict[str, Any]:
    from apps.core.exceptions import ApplicationError
    from apps.registry.loader import load_version
    from apps.registry.selectors import model_versions_champions

    try:
        champions = list(model_versions_champions())
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    if not champions:
        return {"ok": False, "error": "no champion model registered"}
    loaded: dict[str, Any] = {}
    ok = True
    for version in champions:
        try:
            load_version(version)
            loaded[version.use_case] = {"ok": True, "version": version.label}
        except ApplicationError as exc:
            ok = False
            loaded[version.use_case] = {"ok": False, "version": version.label, "error": exc.message}
    return {"ok": ok, "champions": loaded}


def _audit_backup() -> dict[str, Any]:
    """Informational: an audit backup that is off or overdue is shown, not a reason to take the replica out."""
    from apps.audit.selectors import audit_backup_status

    try:
        status = audit_backup_status(key=settings.AUDIT_BACKUP_KEY)
    except Exception as exc:
        return {"ok": True, "state": "unknown", "error": type(exc).__name__}
    return {"ok": True, "state": status.state, "detail": status.detail,
            "last_backup_at": status.last_backup_at.isoformat() if status.last_backup_at else None}


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "broker": _check_broker()}
    checks["models"] = _check_models() if checks["database"]["ok"] else {"ok": False, "error": "database down"}
    ready = all(check["ok"] for check in checks.values())
    checks["audit_backup"] = _audit_backup() if checks["database"]["ok"] else {"ok": True, "state": "unknown"}
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


API_PREFIXES = ("/api/", "/fhir/", "/cds-services", "/o/")
# Where every error is JSON: the API, FHIR and CDS Hooks, and the OAuth2 endpoints that answer JSON (not
# /o/authorize/, a page for people).
JSON_ERROR_PREFIXES = ("/api/", "/fhir/", "/cds-services", "/o/token/", "/o/revoke_token/", "/o/introspect/")


def _error(code: str, message: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "fields": {}, **extra}}, status=status)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 in the API's error shape under the API prefixes (a path that matches no route, e.g. a malformed id);
    the clinician's HTML page everywhere else."""
    if request.path.startswith(API_PREFIXES):
        return _error("not_found", "No such resource.", 404)
    return page_not_found(request, exception or Http404())


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 400s raised before any view (a body over DATA_UPLOAD_MAX_MEMORY_SIZE read by a middleware or a form
    view, too many form fields, a disallowed host): the API's error shape on API paths, 413 for a body too large."""
    if not request.path.startswith(JSON_ERROR_PREFIXES):
        return defaults.bad_request(request, exception or SuspiciousOperation())
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # CLINPREDICT_MAX_BODY_BYTES unless a deployment split them
        return _error("request_too_large",
                      f"The request body is larger than {limit:,} bytes, the limit (CLINPREDICT_MAX_BODY_BYTES). "
                      "Send fewer items per request.", 413, limit_bytes=limit)
    if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
        return _error("too_many_fields", "The form has more fields than the server accepts "
                      f"({settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}).", 400)
    return _error("bad_request", "The request could not be accepted.", 400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not request.path.startswith(JSON_ERROR_PREFIXES):
        return defaults.permission_denied(request, exception or PermissionDenied())
    return _error("permission_denied", "You do not have permission to perform this action.", 403)


def server_error(request: HttpRequest) -> HttpResponse:
    """500 (an exception nothing else handled; Django has logged it with its traceback and the request id): JSON
    with the request id on API paths, so the caller can quote it; the plain page elsewhere."""
    if not request.path.startswith(JSON_ERROR_PREFIXES):
        return defaults.server_error(request)
    request_id = getattr(request, "request_id", "") or request_id_var.get()
    return _error("server_error", f"An unexpected error occurred and was logged with request id {request_id}; "
                  "nothing was stored. Retry later, or report the request id.", 500, request_id=request_id)
