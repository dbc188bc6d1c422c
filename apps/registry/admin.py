"""Model registry admin: the evidence of each version, gated promotion with a reason, rollback, the challenger,
and champion history. Thin: every write goes through apps.registry.services; every read through selectors.

Only staff reach /admin/ (a clinician is sent to the admin login); promoting, rolling back and setting the
challenger also need the `registry.promote_modelversion` permission (the Model admins group)."""

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin

from apps.audit.actors import actor_from_request
from apps.core.admin import ReadOnlyModelAdmin
from apps.core.exceptions import ApplicationError

from .artifacts import ModelIntegrityError, read_verified
from .forms import ReasonForm, StatusForm
from .gate import challenger_gate_evaluate, gate_limits, promotion_gate_evaluate
from .models import ModelVersion, ModelVersionStatusChange
from .selectors import (
    model_version_champion,
    model_version_comparison,
    model_version_previous_champion,
    model_version_status_history,
    model_version_was_champion,
    shadow_agreement,
)
from .services import model_version_promote, model_version_set_challenger, model_version_status_set
from .views import champion_history_context

PROMOTE_PERMISSION = "registry.promote_modelversion"

# Artifacts a reviewer may open from the detail page (never the model files themselves), with their media type.
VIEWABLE_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".md": "text/plain; charset=utf-8",
                  ".json": "application/json"}
# The model card is generated HTML from a training run: shown in a sandboxed frame with no scripts, no plugins,
# no forms, and only its own images and inline styles.
CARD_CSP = ("sandbox allow-same-origin; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
            "frame-ancestors 'self'; form-action 'none'; base-uri 'none'")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyModelAdmin):
    list_display = ("label", "status", "model_type", "test_auroc_with_ci", "calibration", "parity", "threshold_",
                    "registered_at", "registered_by_actor")
    list_filter = ("use_case", "status", "model_type")
    search_fields = ("use_case", "onnx_sha256", "mlflow_run_id")
    actions = ["promote_action", "challenger_action"]
    change_form_template = "admin/registry/modelversion/change_form.html"
    change_list_template = "admin/registry/modelversion/change_list.html"
    fieldsets = (
        (None, {"fields": ("label", "use_case", "version", "model_type", "status", "status_changed_at")}),
        ("Evidence", {"fields": ("test_auroc_with_ci", "calibration", "parity", "threshold", "dataset_sha256",
                                 "split_sha256")}),
        ("Provenance", {"fields": ("registered_at", "registered_by", "registered_by_actor", "source",
                                   "storage_path", "onnx_sha256", "joblib_sha256")}),
        ("MLflow", {"fields": ("mlflow_run_id", "mlflow_model_name", "mlflow_model_version", "mlflow_sync_status",
                               "mlflow_sync_detail", "mlflow_synced_at")}),
    )
    readonly_fields = ("label", "test_auroc_with_ci", "calibration", "parity",
                       *[f.name for f in ModelVersion._meta.fields])

    # --- columns ----------------------------------------------------------------------------------------------

    @admin.display(description="test AUROC (95% CI)", ordering="test_auroc")
    def test_auroc_with_ci(self, obj: ModelVersion) -> str:
        if obj.test_auroc is None:
            return "—"
        if obj.test_auroc_ci_low is None or obj.test_auroc_ci_high is None:
            return _fmt(obj.test_auroc)
        return f"{obj.test_auroc:.3f} ({obj.test_auroc_ci_low:.3f}–{obj.test_auroc_ci_high:.3f})"

    @admin.display(description="calibration slope", ordering="calibration_slope")
    def calibration(self, obj: ModelVersion) -> str:
        return _fmt(obj.calibration_slope)

    @admin.display(description="ONNX parity", ordering="onnx_parity_max_abs_diff")
    def parity(self, obj: ModelVersion) -> str:
        ok = obj.onnx_parity_max_abs_diff <= gate_limits()["max_onnx_parity_abs_diff"]
        return f"{'ok' if ok else 'FAILED'} ({obj.onnx_parity_max_abs_diff:.1e})"

    @admin.display(description="threshold", ordering="threshold")
    def threshold_(self, obj: ModelVersion) -> str:
        return _fmt(obj.threshold)

    # --- permissions: versions come from `ml train` output; the admin never edits a row directly ----------------
    # (ReadOnlyModelAdmin); promotion, rollback and the challenger go through the registry services.

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_staff and request.user.has_perm(PROMOTE_PERMISSION))

    def _require_promote(self, request: HttpRequest) -> None:
        if not self.has_promote_permission(request):
            raise PermissionDenied("Only model admins may promote, roll back or change a model version's status.")

    # --- actions: pick one version, then the confirmation page ------------------------------------------------

    def _single(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> ModelVersion | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version.", messages.WARNING)
            return None
        return queryset.get()

    @admin.action(description="Promote to champion…", permissions=["promote"])
    def promote_action(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        version = self._single(request, queryset)
        return redirect("admin:registry_modelversion_promote", version.pk) if version else None

    @admin.action(description="Set as challenger (shadow)…", permissions=["promote"])
    def challenger_action(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        version = self._single(request, queryset)
        return redirect("admin:registry_modelversion_challenger", version.pk) if version else None

    # --- extra pages ------------------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("history/", wrap(self.champion_history_view), name="registry_modelversion_champion_history"),
            path("<int:pk>/promote/", wrap(self.promote_view), name="registry_modelversion_promote"),
            path("<int:pk>/challenger/", wrap(self.challenger_view), name="registry_modelversion_challenger"),
            path("<int:pk>/status/", wrap(self.status_view), name="registry_modelversion_status"),
            # The card is framed by the detail page: same-origin framing only for this view (X_FRAME_OPTIONS=DENY).
            path("<int:pk>/artifact/<path:name>", wrap(xframe_options_sameorigin(never_cache(self.artifact_view))),
                 name="registry_modelversion_artifact"),
            *super().get_urls(),
        ]

    def _context(self, request: HttpRequest, version: ModelVersion | None = None, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.model._meta, "original": version, **extra}

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        version = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if version is not None:
            champion = model_version_champion(use_case=version.use_case)
            extra.update({
                "version": version,
                "champion": champion,
                "comparison": model_version_comparison(version=version, champion=champion),
                "verdict": promotion_gate_evaluate(version=version, live=champion),
                "status_history": model_version_status_history(version=version),
                "shadow": shadow_agreement(version=version),
                "plots": sorted(name for name in version.artifacts if name.startswith("plots/")),
                "has_card": "model_card.html" in version.artifacts,
                "artifacts": sorted(version.artifacts.items()),
                "can_promote": self.has_promote_permission(request),
                "was_champion": model_version_was_champion(version=version),
                "previous_champion": model_version_previous_champion(use_case=version.use_case),
            })
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def _gated_view(self, request: HttpRequest, pk: int, *, kind: str) -> HttpResponse:
        self._require_promote(request)
        version = get_object_or_404(ModelVersion, pk=pk)
        champion = model_version_champion(use_case=version.use_case)
        challenger = kind == "challenger"
        form = ReasonForm(request.POST or None)
        status = 200
        if request.method == "POST":
            if form.is_valid():
                try:
                    service = model_version_set_challenger if challenger else model_version_promote
                    service(version_id=version.pk, actor=actor_from_request(request),
                            reason=form.cleaned_data["reason"])
                except ApplicationError as exc:
                    form.add_error(None, exc.message)
                else:
                    version.refresh_from_db()
                    done = "is now the challenger (shadow)" if challenger else "is now champion"
                    self.message_user(request, f"{version.label} {done} of {version.use_case}.", messages.SUCCESS)
                    return redirect("admin:registry_modelversion_change", version.pk)
            status = 400
        verdict = (challenger_gate_evaluate if challenger else promotion_gate_evaluate)(version=version, live=champion)
        rollback = not challenger and model_version_was_champion(version=version)
        title = ("Set as challenger" if challenger else "Roll back to" if rollback else "Promote to champion")
        return TemplateResponse(request, "admin/registry/modelversion/promote_confirm.html", self._context(
            request, version, title=f"{title}: {version.label}", form=form, verdict=verdict, champion=champion,
            challenger=challenger, rollback=rollback, already=version.status == (
                ModelVersion.Status.CHALLENGER if challenger else ModelVersion.Status.CHAMPION),
            comparison=model_version_comparison(version=version, champion=champion), limits=gate_limits(),
        ), status=status)

    def promote_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self._gated_view(request, pk, kind="promote")

    def challenger_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self._gated_view(request, pk, kind="challenger")

    def status_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        self._require_promote(request)
        version = get_object_or_404(ModelVersion, pk=pk)
        form = StatusForm(request.POST or None)
        status = 200
        if request.method == "POST":
            if form.is_valid():
                try:
                    model_version_status_set(version_id=version.pk, to_status=form.cleaned_data["to_status"],
                                             actor=actor_from_request(request), reason=form.cleaned_data["reason"])
                except ApplicationError as exc:
                    form.add_error(None, exc.message)
                else:
                    version.refresh_from_db()
                    self.message_user(request, f"{version.label} is now {version.status}.", messages.SUCCESS)
                    return redirect("admin:registry_modelversion_change", version.pk)
            status = 400
        return TemplateResponse(request, "admin/registry/modelversion/status_form.html", self._context(
            request, version, title=f"Change status: {version.label}", form=form), status=status)

    def champion_history_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return TemplateResponse(request, "admin/registry/modelversion/history.html", self._context(
            request, title="Champion history", **champion_history_context(request)))

    def artifact_view(self, request: HttpRequest, pk: int, name: str) -> HttpResponseBase:
        """A registered artifact (model card, plots, reports), checked against its sha256 before it is sent."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        version = get_object_or_404(ModelVersion, pk=pk)
        suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if suffix not in VIEWABLE_TYPES or name not in version.artifacts:
            return HttpResponse(f"{version.label} has no viewable artifact '{name}'.", status=404,
                                content_type="text/plain; charset=utf-8")
        try:
            data = read_verified(version, name)
        except ModelIntegrityError as exc:
            return HttpResponse(exc.message, status=exc.status_code, content_type="text/plain; charset=utf-8")
        response = HttpResponse(data, content_type=VIEWABLE_TYPES[suffix])
        response["Content-Security-Policy"] = CARD_CSP
        response["Content-Disposition"] = "inline"
        return response


@admin.register(ModelVersionStatusChange)
class ModelVersionStatusChangeAdmin(ReadOnlyModelAdmin):
    list_display = ("changed_at", "version", "from_status", "to_status", "kind", "actor", "reason", "audit_seq")
    list_filter = ("use_case", "kind", "to_status")
    readonly_fields = [f.name for f in ModelVersionStatusChange._meta.fields]


    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_staff and request.user.has_perm("registry.view_modelversion"))

