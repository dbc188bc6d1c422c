"""Clinician patient pages: the patient list with search, the patient page (latest data, prediction history with a
chart, outcomes) and "predict for this patient" (assembled values shown for review, corrected or completed, then
scored). Thin: validate, call one selector or service, render."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.core.charts import RiskPoint, risk_over_time_chart
from apps.core.exceptions import ApplicationError, ServiceUnavailable
from apps.predictions.forms import PatientReviewForm, ReviewedValue
from apps.predictions.selectors import PredictionReader, prediction_list
from apps.predictions.services import PredictionRequest
from apps.predictions.views import live_model, submit_prediction, unavailable_page
from apps.registry.selectors import model_versions_champions
from ml.schema import UseCaseSpec

from .forms import PatientSearchForm
from .models import Patient
from .selectors import (
    AssembledValue,
    care_team_holds,
    outcome_list,
    patient_features_assemble,
    patient_get,
    patient_latest_observations,
    patient_search,
)
from .services import FhirSettings
from .specs import FEATURE_SYSTEM, LOINC

logger = logging.getLogger(__name__)

PAGE_SIZE = 25
HISTORY_LIMIT = 200
# A value older than this is shown, used if kept, but flagged: the clinician should check whether it still holds.
STALE_AFTER = timedelta(days=90)


def _patient_or_404(patient_id: int) -> Patient:
    try:
        return patient_get(patient_id=patient_id)
    except ApplicationError as exc:
        raise Http404(exc.message) from exc


@never_cache
@login_required
@permission_required("patients.view_patient", raise_exception=True)
def patient_list_view(request: HttpRequest) -> HttpResponse:
    form = PatientSearchForm(request.GET or None)
    query = form.cleaned_data["q"] if form.is_bound and form.is_valid() else ""
    page = Paginator(patient_search(query=query), PAGE_SIZE).get_page(request.GET.get("page"))
    status = 400 if form.is_bound and not form.is_valid() else 200
    return render(request, "patients/patient_list.html", {"form": form, "query": query, "page": page},
                  status=status)


# --- Provenance of assembled values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueRow:
    """One feature of a use case for one patient, as the pages show it."""

    name: str
    label: str
    unit: str | None
    required: bool
    item: AssembledValue
    fhir_reference: str  # "Observation/<id>" when the value came from FHIR, else ""
    source_text: str
    stale: bool
    age_days: int | None

    @property
    def converted(self) -> bool:
        return (self.item.original_value is not None and self.item.original_unit not in ("", self.unit)
                and self.item.value is not None)


def _fhir_reference(item: AssembledValue) -> str:
    if item.missing or item.derived_from or item.source.startswith("csv:"):
        return ""
    reference = item.source_id.split("#")[0]
    return reference if reference.startswith("Observation/") else ""


def _source_text(item: AssembledValue, reference: str) -> str:
    if item.derived_from == "birth_date":
        return "calculated from the birth date in the patient record"
    if item.derived_from == "gender":
        return "from the sex in the patient record"
    if reference:
        return f"FHIR {reference}"
    if item.source.startswith("csv:"):
        return f"CSV import ({item.source.removeprefix('csv:')})"
    return item.source or "unknown source"


def value_rows(spec: UseCaseSpec, assembled: dict[str, AssembledValue], now: datetime) -> list[ValueRow]:
    rows = []
    for feature in spec.features:
        item = assembled[feature.name]
        reference = _fhir_reference(item)
        age = (now - item.effective_at) if item.effective_at else None
        rows.append(ValueRow(
            name=feature.name, label=feature.label, unit=feature.unit, required=not feature.allow_missing,
            item=item, fhir_reference=reference, source_text=_source_text(item, reference),
            stale=age is not None and age > STALE_AFTER, age_days=age.days if age is not None else None,
        ))
    return rows


def _observation_labels(specs: list[UseCaseSpec]) -> dict[tuple[str, str], tuple[str, str | None]]:
    labels = {}
    for spec in specs:
        for feature in spec.features:
            key = (LOINC, feature.loinc) if feature.loinc else (FEATURE_SYSTEM, feature.name)
            labels.setdefault(key, (feature.label, feature.unit))
    return labels


# --- Patient page ---------------------------------------------------------------------------------------------------


@never_cache
@login_required
@permission_required("patients.view_patient", raise_exception=True)
def patient_detail(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = _patient_or_404(patient_id)
    now = timezone.now()
    sections = []
    specs = []
    for version in model_versions_champions():
        spec = UseCaseSpec.from_dict(version.manifest["spec"])
        specs.append(spec)
        assembled = patient_features_assemble(patient_id=patient.pk, spec=spec, at=now)
        rows = value_rows(spec, assembled.values, now)
        sections.append({
            "version": version, "spec": spec, "rows": rows,
            "missing_required": [r.label for r in rows if r.required and r.item.missing],
            "stale": [r.label for r in rows if r.stale],
            "lookback_days": round(assembled.lookback.total_seconds() / 86400),
        })
    labels = _observation_labels(specs)
    observations = [
        {"obs": obs, "label": labels.get((obs.code_system, obs.code), (obs.code, obs.unit))[0],
         "stale": now - obs.effective_at > STALE_AFTER}
        for obs in patient_latest_observations(patient_id=patient.pk)
    ]
    # A clinician sees all of a care-team patient's predictions, else only their own (apps/predictions/selectors.py).
    reader = PredictionReader.for_user(request.user)
    predictions = list(prediction_list(reader=reader, patient_ref=patient.identifier)[:HISTORY_LIMIT])
    history_limited = not reader.everything and not care_team_holds(user_id=request.user.pk,
                                                                      patient_ref=patient.identifier)
    charts = []
    for use_case in sorted({p.use_case for p in predictions}):
        mine = [p for p in predictions if p.use_case == use_case]
        title = next((s.title for s in specs if s.use_case == use_case), use_case)
        points = [RiskPoint(p.created_at, p.probability, p.threshold, p.risk_band, p.model_label) for p in mine]
        chart_title = f"{title}: estimated risk over time for {patient.identifier}"
        charts.append({"use_case": use_case, "title": title,
                       "chart": risk_over_time_chart(points, title=chart_title),
                       "chart_compact": risk_over_time_chart(points, title=chart_title, compact=True)})
    return render(request, "patients/patient_detail.html", {
        "patient": patient, "sections": sections, "observations": observations, "predictions": predictions,
        "charts": charts, "outcomes": list(outcome_list(patient_identifier=patient.identifier)),
        "history_limited": history_limited,
        "stale_days": STALE_AFTER.days, "now": now,
    })


# --- Predict for this patient ---------------------------------------------------------------------------------------


@never_cache
@login_required
@permission_required(["predictions.add_prediction", "patients.view_patient"], raise_exception=True)
def patient_predict(request: HttpRequest, patient_id: int, use_case: str) -> HttpResponse:
    patient = _patient_or_404(patient_id)
    try:
        model = live_model(use_case)
    except ServiceUnavailable as exc:
        return unavailable_page(request, exc)
    now = timezone.now()
    assembled = patient_features_assemble(patient_id=patient.pk, spec=model.spec, at=now)
    rows = value_rows(model.spec, assembled.values, now)
    if request.method == "POST":
        form = PatientReviewForm(request.POST, spec=model.spec, patient_id=patient.pk)
    else:
        shown = {r.name: ReviewedValue(r.item.value, r.fhir_reference) for r in rows}
        original = {r.name: (r.item.original_value, r.item.original_unit) for r in rows}
        form = PatientReviewForm(spec=model.spec, patient_id=patient.pk, initial=PatientReviewForm.initial_for(
            spec=model.spec, patient_id=patient.pk, values=shown, original=original))
    if request.method == "POST" and form.is_valid():
        basis = form.basis()  # FHIR references of the values the clinician kept as shown
        done = submit_prediction(request, form, use_case,
                                 lambda features: PredictionRequest(use_case, features, patient.identifier, basis))
        if done is not None:
            return done
    by_name = {r.name: r for r in rows}
    fields = [(value_field, unit_field, by_name[value_field.name]) for value_field, unit_field in form.feature_rows()]
    context: dict[str, Any] = {"patient": patient, "model": model, "form": form, "fields": fields,
                               "stale_days": STALE_AFTER.days,
                               "lookback_days": round(assembled.lookback.total_seconds() / 86400)}
    return render(request, "patients/patient_predict.html", context,
                  status=400 if request.method == "POST" else 200)


@require_GET
def fhir_client_jwks(request: HttpRequest) -> JsonResponse:
    """The public key set of the FHIR sync's client key (SMART Backend Services), for the FHIR server to fetch when
    this URL is registered as the client's JWKS URL. Public by design: it holds public keys only. 404 in the API
    error shape when no FHIR_PRIVATE_KEY is configured."""
    fhir = FhirSettings.from_django()
    try:
        key = fhir.signing_key()
    except ApplicationError as exc:
        logger.warning("FHIR client JWKS not published", extra={"code": exc.code, "error": exc.message})
        return JsonResponse({"error": {"code": "unavailable", "message": "The FHIR client key is misconfigured; "
                                       "see the server log.", "fields": {}}}, status=503)
    if key is None:
        return JsonResponse({"error": {"code": "not_found", "message": "No FHIR client key is configured "
                                       "(FHIR_PRIVATE_KEY_FILE), so there is no key set to publish.", "fields": {}}},
                            status=404)
    return JsonResponse(key.public_jwks())
