"""Reads of patient data. The main one is feature assembly: for a patient and a use case, the latest value of each
feature within a look-back window, in canonical units, with its provenance, and missing values made explicit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.core.exceptions import ApplicationError
from ml.schema import FeatureSpec, SpecError, UseCaseSpec

from .fhir_mapping import Rejection, map_observation, map_patient
from .models import CareTeamMember, IngestionRun, Observation, Outcome, Patient
from .specs import IngestionSpec, Unmappable, load_ingestion_spec, spec_path_for, to_canonical

DEFAULT_LOOKBACK = timedelta(days=365)


@dataclass(frozen=True)
class AssembledValue:
    name: str
    value: float | None  # canonical unit; None = missing
    unit: str | None  # the canonical unit
    reason: str = ""  # why it is missing (empty when present)
    derived_from: str = ""  # "birth_date" / "gender" for features computed from the patient record
    observation_id: int | None = None
    effective_at: datetime | None = None
    source: str = ""
    source_id: str = ""
    original_value: float | None = None
    original_unit: str = ""

    @property
    def missing(self) -> bool:
        return self.value is None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["missing"] = self.missing
        out["effective_at"] = self.effective_at.isoformat() if self.effective_at else None
        return out


@dataclass(frozen=True)
class AssembledFeatures:
    patient_id: int | None  # None when assembled from FHIR resources that are not stored
    patient_identifier: str
    use_case: str
    at: datetime
    lookback: timedelta
    values: dict[str, AssembledValue]  # in spec order

    @property
    def missing(self) -> list[str]:
        return [name for name, v in self.values.items() if v.missing]

    def features(self) -> dict[str, float | None]:
        return prediction_features(self)

    @property
    def basis(self) -> list[str]:
        """FHIR references of the Observations behind the present values (RiskAssessment.basis); CSV rows have none."""
        return sorted({v.source_id.split("#")[0] for v in self.values.values()
                       if not v.missing and v.source_id.startswith("Observation/")})


def prediction_features(assembled: AssembledFeatures) -> dict[str, float | None]:
    """The `features` mapping `apps.predictions.services.PredictionRequest` accepts: every spec feature, a bare
    number in the canonical unit or None (unknown)."""
    return {name: v.value for name, v in assembled.values.items()}


def resolve_spec(spec: IngestionSpec | UseCaseSpec | str | Path) -> IngestionSpec:
    """An IngestionSpec from a use-case name, a spec path, an IngestionSpec, or a UseCaseSpec (e.g. the champion
    model's own spec: its features are used, the FHIR mapping comes from the spec file of the same use case)."""
    if isinstance(spec, IngestionSpec):
        return spec
    try:
        if isinstance(spec, UseCaseSpec):
            try:
                base = load_ingestion_spec(spec_path_for(spec.use_case))
            except SpecError:
                return IngestionSpec(spec=spec, path=Path(), derived={}, panels={}, outcome_codes=())
            derived = {k: v for k, v in base.derived.items() if k in spec.feature_names}
            return dataclasses.replace(base, spec=spec, derived=derived)
        path = Path(spec)
        return load_ingestion_spec(path if path.suffix in (".yaml", ".yml") else spec_path_for(str(spec)))
    except SpecError as exc:
        raise ApplicationError(str(exc), code="unknown_spec", fields={"spec": [str(exc)]}) from exc


def completed_years(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _derived_value(ispec: IngestionSpec, feature: FeatureSpec, patient: Patient, at: datetime
                   ) -> AssembledValue | None:
    derived = ispec.derived.get(feature.name)
    if derived is None:
        return None
    if derived.source == "birth_date":
        if patient.birth_date is None:
            return None  # fall back to an observation of the feature's code, if any
        age = float(completed_years(patient.birth_date, at.date()))
        value: float | None = age
        reason = ""
        try:
            to_canonical(feature, age, None, unit_required=False)
        except Unmappable as exc:
            value, reason = None, f"age from birth date: {exc.message}"
        return AssembledValue(feature.name, value, feature.unit, reason, derived_from="birth_date",
                              source=patient.source)
    mapped = derived.mapping.get(patient.sex)
    if mapped is None:
        accepted = ", ".join(derived.mapping) or "none"
        return AssembledValue(feature.name, None, feature.unit,
                              f"sex is {patient.sex!r} in the patient record; mapped: {accepted}",
                              derived_from="gender", source=patient.source)
    return AssembledValue(feature.name, mapped, feature.unit, derived_from="gender", source=patient.source)


def _assemble(ispec: IngestionSpec, patient: Patient, latest: dict[tuple[str, str], Observation], at: datetime,
              lookback: timedelta) -> AssembledFeatures:
    values: dict[str, AssembledValue] = {}
    days = lookback.total_seconds() / 86400
    for feature in ispec.spec.features:
        derived = _derived_value(ispec, feature, patient, at)
        if derived is not None:
            values[feature.name] = derived
            continue
        system, code = ispec.feature_code(feature)
        obs = latest.get((system, code))
        if obs is None:
            why = "birth date unknown and no " if feature.name in ispec.derived else "no "
            values[feature.name] = AssembledValue(
                feature.name, None, feature.unit,
                f"{why}{feature.name} ({code}) observation in the {days:g} days up to {at:%Y-%m-%d %H:%M} UTC")
            continue
        values[feature.name] = AssembledValue(
            feature.name, obs.value_canonical, feature.unit, observation_id=obs.pk, effective_at=obs.effective_at,
            source=obs.source, source_id=obs.source_id, original_value=obs.value, original_unit=obs.unit)
    return AssembledFeatures(patient.pk, patient.identifier, ispec.use_case, at, lookback, values)


def _latest_observations(ispec: IngestionSpec, patient_ids: Iterable[int], at: datetime, lookback: timedelta
                         ) -> dict[int, dict[tuple[str, str], Observation]]:
    codes = [ispec.feature_code(f) for f in ispec.spec.features]
    code_filter = Q()
    for system, code in codes:
        code_filter |= Q(code_system=system, code=code)
    rows = (Observation.objects
            .filter(code_filter, patient_id__in=list(patient_ids), effective_at__lte=at,
                    effective_at__gt=at - lookback)
            .order_by("patient_id", "code_system", "code", "-effective_at", "-id"))
    latest: dict[int, dict[tuple[str, str], Observation]] = {}
    for obs in rows.iterator(chunk_size=2000):
        latest.setdefault(obs.patient_id, {}).setdefault((obs.code_system, obs.code), obs)
    return latest


def patient_features_assemble(
    *,
    patient_id: int,
    spec: IngestionSpec | UseCaseSpec | str | Path,
    at: datetime | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> AssembledFeatures:
    """Per spec feature: the latest observation (canonical unit) with effective time in (at - lookback, at], or the
    value derived from the patient record (age at `at`, sex), with provenance; missing values say why."""
    ispec = resolve_spec(spec)
    at = at or timezone.now()
    if timezone.is_naive(at):
        raise ApplicationError("the assessment time must be timezone-aware", code="naive_datetime",
                               fields={"at": ["give a timezone, e.g. 2026-06-01T00:00:00+00:00"]})
    patient = Patient.objects.filter(pk=patient_id).first()
    if patient is None:
        raise ApplicationError(f"no patient with id {patient_id}", code="not_found", status_code=404,
                               fields={"patient_id": [f"unknown patient {patient_id}"]})
    latest = _latest_observations(ispec, [patient.pk], at, lookback).get(patient.pk, {})
    return _assemble(ispec, patient, latest, at, lookback)


def patients_features_assemble(
    *,
    spec: IngestionSpec | UseCaseSpec | str | Path,
    at: datetime,
    lookback: timedelta = DEFAULT_LOOKBACK,
    patient_ids: Iterable[int] | None = None,
    batch_size: int = 500,
) -> Iterator[AssembledFeatures]:
    """The same assembly for many patients (ordered by identifier), a constant number of queries per batch."""
    ispec = resolve_spec(spec)
    patients = Patient.objects.order_by("identifier")
    if patient_ids is not None:
        patients = patients.filter(pk__in=list(patient_ids))
    batch: list[Patient] = []
    for patient in patients.iterator(chunk_size=batch_size):
        batch.append(patient)
        if len(batch) >= batch_size:
            yield from _assemble_batch(ispec, batch, at, lookback)
            batch = []
    if batch:
        yield from _assemble_batch(ispec, batch, at, lookback)


def _assemble_batch(ispec: IngestionSpec, patients: list[Patient], at: datetime, lookback: timedelta
                    ) -> Iterator[AssembledFeatures]:
    latest = _latest_observations(ispec, [p.pk for p in patients], at, lookback)
    for patient in patients:
        yield _assemble(ispec, patient, latest.get(patient.pk, {}), at, lookback)


def patient_by_identifier(*, identifier: str) -> Patient | None:
    return Patient.objects.filter(identifier=identifier).first()


def outcome_present_patient_ids(*, use_case: str, at: datetime) -> set[int]:
    """Patients with the use case's condition recorded as present, with onset (or recording) at or before `at`
    (an outcome of unknown onset counts). Absence of a record is read as absence of the condition."""
    rows = Outcome.objects.filter(use_case=use_case, present=True).filter(Q(onset_at__isnull=True)
                                                                         | Q(onset_at__lte=at))
    return set(rows.values_list("patient_id", flat=True))


def ingestion_last_success(*, kind: str, source: str, use_case: str) -> IngestionRun | None:
    return (IngestionRun.objects
            .filter(kind=kind, source=source, use_case=use_case, status=IngestionRun.Status.SUCCEEDED)
            .order_by("-started_at").first())


def source_totals(*, source: str) -> dict[str, int]:
    """What is stored from one source: patients, Observation resources (a panel counts once), observation values,
    outcome rows."""
    observations = Observation.objects.filter(source=source)
    return {
        "Patient": Patient.objects.filter(source=source).count(),
        "Observation": observations.values("source_resource").distinct().count(),
        "observation_values": observations.count(),
        "Outcome": Outcome.objects.filter(source=source).count(),
    }


@dataclass(frozen=True)
class FhirAssembly:
    features: AssembledFeatures
    rejections: list[Rejection]  # resources or values that could not be used, with reason codes

    @property
    def basis(self) -> list[str]:
        return self.features.basis


def fhir_resources_features_assemble(
    *,
    spec: IngestionSpec | UseCaseSpec | str | Path,
    patient: Mapping[str, Any] | None,
    observations: Iterable[Mapping[str, Any]],
    at: datetime,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> FhirAssembly:
    """The same assembly as `patient_features_assemble`, from FHIR resources handed over by a caller (CDS Hooks
    prefetch, or a fetch from the caller's FHIR server) instead of the database: the sync's own mapping (panels,
    units, plausible ranges) and derivations (age, sex), nothing stored."""
    ispec = resolve_spec(spec)
    rejections: list[Rejection] = []
    record = map_patient(patient) if patient else None
    if isinstance(record, Rejection):
        rejections.append(record)
        record = None
    person = Patient(identifier=record.external_id if record else "", source="fhir",
                     sex=record.sex if record else "unknown", birth_date=record.birth_date if record else None)
    latest: dict[tuple[str, str], Observation] = {}
    for resource in observations:
        mapped = map_observation(resource, ispec)
        rejections.extend(mapped.rejections)
        for value in mapped.values:
            if not at - lookback < value.effective_at <= at:
                continue
            key = (value.code_system, value.code)
            if key not in latest or value.effective_at > latest[key].effective_at:
                latest[key] = Observation(code_system=value.code_system, code=value.code, value=value.value,
                                          unit=value.unit, value_canonical=value.value_canonical,
                                          effective_at=value.effective_at, source="fhir", source_id=value.source_id)
    return FhirAssembly(_assemble(ispec, person, latest, at, lookback), rejections)


def patient_list(*, identifier: str | None = None, source: str | None = None) -> QuerySet[Patient]:
    queryset = Patient.objects.all()
    if identifier:
        queryset = queryset.filter(identifier__istartswith=identifier)
    if source:
        queryset = queryset.filter(source=source)
    return queryset.order_by("identifier")


def patient_observations(*, patient: Patient, code: str | None = None, since: datetime | None = None
                         ) -> QuerySet[Observation]:
    queryset = Observation.objects.filter(patient=patient)
    if code:
        queryset = queryset.filter(code=code)
    if since:
        queryset = queryset.filter(effective_at__gte=since)
    return queryset.order_by("-effective_at", "-id")


def outcome_list(*, patient_identifier: str | None = None, use_case: str | None = None) -> QuerySet[Outcome]:
    queryset = Outcome.objects.select_related("patient")
    if patient_identifier:
        queryset = queryset.filter(patient__identifier=patient_identifier)
    if use_case:
        queryset = queryset.filter(use_case=use_case)
    return queryset.order_by("-created_at", "-id")


# --- Clinician pages (apps/patients/views.py, the dashboard) ---------------------------------------------------------


def patient_get(*, patient_id: int) -> Patient:
    patient = Patient.objects.filter(pk=patient_id).first()
    if patient is None:
        raise ApplicationError(f"No patient with id {patient_id}.", code="not_found", status_code=404,
                               fields={"patient_id": ["unknown patient"]})
    return patient


def patient_search(*, query: str = "") -> QuerySet[Patient]:
    """`patient_list` by identifier prefix (the stored pseudonym), with each patient's number of observations and
    the time of the latest one, for the clinicians' patient list."""
    from django.db.models import Count, Max

    return patient_list(identifier=query.strip() or None).annotate(
        observation_count=Count("observations"), last_observed_at=Max("observations__effective_at"))


def patient_latest_observations(*, patient_id: int) -> list[Observation]:
    """The latest observation of each code (code system + code) for one patient, newest first."""
    latest: dict[tuple[str, str], Observation] = {}
    rows = (Observation.objects.filter(patient_id=patient_id)
            .order_by("code_system", "code", "-effective_at", "-id"))
    for obs in rows.iterator(chunk_size=500):
        latest.setdefault((obs.code_system, obs.code), obs)
    return sorted(latest.values(), key=lambda o: o.effective_at, reverse=True)


def patients_with_new_observations(*, predictions: QuerySet[Any], limit: int = 10) -> list[Patient]:
    """Patients with observations stored after their latest prediction: `predictions` is a queryset of rows with
    `patient_ref` (matched to the patient identifier) and `created_at`, e.g. the prediction selector's list. Each
    patient carries `last_predicted_at`, `new_data_at` (newest arrival) and `new_observation_count`."""
    from django.db.models import Count, F, IntegerField, OuterRef, Subquery
    from django.db.models.functions import Coalesce

    last = (predictions.order_by().filter(patient_ref=OuterRef("identifier"))
            .order_by("-created_at").values("created_at")[:1])
    newest = Observation.objects.filter(patient=OuterRef("pk")).order_by("-created_at").values("created_at")[:1]
    new_count = (Observation.objects.filter(patient=OuterRef("pk"), created_at__gt=OuterRef("last_predicted_at"))
                 .order_by().values("patient").annotate(n=Count("id")).values("n"))
    return list(
        Patient.objects.annotate(last_predicted_at=Subquery(last), new_data_at=Subquery(newest))
        .filter(last_predicted_at__isnull=False, new_data_at__gt=F("last_predicted_at"))
        .annotate(new_observation_count=Coalesce(Subquery(new_count, output_field=IntegerField()), 0))
        .order_by("-new_data_at", "identifier")[:limit]
    )


def outcome_by_source(*, source: str, source_id: str) -> Outcome | None:
    """The outcome recorded under one (source, source_id), e.g. ("clinpredict:web", "<use case>:<prediction id>")."""
    return Outcome.objects.filter(source=source, source_id=source_id).first()


# --- Care teams ------------------------------------------------------------------------------------------------


def care_team_patient_identifiers(*, user_id: int) -> QuerySet[Any]:
    """The identifiers of the patients whose care team holds this user, as a subquery for other apps' filters."""
    return CareTeamMember.objects.filter(user_id=user_id).values("patient__identifier")


def care_team_holds(*, user_id: int, patient_ref: str) -> bool:
    return bool(patient_ref) and CareTeamMember.objects.filter(user_id=user_id,
                                                               patient__identifier=patient_ref).exists()


def care_team_of(*, patient_id: int) -> list[CareTeamMember]:
    return list(CareTeamMember.objects.filter(patient_id=patient_id).select_related("user").order_by("since"))
