"""Monitoring in the admin: retraining runs with the button that requests one, and read-only lists of drift checks,
realised-performance snapshots, daily summaries and scoring runs. Thin: writes go through services."""

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from apps.audit.actors import actor_from_request
from apps.core.exceptions import ApplicationError
from apps.registry.selectors import use_cases

from .forms import RetrainingRequestForm
from .models import DailySummary, DriftCheck, PerformanceSnapshot, RetrainingRun, ScoringRun, Trigger
from .services import retraining_request

REQUEST_PERMISSION = "monitoring.request_retraining"


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RetrainingRun)
class RetrainingRunAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "use_case", "status", "trigger", "attempts", "candidate", "requested_by",
                    "finished_at")
    list_filter = ("use_case", "status", "trigger")
    readonly_fields = [f.name for f in RetrainingRun._meta.fields]
    change_list_template = "admin/monitoring/retrainingrun/change_list.html"

    def has_request_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_staff and request.user.has_perm(REQUEST_PERMISSION))

    def get_urls(self) -> list[URLPattern]:
        return [path("request/", self.admin_site.admin_view(self.request_view),
                     name="monitoring_retrainingrun_request"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {**(extra_context or {}), "can_request": self.has_request_permission(request)}
        return super().changelist_view(request, extra_context=extra)

    def request_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_request_permission(request):
            raise PermissionDenied("Only model admins may request a retraining.")
        form = RetrainingRequestForm(request.POST or None, use_cases=use_cases())
        status = 200
        if request.method == "POST":
            if form.is_valid():
                try:
                    result = retraining_request(
                        use_case=form.cleaned_data["use_case"], actor=actor_from_request(request),
                        trigger=Trigger.ADMIN, reason=form.cleaned_data["reason"],
                        request_key=f"admin:{form.cleaned_data['request_key']}")
                except ApplicationError as exc:
                    form.add_error(None, exc.message)
                else:
                    run = result.run
                    run.refresh_from_db()
                    if run.status == RetrainingRun.Status.FAILED:
                        self.message_user(request, f"The retraining of {run.use_case} could not start: {run.error}",
                                          messages.ERROR)
                    elif result.created:
                        self.message_user(request, f"Retraining of {run.use_case} requested ({run.status}). It "
                                                   "registers a candidate; promoting it stays with you.",
                                          messages.SUCCESS)
                    else:
                        self.message_user(request, f"A retraining of {run.use_case} is already {run.status} "
                                                   f"(requested {run.created_at:%Y-%m-%d %H:%M} UTC by "
                                                   f"{run.requested_by}); no second one was started.",
                                          messages.WARNING)
                    return redirect("admin:monitoring_retrainingrun_changelist")
            status = 400
        return TemplateResponse(request, "admin/monitoring/retrainingrun/request_form.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
            "title": "Request a retraining"}, status=status)


@admin.register(DriftCheck)
class DriftCheckAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "model_label", "status", "n_predictions", "alert_features", "prediction_psi")
    list_filter = ("use_case", "status")
    readonly_fields = [f.name for f in DriftCheck._meta.fields]


@admin.register(PerformanceSnapshot)
class PerformanceSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "model_label", "status", "n", "events", "auroc", "calibration_slope",
                    "calibration_intercept", "brier")
    list_filter = ("use_case", "status")
    readonly_fields = [f.name for f in PerformanceSnapshot._meta.fields]


@admin.register(DailySummary)
class DailySummaryAdmin(ReadOnlyAdmin):
    list_display = ("day", "model_label", "volume", "mean_risk", "positive_rate", "mlflow_status")
    list_filter = ("use_case", "mlflow_status")
    readonly_fields = [f.name for f in DailySummary._meta.fields]


@admin.register(ScoringRun)
class ScoringRunAdmin(ReadOnlyAdmin):
    list_display = ("day", "use_case", "status", "patients", "chunks", "predicted", "skipped", "model_label")
    list_filter = ("use_case", "status")
    readonly_fields = [f.name for f in ScoringRun._meta.fields]
