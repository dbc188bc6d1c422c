"""FHIR resource mapping and unit normalisation (pure functions)."""

from datetime import UTC, date, datetime
from typing import Any

import pytest

from apps.patients.fhir_mapping import (
    ConditionRecord,
    Rejection,
    map_condition,
    map_observation,
    map_patient,
    parse_fhir_datetime,
    reference_id,
)
from apps.patients.specs import load_ingestion_spec, spec_path_for

SPEC = load_ingestion_spec(spec_path_for("t2d_fhir"))


def _glucose(**quantity: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "g1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-01-01T09:00:00Z",
            "valueQuantity": quantity}


def test_mmol_per_l_glucose_maps_to_mg_per_dl() -> None:
    mapped = map_observation(_glucose(value=7.0, unit="mmol/l", system="http://unitsofmeasure.org",
                                      code="mmol/L"), SPEC)
    (value,) = mapped.values
    assert (value.value, value.unit, value.unit_canonical) == (7.0, "mmol/L", "mg/dL")  # the UCUM code, not text
    assert value.value_canonical == pytest.approx(126.112)


@pytest.mark.parametrize(("quantity", "reason"), [
    ({"value": 7.0}, "unit_missing"),
    ({"value": 7.0, "unit": "g/L"}, "unit_not_convertible"),
    ({"value": 1.0, "unit": "mg/dL"}, "out_of_range"),
    ({"value": "7", "unit": "mg/dL"}, "not_a_number"),
])
def test_values_that_cannot_be_trusted_are_rejected_with_a_reason(quantity: dict[str, Any], reason: str) -> None:
    mapped = map_observation(_glucose(**quantity), SPEC)
    assert mapped.values == []
    assert [r.reason for r in mapped.rejections] == [reason]


def test_withdrawn_observations_are_marked_so_earlier_rows_can_be_removed() -> None:
    resource = {**_glucose(value=100, unit="mg/dL"), "status": "entered-in-error"}
    mapped = map_observation(resource, SPEC)
    assert mapped.withdrawn and mapped.rejections[0].reason == "entered_in_error"


def test_conditions_match_icd10_prefixes_and_snomed_and_refuted_means_absent() -> None:
    def condition(system: str, code: str, verification: str = "confirmed") -> Any:
        return map_condition({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                              "code": {"coding": [{"system": system, "code": code}]}, "onsetDateTime": "2024-01-02",
                              "verificationStatus": {"coding": [{"code": verification}]}}, SPEC)

    icd = condition("http://hl7.org/fhir/sid/icd-10-cm", "E11.65")
    assert isinstance(icd, ConditionRecord) and icd.present and icd.onset_at == datetime(2024, 1, 2, tzinfo=UTC)
    assert isinstance(condition("http://snomed.info/sct", "44054006"), ConditionRecord)
    assert condition("http://hl7.org/fhir/sid/icd-10-cm", "E10.9") is None  # type 1 diabetes: not the outcome
    assert condition("http://hl7.org/fhir/sid/icd-10-cm", "E11.9", "refuted").present is False
    assert isinstance(condition("http://hl7.org/fhir/sid/icd-10-cm", "E11.9", "entered-in-error"), Rejection)


def test_patient_references_dates_and_genders_are_read_as_fhir_writes_them() -> None:
    assert reference_id({"reference": "https://h/fhir/Patient/7/_history/2"}, "Patient") == "7"
    assert reference_id({"reference": "Group/7"}, "Patient") is None
    assert parse_fhir_datetime("2026-03") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_fhir_datetime("2026-03-01T10:00:00+02:00") == datetime(2026, 3, 1, 8, tzinfo=UTC)
    patient = map_patient({"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1980-02-29"})
    assert not isinstance(patient, Rejection)
    assert (patient.sex, patient.birth_date) == ("female", date(1980, 2, 29))
