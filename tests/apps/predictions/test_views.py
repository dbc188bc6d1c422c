from typing import Any

from django.test import Client

from apps.audit.models import AuditEvent
from apps.predictions.models import Prediction

FORM = {
    "patient_id": "ward-7",
    "pregnancies": "2",
    "glucose": "148",
    "glucose__unit": "mg/dL",
    "blood_pressure": "72",
    "blood_pressure__unit": "mm[Hg]",
    "skin_thickness": "35",
    "skin_thickness__unit": "mm",
    "insulin": "",
    "insulin__unit": "u[IU]/mL",
    "bmi": "33.6",
    "pedigree": "0.627",
    "age": "50",
}


def test_login_page_then_dashboard_lists_live_model(champion: Any, clinician: Any) -> None:
    client = Client()
    assert client.get("/").status_code == 302

    response = client.post("/accounts/login/", {"username": "clinician", "password": "a-long-test-password"},
                           follow=True)

    assert response.status_code == 200
    assert champion.label in response.content.decode()


def test_form_shows_fields_with_units(champion: Any, clinician_client: Client) -> None:
    page = clinician_client.get("/predict/diabetes/").content.decode()

    assert 'name="glucose"' in page and 'name="glucose__unit"' in page
    assert '<option value="mmol/L">mmol/L</option>' in page and "kg/m²" in page and "years" in page
    assert "Plausible range 40–400 mg/dL" in page


def test_clinician_submits_form_and_sees_risk_band_and_version(champion: Any, clinician_client: Client,
                                                               clinician: Any) -> None:
    response = clinician_client.post("/predict/diabetes/", FORM, follow=True)

    assert response.status_code == 200
    prediction = Prediction.objects.get()
    page = response.content.decode()
    assert f"{round(prediction.probability * 100)}%" in page
    assert prediction.get_risk_band_display() in page
    assert champion.label in page
    event = AuditEvent.objects.get(action="prediction.create")
    assert (event.actor_type, event.actor_id) == ("user", "clinician")
    assert prediction.requested_by == clinician and prediction.channel == "web"
    assert prediction.imputed == ["insulin"]


def test_form_converts_mmol_glucose(champion: Any, clinician_client: Client) -> None:
    clinician_client.post("/predict/diabetes/", {**FORM, "glucose": "8.2", "glucose__unit": "mmol/L"})

    assert Prediction.objects.get().features["glucose"] == 8.2 * 18.016


def test_bad_value_is_named_kept_on_page_and_nothing_stored(champion: Any, clinician_client: Client) -> None:
    events_before = AuditEvent.objects.count()

    response = clinician_client.post("/predict/diabetes/", {**FORM, "bmi": "120", "glucose": ""})

    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="id_bmi_error"' in page and "80" in page
    assert 'id="id_glucose_error"' in page
    assert 'value="120"' in page  # the entered value is kept
    assert Prediction.objects.count() == 0
    assert AuditEvent.objects.count() == events_before


def test_user_without_clinician_role_cannot_predict(champion: Any, auditor: Any) -> None:
    client = Client()
    client.force_login(auditor)

    assert client.get("/predict/diabetes/").status_code == 403
    assert client.post("/predict/diabetes/", FORM).status_code == 403
    assert Prediction.objects.count() == 0


def test_result_page_shows_explanation_and_intended_use(champion: Any, clinician_client: Client) -> None:
    response = clinician_client.post("/predict/diabetes/", FORM, follow=True)
    page = response.content.decode()

    assert "What drove this estimate" in page
    assert "Plasma glucose" in page
    assert "does not diagnose" in page
    assert response["Cache-Control"].startswith("max-age=0") or "no-store" in response["Cache-Control"]
