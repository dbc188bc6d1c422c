"""FHIR R4 resources -> the records the patients app stores. Pure functions: no database, no network.

Anything that cannot be stored as valid becomes a `Rejection` with a stable reason code, so a sync can count and
report it; nothing is dropped silently and nothing doubtful is stored as if it were valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from .specs import LOINC, IngestionSpec, Unmappable, to_canonical

UCUM = "http://unitsofmeasure.org"
ACCEPTED_OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected"})
GENDER_TO_SEX = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}


@dataclass(frozen=True)
class Rejection:
    reason: str
    ref: str  # e.g. Observation/<id>#<component code>: no patient values
    message: str


@dataclass(frozen=True)
class PatientRecord:
    external_id: str
    sex: str
    birth_date: date | None
    version: str


@dataclass(frozen=True)
class ObservationValue:
    patient_external_id: str
    code_system: str
    code: str
    value: float
    unit: str
    value_canonical: float
    unit_canonical: str
    effective_at: datetime
    source_id: str
    source_resource: str
    version: str


@dataclass(frozen=True)
class ConditionRecord:
    patient_external_id: str
    present: bool
    onset_at: datetime | None
    code_system: str
    code: str
    source_id: str
    version: str


@dataclass(frozen=True)
class MappedObservation:
    source_resource: str
    values: list[ObservationValue]
    rejections: list[Rejection]
    # True when the resource itself is withdrawn (entered-in-error): rows stored from it earlier must go.
    withdrawn: bool = False


def resource_version(resource: Mapping[str, Any]) -> str:
    meta = resource.get("meta") or {}
    return str(meta.get("lastUpdated") or meta.get("versionId") or "")


def parse_fhir_datetime(text: Any) -> datetime | None:
    """FHIR dateTime/instant/date (YYYY, YYYY-MM, YYYY-MM-DD, with or without time) -> aware UTC datetime."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=UTC)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0, 0), tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_fhir_date(text: Any) -> date | None:
    parsed = parse_fhir_datetime(text)
    return parsed.date() if parsed else None


def reference_id(reference: Any, resource_type: str) -> str | None:
    """'Patient/123', 'https://host/fhir/Patient/123' or 'Patient/123/_history/2' -> '123'."""
    if not isinstance(reference, Mapping):
        return None
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    parts = [p for p in text.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    return None


def map_patient(resource: Mapping[str, Any]) -> PatientRecord | Rejection:
    fhir_id = resource.get("id")
    if not fhir_id:
        return Rejection("no_id", "Patient/?", "a Patient without an id cannot be synced")
    gender = resource.get("gender")
    return PatientRecord(
        external_id=str(fhir_id),
        sex=GENDER_TO_SEX.get(str(gender), "unknown") if gender else "unknown",
        birth_date=parse_fhir_date(resource.get("birthDate")),
        version=resource_version(resource),
    )


def _quantity(element: Mapping[str, Any]) -> tuple[Any, str]:
    """(value, unit as given): the UCUM code when the quantity is coded in UCUM, else its unit text."""
    quantity = element.get("valueQuantity")
    if not isinstance(quantity, Mapping):
        return None, ""
    unit = quantity.get("code") if quantity.get("system") == UCUM and quantity.get("code") else quantity.get("unit")
    return quantity.get("value"), str(unit or "")


def _loinc_codes(concept: Any) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    return [str(c["code"]) for c in concept.get("coding") or () if c.get("system") == LOINC and c.get("code")]


def map_observation(resource: Mapping[str, Any], ispec: IngestionSpec) -> MappedObservation:
    fhir_id = str(resource.get("id") or "?")
    ref = f"Observation/{fhir_id}"
    version = resource_version(resource)
    status = str(resource.get("status") or "")
    if status == "entered-in-error":
        return MappedObservation(ref, [], [Rejection("entered_in_error", ref, "withdrawn by the source")], True)
    if status not in ACCEPTED_OBSERVATION_STATUSES:
        return MappedObservation(ref, [], [Rejection("status_not_final", ref,
                                                     f"status {status or 'missing'!r}; accepted: final, amended, "
                                                     "corrected")])
    patient_id = reference_id(resource.get("subject"), "Patient")
    if patient_id is None:
        return MappedObservation(ref, [], [Rejection("no_subject", ref, "subject is not a Patient reference")])
    effective = (parse_fhir_datetime(resource.get("effectiveDateTime"))
                 or parse_fhir_datetime(resource.get("effectiveInstant"))
                 or parse_fhir_datetime((resource.get("effectivePeriod") or {}).get("start"))
                 or parse_fhir_datetime(resource.get("issued")))
    if effective is None:
        return MappedObservation(ref, [], [Rejection("no_effective_time", ref, "no effective[x] or issued time")])

    by_loinc = {f.loinc: f for f in ispec.spec.features if f.loinc}
    codes = _loinc_codes(resource.get("code"))
    panel = next((c for c in codes if c in ispec.panels), None)
    # (source id, element holding the value, the feature's LOINC code)
    elements: list[tuple[str, Mapping[str, Any], str]] = []
    rejections: list[Rejection] = []
    if panel is not None:
        for component in resource.get("component") or ():
            component_codes = _loinc_codes(component.get("code"))
            code = next((c for c in component_codes if c in by_loinc), None)
            label = component_codes[0] if component_codes else "?"
            if code is None:
                rejections.append(Rejection("unknown_code", f"{ref}#{label}",
                                            f"component LOINC {label} of panel {panel} is not in the spec"))
                continue
            elements.append((f"{ref}#{code}", component, code))
        if not elements and not rejections:
            rejections.append(Rejection("no_value", ref, f"panel {panel} has no components"))
    else:
        code = next((c for c in codes if c in by_loinc), None)
        if code is None:
            shown = ", ".join(codes) or "no LOINC coding"
            return MappedObservation(ref, [], [Rejection("unknown_code", ref, f"LOINC {shown} is not in the spec "
                                                         f"{ispec.use_case}")])
        elements.append((ref, resource, code))

    values: list[ObservationValue] = []
    for source_id, element, code in elements:
        feature = by_loinc[code]
        raw, unit = _quantity(element)
        if raw is None:
            other_value = any(k.startswith("value") and k != "valueQuantity" for k in element)
            reason = "not_a_quantity" if other_value else "no_value"
            rejections.append(Rejection(reason, source_id, f"{feature.name} ({code}): no numeric valueQuantity"))
            continue
        try:
            canonical = to_canonical(feature, raw, unit, unit_required=True)
        except Unmappable as exc:
            rejections.append(Rejection(exc.reason, source_id, f"{exc.message} ({code})"))
            continue
        values.append(ObservationValue(
            patient_external_id=patient_id, code_system=LOINC, code=code, value=float(raw), unit=unit,
            value_canonical=canonical, unit_canonical=feature.unit or "", effective_at=effective,
            source_id=source_id, source_resource=ref, version=version,
        ))
    return MappedObservation(ref, values, rejections)


def map_condition(resource: Mapping[str, Any], ispec: IngestionSpec) -> ConditionRecord | Rejection | None:
    """The outcome recorded by a Condition, a Rejection, or None when the Condition is not an outcome code."""
    fhir_id = str(resource.get("id") or "?")
    ref = f"Condition/{fhir_id}"
    coded = ispec.outcome_code_for(list((resource.get("code") or {}).get("coding") or ()))
    if coded is None:
        return None
    verification = {str(c.get("code")) for c in (resource.get("verificationStatus") or {}).get("coding") or ()}
    if "entered-in-error" in verification:
        return Rejection("entered_in_error", ref, "withdrawn by the source")
    patient_id = reference_id(resource.get("subject"), "Patient")
    if patient_id is None:
        return Rejection("no_subject", ref, "subject is not a Patient reference")
    onset = (parse_fhir_datetime(resource.get("onsetDateTime"))
             or parse_fhir_datetime((resource.get("onsetPeriod") or {}).get("start"))
             or parse_fhir_datetime(resource.get("recordedDate")))
    return ConditionRecord(
        patient_external_id=patient_id,
        present="refuted" not in verification,
        onset_at=onset,
        code_system=coded[0],
        code=coded[1],
        source_id=ref,
        version=resource_version(resource),
    )
