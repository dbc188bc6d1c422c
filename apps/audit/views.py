"""Auditor pages (group Auditors): filter and page through events, open one, export what the filters select.
Thin: validate the filter form, call a selector or the export service, render or stream."""

import json
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .actors import actor_from_request, source_ip_from_request
from .exports import CONTENT_TYPES, FORMATS, audit_export_stream, export_filename
from .forms import AuditEventFilterForm
from .models import AuditEvent
from .selectors import (
    AuditEventFilters,
    audit_backups_recent,
    audit_chain_verification_latest,
    audit_event_get,
    audit_event_list,
)
from .services import audit_export_start

PAGE_SIZE = 50


def _filter_query(form: AuditEventFilterForm) -> str:
    return urlencode({name: value for name, value in form.data.items() if name in form.fields and value})


@never_cache
@require_GET
@login_required
@permission_required("audit.view_auditevent", raise_exception=True)
def event_list(request: HttpRequest) -> HttpResponse:
    form = AuditEventFilterForm(request.GET or None)
    page = None
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        status = 200
        filters = form.filters() if form.is_bound else AuditEventFilters()
        paginator = Paginator(audit_event_list(filters=filters, newest_first=True), PAGE_SIZE)
        page = paginator.get_page(request.GET.get("page"))
    return render(request, "audit/events.html", {
        "form": form,
        "page": page,
        "query": _filter_query(form) if form.is_bound else "",
        "formats": FORMATS,
        "verification": audit_chain_verification_latest(),
        "backups": audit_backups_recent(limit=3),
    }, status=status)


@never_cache
@require_GET
@login_required
@permission_required("audit.view_auditevent", raise_exception=True)
def event_detail(request: HttpRequest, seq: int) -> HttpResponse:
    try:
        event = audit_event_get(seq=seq)
    except AuditEvent.DoesNotExist as exc:
        raise Http404("No audit event with this sequence number.") from exc
    return render(request, "audit/event_detail.html", {
        "event": event,
        "inputs_json": json.dumps(event.inputs, indent=2, ensure_ascii=False, sort_keys=True),
        "output_json": json.dumps(event.output, indent=2, ensure_ascii=False, sort_keys=True),
    })


@never_cache
@require_GET
@login_required
@permission_required(["audit.view_auditevent", "audit.export_auditevent"], raise_exception=True)
def export(request: HttpRequest, export_format: str) -> HttpResponse:
    if export_format not in FORMATS:
        raise Http404("Unknown export format.")
    form = AuditEventFilterForm(request.GET)
    if not form.is_valid():
        return render(request, "audit/events.html", {"form": form, "page": None, "formats": FORMATS,
                                                     "verification": audit_chain_verification_latest()}, status=400)
    filters = form.filters()
    event = audit_export_start(actor=actor_from_request(request), export_format=export_format, filters=filters,
                               channel="web", source_ip=source_ip_from_request(request))
    response = StreamingHttpResponse(
        audit_export_stream(export_format, filters=filters, up_to_seq=event.seq - 1, exported_at=timezone.now(),
                            export_seq=event.seq),
        content_type=CONTENT_TYPES[export_format])
    response["Content-Disposition"] = f'attachment; filename="{export_filename(export_format, event.seq)}"'
    response["X-Audit-Export-Seq"] = str(event.seq)
    return response
