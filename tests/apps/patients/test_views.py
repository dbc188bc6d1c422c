"""Clinician patient pages: list and search, the patient page (values with provenance and flags, prediction history
chart, outcomes), and "predict for this patient" (review, correct, submit; FHIR references become the basis)."""

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent
from apps.patients.models import Observation, Patient
from apps.patients.services import outcome_record
from apps.patients.specs import FEATURE_SYSTEM, LOINC
from apps.predictions.models import Prediction
from apps.predictions.services import PredictionRequest, prediction_create

FHIR = "https://fhir.example.org/fhir"
CLINICIAN = Actor(type="user", id="clinician")


def _observation(patient: Patient, code: str, value: float, unit: str, canonical: float, *, days_ago: int,
                 source: str = FHIR, source_id: str, system: str = LOINC) -> Observation:
    return Observation.objects.create(
        patient=patient, code_system=system, code=code, value=value, unit=unit, value_canonical=canonical,
        unit_canonical=unit, effective_at=timezone.now() - timedelta(days=days_ago), source=source,
        source_id=source_id, source_resource=source_id.split("#")[0])


@pytest.fixture
def patient(db: None) -> Patient:
    """A FHIR patient with glucose in mmol/L, BMI, a stale blood pressure (panel component), a CSV pregnancy count,
    age from the birth date; skin thickness, insulin and the pedigree score missing."""
    person = Patient.objects.create(identifier="pt-0001", sex="female", birth_date=date(1976, 3, 1), source=FHIR,
                                    external_id="123")
    _observation(person, "20438-8", 8.2, "mmol/L", 8.2 * 18.016, days_ago=10, source_id="Observation/glu-1")
    _observation(person, "39156-5", 33.6, "kg/m2", 33.6, days_ago=10, source_id="Observation/bmi-1")
    _observation(person, "8462-4", 72, "mm[Hg]", 72, days_ago=200, source_id="Observation/bp-1#8462-4")
    _observation(person, "11996-6", 2, "{count}", 2, days_ago=30, source="csv:ward", source_id="abc/row1/pregnancies")
    return person


def _review(client: Client, patient: Patient) -> dict[str, Any]:
    """GET the review page and return the form data a person submits without changing anything."""
    response = client.get(f"/patients/{patient.pk}/predict/diabetes/")
    assert response.status_code == 200
    form = response.context["form"]
    return {name: ("" if value is None else value) for name, value in form.initial.items()}


def test_patient_list_searches_identifier_prefix_and_paginates(clinician_client: Client) -> None:
    Patient.objects.bulk_create([Patient(identifier=f"ward-{i:03d}", source="csv:ward") for i in range(30)]
                                + [Patient(identifier="clinic-001", source="csv:clinic")])

    first = clinician_client.get("/patients/", {"q": "ward"})
    second = clinician_client.get("/patients/", {"q": "ward", "page": 2})

    assert first.status_code == 200
    page = first.content.decode()
    assert len(re.findall(r'href="/patients/\d+/"', page)) == 25 and "clinic-001" not in page
    assert "Page 1 of 2" in page and "q=ward&amp;page=2" in page
    assert len(re.findall(r'href="/patients/\d+/"', second.content.decode())) == 5
    assert "clinic-001" in clinician_client.get("/patients/").content.decode()


def test_patient_search_too_long_is_named_and_kept(clinician_client: Client) -> None:
    response = clinician_client.get("/patients/", {"q": "x" * 70})

    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="id_q_error"' in page and "at most 64 characters" in page and "x" * 70 in page


def test_patient_page_shows_values_with_units_dates_sources_and_flags(champion: Any, clinician_client: Client,
                                                                     patient: Patient) -> None:
    response = clinician_client.get(f"/patients/{patient.pk}/")

    assert response.status_code == 200
    page = response.content.decode()
    glucose_day = (timezone.now() - timedelta(days=10)).strftime("%Y-%m-%d")
    assert "147.73 mg/dL" in page and "(recorded 8.2 mmol/L)" in page and glucose_day in page
    assert "FHIR Observation/glu-1" in page and "CSV import (ward)" in page
    assert "33.6 kg/m²" in page and "72 mmHg" in page
    assert "200 days old" in page and "Older than 90 days:</strong> Diastolic blood pressure" in page
    assert "calculated from the birth date" in page
    values = page.split('data-testid="values-diabetes"')[1].split("</table>")[0]
    assert values.count("flag-missing") == 3  # skin thickness, insulin, pedigree
    assert "Predict for this patient" in page


def test_patient_page_charts_prediction_history_and_lists_outcomes(champion: Any, clinician: Any,
                                                                   clinician_client: Client, patient: Patient,
                                                                   valid_features: dict[str, Any]) -> None:
    by_clinician = Actor(type="user", id="clinician", user_id=clinician.pk)  # their own predictions: listed
    for bmi in (28.0, 41.0):
        prediction_create(request=PredictionRequest("diabetes", {**valid_features, "bmi": bmi}, patient.identifier),
                          actor=by_clinician, channel=Prediction.Channel.WEB)
    outcome_record(patient_id=patient.pk, use_case="diabetes", present=True, actor=CLINICIAN,
                   source="clinpredict:web", source_id="diabetes:x")

    page = clinician_client.get(f"/patients/{patient.pk}/").content.decode()

    svg = re.search(r"<svg[^>]*chart-history.*?</svg>", page, re.S)
    assert svg is not None
    tree = ET.fromstring(svg.group(0))  # noqa: S314 - our own page
    assert not any("style" in element.attrib for element in tree.iter())
    circles = [e for e in tree.iter() if e.tag.endswith("circle")]
    assert len(circles) == 2
    assert [c.attrib["cy"] for c in circles][0] != [c.attrib["cy"] for c in circles][1]
    assert page.count('href="/predictions/') == 2
    outcomes = page.split('data-testid="outcomes"')[1].split("</table>")[0]
    assert "present" in outcomes and "clinpredict:web" in outcomes


def test_review_shows_each_value_as_recorded_with_its_provenance(champion: Any, clinician_client: Client,
                                                                 patient: Patient) -> None:
    response = clinician_client.get(f"/patients/{patient.pk}/predict/diabetes/")

    page = response.content.decode()
    assert re.search(r'name="glucose" id="id_glucose"\s+value="8.2"', page)
    assert '<option value="mmol/L" selected>' in page
    assert "FHIR Observation/glu-1" in page and "Older than 90 days" in page
    assert 'aria-describedby="id_glucose_source id_glucose_help"' in page
    assert page.count("flag-missing") == 3
    assert 'name="patient_id"' not in page


def test_unchanged_fhir_values_become_the_basis_and_the_clinician_the_actor(champion: Any, clinician_client: Client,
                                                                           patient: Patient) -> None:
    data = _review(clinician_client, patient)

    response = clinician_client.post(f"/patients/{patient.pk}/predict/diabetes/", data)

    prediction = Prediction.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/predictions/{prediction.id}/"
    assert prediction.patient_ref == "pt-0001"
    assert prediction.basis == ["Observation/bmi-1", "Observation/bp-1", "Observation/glu-1"]
    assert prediction.features["glucose"] == pytest.approx(8.2 * 18.016)
    assert prediction.imputed == ["skin_thickness", "insulin", "pedigree"]
    event = AuditEvent.objects.get(action="prediction.create")
    assert (event.actor_type, event.actor_id, event.patient_ref) == ("user", "clinician", "pt-0001")
    assert event.inputs["basis"] == prediction.basis


def test_corrected_value_is_used_and_loses_its_fhir_reference(champion: Any, clinician_client: Client,
                                                              patient: Patient) -> None:
    data = _review(clinician_client, patient)

    clinician_client.post(f"/patients/{patient.pk}/predict/diabetes/", {**data, "bmi": "35.2"})

    prediction = Prediction.objects.get()
    assert prediction.features["bmi"] == 35.2
    assert prediction.basis == ["Observation/bp-1", "Observation/glu-1"]


def test_value_kept_but_restated_in_the_canonical_unit_keeps_its_reference(champion: Any, clinician_client: Client,
                                                                          patient: Patient) -> None:
    data = _review(clinician_client, patient)

    clinician_client.post(f"/patients/{patient.pk}/predict/diabetes/",
                          {**data, "glucose": repr(8.2 * 18.016), "glucose__unit": "mg/dL"})

    assert "Observation/glu-1" in Prediction.objects.get().basis


def test_missing_value_completed_in_another_unit_is_converted(champion: Any, clinician_client: Client,
                                                             patient: Patient) -> None:
    data = _review(clinician_client, patient)

    clinician_client.post(f"/patients/{patient.pk}/predict/diabetes/",
                          {**data, "skin_thickness": "2.9", "skin_thickness__unit": "cm"})

    prediction = Prediction.objects.get()
    assert prediction.features["skin_thickness"] == pytest.approx(29.0)
    assert "skin_thickness" not in prediction.imputed


def test_bad_review_value_is_named_kept_and_nothing_is_stored(champion: Any, clinician_client: Client,
                                                              patient: Patient) -> None:
    data = _review(clinician_client, patient)
    events = AuditEvent.objects.count()

    response = clinician_client.post(f"/patients/{patient.pk}/predict/diabetes/", {**data, "bmi": "120"})

    assert response.status_code == 400
    page = response.content.decode()
    error = re.search(r'<p class="error" id="id_bmi_error">(.*?)</p>', page, re.S)
    assert error is not None and "Body mass index" in error.group(1) and "between 12 and 80" in error.group(1)
    assert 'value="120"' in page and 'href="#id_bmi"' in page
    assert "FHIR Observation/bmi-1" in page  # provenance still shown
    assert Prediction.objects.count() == 0 and AuditEvent.objects.count() == events


def test_tampered_review_is_refused_and_nothing_is_stored(champion: Any, clinician_client: Client,
                                                          patient: Patient) -> None:
    data = _review(clinician_client, patient)

    response = clinician_client.post(f"/patients/{patient.pk}/predict/diabetes/",
                                     {**data, "review": data["review"][:-2] + "xx"})

    assert response.status_code == 400
    assert "reload the page" in response.content.decode()
    assert Prediction.objects.count() == 0


def test_review_of_another_patient_is_refused(champion: Any, clinician_client: Client, patient: Patient) -> None:
    other = Patient.objects.create(identifier="pt-0002", source=FHIR, external_id="456")
    data = _review(clinician_client, patient)

    response = clinician_client.post(f"/patients/{other.pk}/predict/diabetes/", data)

    assert response.status_code == 400 and Prediction.objects.count() == 0


def test_patient_pages_need_the_patient_permission_and_predicting_the_clinician_role(
        champion: Any, patient: Patient, auditor: Any) -> None:
    nobody = Client()
    nobody.force_login(get_user_model().objects.create_user(username="nobody", password="a-long-test-password"))
    auditor_client = Client()
    auditor_client.force_login(auditor)

    assert Client().get("/patients/").status_code == 302
    assert nobody.get("/patients/").status_code == 403
    assert nobody.get(f"/patients/{patient.pk}/").status_code == 403
    assert auditor_client.get(f"/patients/{patient.pk}/predict/diabetes/").status_code == 403
    assert auditor_client.post(f"/patients/{patient.pk}/predict/diabetes/", {}).status_code == 403
    assert Prediction.objects.count() == 0


def test_unknown_patient_is_404(champion: Any, clinician_client: Client) -> None:
    assert clinician_client.get("/patients/999999/").status_code == 404
    assert clinician_client.get("/patients/999999/predict/diabetes/").status_code == 404


def test_dashboard_lists_patients_with_observations_newer_than_their_last_prediction(
        champion: Any, clinician: Any, clinician_client: Client, patient: Patient,
        valid_features: dict[str, Any]) -> None:
    quiet = Patient.objects.create(identifier="pt-quiet", source=FHIR, external_id="789")
    by_clinician = Actor(type="user", id="clinician", user_id=clinician.pk)  # their own predictions: listed
    for person in (patient, quiet):
        prediction_create(request=PredictionRequest("diabetes", valid_features, person.identifier),
                          actor=by_clinician, channel=Prediction.Channel.WEB)
    _observation(patient, "39156-5", 34.0, "kg/m2", 34.0, days_ago=0, source_id="Observation/bmi-2")
    _observation(patient, "pedigree", 0.5, "1", 0.5, days_ago=0, source_id="Observation/ped-1", system=FEATURE_SYSTEM)

    page = clinician_client.get("/").content.decode()

    new_data = page.split('data-testid="new-data"')[1].split("</ul>")[0]
    assert "pt-0001" in new_data and "2 new observations" in new_data
    assert "pt-quiet" not in new_data

