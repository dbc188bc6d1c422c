"""Audit API for external systems (OAuth2 scope `audit:read`). Thin: validate filters, call a selector or the
export service, serialise or stream."""

from typing import Any

from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from oauth2_provider.contrib.rest_framework import TokenMatchesOASRequirements
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.authentication import BearerTokenAuthentication

from .actors import actor_from_request, source_ip_from_request
from .exports import CONTENT_TYPES, FORMATS, audit_export_stream, export_filename
from .forms import AuditEventFilterForm
from .models import AuditEvent
from .selectors import audit_event_list
from .services import audit_export_start

PAGING_PARAMS = {"limit", "offset"}
FORMAT_PARAM = "format"


class _StreamedRenderer(BaseRenderer):
    """Lets DRF's `?format=` negotiation accept the export formats; the view streams the body itself."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return b""


class CsvRenderer(_StreamedRenderer):
    media_type, format = "text/csv", "csv"


class JsonlRenderer(_StreamedRenderer):
    media_type, format = "application/x-ndjson", "jsonl"


class FhirRenderer(_StreamedRenderer):
    media_type, format = "application/fhir+json", "fhir"


class TokenUserMayReadAudit(BasePermission):
    """A token issued to a person (authorization code) carries that person's rights too: only members with the
    audit permissions may read or export, whatever scopes the token was given. Client-credential tokens have no
    user; for them the scope decides."""

    message = "The user behind this token may not read the audit log."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return True
        needed = ["audit.view_auditevent"]
        if request.query_params.get(FORMAT_PARAM):
            needed.append("audit.export_auditevent")
        return bool(user.has_perms(needed))


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["seq", "created_at", "actor_type", "actor_id", "action", "object_type", "object_id",
                  "patient_ref", "model_version", "model_sha256", "inputs", "output", "request_id", "source_ip",
                  "prev_hash", "hash"]
        read_only_fields = fields


def _parameter(name: str, field: Any) -> OpenApiParameter:
    kind = OpenApiTypes.INT if name.startswith("seq_") else OpenApiTypes.STR
    enum = [value for value, _label in field.choices if value] if hasattr(field, "choices") else None
    return OpenApiParameter(name, kind, enum=enum, description=str(field.help_text or field.label or name))


_FILTER_PARAMETERS = [_parameter(name, field) for name, field in AuditEventFilterForm.base_fields.items()] + [
    OpenApiParameter(FORMAT_PARAM, OpenApiTypes.STR, enum=list(FORMATS),
                     description="Stream every matching event (no paging) as CSV, JSONL or a FHIR R4 Bundle of "
                                 "AuditEvent resources. Each export is itself an audit event."),
]
_PAGE = inline_serializer("PaginatedAuditEventList", fields={
    "count": serializers.IntegerField(),
    "next": serializers.URLField(allow_null=True),
    "previous": serializers.URLField(allow_null=True),
    "results": AuditEventSerializer(many=True),
})
_RESPONSES = {
    (200, "application/json"): _PAGE,
    (200, "text/csv"): OpenApiTypes.STR,
    (200, "application/x-ndjson"): OpenApiTypes.STR,
    (200, "application/fhir+json"): OpenApiTypes.OBJECT,
}


class AuditEventListApi(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements, TokenUserMayReadAudit]
    required_alternate_scopes = {"GET": [["audit:read"]]}
    renderer_classes = [JSONRenderer, CsvRenderer, JsonlRenderer, FhirRenderer]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        try:
            return super().perform_content_negotiation(request, force)
        except Http404 as exc:
            raise ValidationError({FORMAT_PARAM: [
                f"Unknown format '{request.query_params.get(FORMAT_PARAM, '')[:20]}'. Accepted: {', '.join(FORMATS)}."
            ]}) from exc

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # Errors are always the standard JSON shape, even when ?format= asked for CSV, JSONL or FHIR.
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(parameters=_FILTER_PARAMETERS, responses=_RESPONSES)
    def get(self, request: Request) -> Response | StreamingHttpResponse:
        params = request.query_params
        accepted = set(AuditEventFilterForm.base_fields) | PAGING_PARAMS | {FORMAT_PARAM}
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ValidationError({name: [f"Unknown filter. Accepted: {', '.join(sorted(accepted))}."]
                                   for name in unknown})
        form = AuditEventFilterForm(data={name: params.get(name) for name in AuditEventFilterForm.base_fields
                                          if name in params})
        if not form.is_valid():
            raise ValidationError({name: list(errors) for name, errors in form.errors.items()})
        filters = form.filters()
        export_format = params.get(FORMAT_PARAM, "")
        if not export_format or export_format == "json":
            paginator = LimitOffsetPagination()
            page = paginator.paginate_queryset(audit_event_list(filters=filters), request, view=self)
            return paginator.get_paginated_response(AuditEventSerializer(page, many=True).data)
        event = audit_export_start(actor=actor_from_request(request), export_format=export_format, filters=filters,
                                   channel="api", source_ip=source_ip_from_request(request))
        response = StreamingHttpResponse(
            audit_export_stream(export_format, filters=filters, up_to_seq=event.seq - 1, exported_at=timezone.now(),
                                export_seq=event.seq),
            content_type=CONTENT_TYPES[export_format])
        response["Content-Disposition"] = f'attachment; filename="{export_filename(export_format, event.seq)}"'
        response["X-Audit-Export-Seq"] = str(event.seq)
        response["Cache-Control"] = "no-store"
        return response
