"""Patients admin: read-only views of what was ingested, and the CSV upload page (model admins and staff with the
`patients.import_patients` permission). Every write goes through apps.patients.services."""

import tempfile
from pathlib import Path
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from apps.audit.actors import actor_from_request
from apps.core.admin import ReadOnlyModelAdmin
from apps.core.exceptions import ApplicationError

from .forms import CsvImportForm
from .models import CareTeamMember, IngestionRun, Observation, Outcome, Patient
from .services import care_team_member_add, care_team_member_remove, patients_import_csv, sync_report

IMPORT_PERMISSION = "patients.import_patients"


@admin.register(CareTeamMember)
class CareTeamMemberAdmin(admin.ModelAdmin):
    """Care teams: who sees a patient's predictions without break-the-glass. Adding, changing and removing members go
    through the audited services; the patient and user of an existing member are fixed (remove and add instead)."""

    list_display = ("patient", "user", "role", "since", "added_by", "created_at")
    list_filter = ("role",)
    search_fields = ("patient__identifier", "user__username")
    list_select_related = ("patient", "user")
    autocomplete_fields = ("patient", "user")
    fields = ("patient", "user", "role", "since")

    def get_readonly_fields(self, request: HttpRequest, obj: CareTeamMember | None = None) -> tuple[str, ...]:
        return ("patient", "user") if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: CareTeamMember, form: Any, change: bool) -> None:
        member, _changed = care_team_member_add(patient_id=obj.patient_id, user_id=obj.user_id, role=obj.role,
                                                since=obj.since, actor=actor_from_request(request))
        obj.pk = member.pk

    def delete_model(self, request: HttpRequest, obj: CareTeamMember) -> None:
        care_team_member_remove(member_id=obj.pk, actor=actor_from_request(request))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for member_id in queryset.values_list("pk", flat=True):
            care_team_member_remove(member_id=member_id, actor=actor_from_request(request))




@admin.register(Patient)
class PatientAdmin(ReadOnlyModelAdmin):
    list_display = ("identifier", "sex", "birth_date", "source", "updated_at")
    list_filter = ("sex", "source")
    search_fields = ("identifier",)


@admin.register(Observation)
class ObservationAdmin(ReadOnlyModelAdmin):
    list_display = ("patient", "code", "value", "unit", "value_canonical", "unit_canonical", "effective_at",
                    "source_id")
    list_filter = ("code", "source")
    search_fields = ("patient__identifier", "source_id")
    list_select_related = ("patient",)


@admin.register(Outcome)
class OutcomeAdmin(ReadOnlyModelAdmin):
    list_display = ("patient", "use_case", "present", "onset_at", "code", "source_id")
    list_filter = ("use_case", "present", "source")
    search_fields = ("patient__identifier",)
    list_select_related = ("patient",)


@admin.register(IngestionRun)
class IngestionRunAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "kind", "use_case", "status", "started_at", "finished_at", "source", "file_name")
    list_filter = ("kind", "status", "use_case")
    readonly_fields = ("report_text", *[f.name for f in IngestionRun._meta.fields])
    change_list_template = "admin/patients/ingestionrun/change_list.html"

    @admin.display(description="report")
    def report_text(self, obj: IngestionRun) -> str:
        return sync_report(obj)

    def get_urls(self) -> list[URLPattern]:
        custom = [path("import-csv/", self.admin_site.admin_view(self.import_csv_view),
                       name="patients_ingestionrun_import_csv")]
        return custom + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_import": request.user.has_perm(IMPORT_PERMISSION)}
        return super().changelist_view(request, extra_context)

    def import_csv_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(IMPORT_PERMISSION):
            raise PermissionDenied("Importing patient data needs the patients.import_patients permission.")
        result = None
        error = ""
        form = CsvImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["csv_file"]
            with tempfile.TemporaryDirectory(prefix="clinpredict-upload-") as tmp:
                target = Path(tmp) / "upload.csv"
                with target.open("wb") as handle:
                    for chunk in upload.chunks():
                        handle.write(chunk)
                try:
                    result = patients_import_csv(spec=form.cleaned_data["spec"], csv_path=target,
                                                 actor=actor_from_request(request),
                                                 source_name=form.cleaned_data["source"],
                                                 effective_at=form.cleaned_data["effective_at"],
                                                 file_name=Path(upload.name).name)
                except ApplicationError as exc:
                    error = exc.message
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Import patients (CSV)",
                   "form": form, "result": result, "error": error}
        status = 400 if (result is not None and not result.ok) or error else 200
        return TemplateResponse(request, "admin/patients/import_csv.html", context, status=status)
