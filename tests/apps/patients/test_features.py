"""Feature assembly: latest value per feature in a look-back window, canonical units, provenance, explicit gaps."""

from datetime import UTC, date, datetime, timedelta

import pytest

from apps.core.exceptions import ApplicationError
from apps.patients.models import Observation, Patient
from apps.patients.selectors import patient_features_assemble, prediction_features
from ml.schema import UseCaseSpec
from ml.validation import validate_record

pytestmark = pytest.mark.django_db

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _obs(patient: Patient, code: str, value: float, unit: str, canonical: float, when: datetime, n: int) -> Observation:
    return Observation.objects.create(
        patient=patient, code=code, value=value, unit=unit, value_canonical=canonical, unit_canonical=unit,
        effective_at=when, source="test", source_id=f"Observation/{n}", source_resource=f"Observation/{n}")


@pytest.fixture
def patient() -> Patient:
    return Patient.objects.create(identifier="fhir-abc", sex="female", birth_date=date(1970, 6, 2), source="test",
                                  external_id="abc")


def test_latest_observation_within_the_window_wins(patient: Patient) -> None:
    old = _obs(patient, "4548-4", 6.0, "%", 6.0, AT - timedelta(days=200), 1)
    newest = _obs(patient, "4548-4", 7.1, "%", 7.1, AT - timedelta(days=10), 2)
    _obs(patient, "4548-4", 9.9, "%", 9.9, AT + timedelta(days=1), 3)  # after the assessment time

    assembled = patient_features_assemble(patient_id=patient.pk, spec="t2d_fhir", at=AT)

    hba1c = assembled.values["hba1c"]
    assert (hba1c.value, hba1c.observation_id, hba1c.effective_at) == (7.1, newest.pk, newest.effective_at)
    assert hba1c.source_id == "Observation/2" and hba1c.original_unit == "%"
    assert old.pk != hba1c.observation_id


def test_observations_older_than_the_look_back_are_missing_with_a_reason(patient: Patient) -> None:
    _obs(patient, "39156-5", 31.0, "kg/m2", 31.0, AT - timedelta(days=400), 1)

    default = patient_features_assemble(patient_id=patient.pk, spec="t2d_fhir", at=AT)
    longer = patient_features_assemble(patient_id=patient.pk, spec="t2d_fhir", at=AT, lookback=timedelta(days=500))

    assert default.values["bmi"].missing
    assert "no bmi (39156-5) observation in the 365 days up to 2026-06-01" in default.values["bmi"].reason
    assert longer.values["bmi"].value == 31.0


def test_age_and_sex_are_derived_from_the_patient_record_at_the_assessment_time(patient: Patient) -> None:
    assembled = patient_features_assemble(patient_id=patient.pk, spec="t2d_fhir", at=AT)
    day_later = patient_features_assemble(patient_id=patient.pk, spec="t2d_fhir", at=AT + timedelta(days=1))

    assert assembled.values["age"].value == 55.0  # the 56th birthday is on 2 June
    assert day_later.values["age"].value == 56.0
    assert assembled.values["age"].derived_from == "birth_date"
    assert assembled.values["sex"].value == 0.0 and assembled.values["sex"].derived_from == "gender"


def test_unknown_sex_is_missing_with_a_reason(patient: Patient) -> None:
    patient.sex = "unknown"
    patient.save(update_fields=["sex"])

    sex = patient_features_assemble(patient_id=patient.pk, spec="t2d_fhir", at=AT).values["sex"]

    assert sex.missing and "sex is 'unknown'" in sex.reason


def test_prediction_features_has_every_spec_feature_and_validates_as_a_request(patient: Patient) -> None:
    _obs(patient, "2345-7", 7.9, "mmol/L", 142.3264, AT - timedelta(days=3), 1)
    spec = UseCaseSpec.load("ml/specs/t2d_fhir.yaml")

    features = prediction_features(patient_features_assemble(patient_id=patient.pk, spec=spec, at=AT))

    assert list(features) == list(spec.feature_names)
    assert features["glucose"] == pytest.approx(142.3264) and features["hba1c"] is None
    result = validate_record(spec, features)
    assert result.ok, result.errors
    assert "hba1c" in result.missing


def test_an_unknown_patient_or_a_naive_time_is_an_application_error(patient: Patient) -> None:
    with pytest.raises(ApplicationError, match="no patient with id"):
        patient_features_assemble(patient_id=patient.pk + 1000, spec="t2d_fhir", at=AT)
    with pytest.raises(ApplicationError, match="timezone-aware"):
        patient_features_assemble(patient_id=patient.pk, spec="t2d_fhir", at=datetime(2026, 6, 1))  # noqa: DTZ001
