import hashlib
import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent
from apps.patients.models import Outcome, Patient
from apps.predictions.models import Prediction
from apps.registry.services import model_version_register

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


# --- Result page: charts under the CSP, callouts, outcome ----------------------------------------------------------


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(match) for match in re.findall(r"<svg.*?</svg>", page, re.S)]  # noqa: S314 - our page


def test_result_page_draws_factors_as_svg_without_inline_style_or_script(champion: Any,
                                                                          clinician_client: Client) -> None:
    response = clinician_client.post("/predict/diabetes/", FORM, follow=True)

    page = response.content.decode()
    assert "style=" not in page and "<style" not in page and "<script" not in page
    assert "default-src 'self'" in response["Content-Security-Policy"]
    charts = _svgs(page)
    factors = next(svg for svg in charts if "chart-factors" in svg.attrib["class"])
    prediction = Prediction.objects.get()
    bars = [e for e in factors.iter() if e.tag.endswith("rect")]
    assert len(bars) == len(prediction.explanation) == 8
    widths = [float(bar.attrib["width"]) for bar in bars]
    assert widths == sorted(widths, reverse=True)  # largest contribution first
    raising = [bar for bar, item in zip(bars, prediction.explanation, strict=True) if item["contribution"] > 0]
    assert all(bar.attrib["fill"] == "#b00020" for bar in raising)
    assert any("chart-scale" in svg.attrib["class"] for svg in charts)
    assert f'href="/models/diabetes/{champion.version}/"' in page


def test_result_page_calls_out_imputed_and_out_of_training_range_values(champion: Any,
                                                                        clinician_client: Client) -> None:
    trained_max_age = champion.manifest["reference_profile"]["features"]["age"]["max"]
    assert trained_max_age < 95 <= 110  # plausible for the spec, never seen in training

    response = clinician_client.post("/predict/diabetes/", {**FORM, "age": "95"}, follow=True)

    page = response.content.decode()
    callout = page.split('data-testid="out-of-range"')[1].split("</div>")[0]
    assert "Age 95 years is above every value in the training data" in callout
    assert "Serum insulin" in page.split('data-testid="imputed"')[1].split("</p>")[0]
    assert "outside the training data" in page  # on the factor itself


def test_result_shows_the_value_entered_in_another_unit(champion: Any, clinician_client: Client) -> None:
    response = clinician_client.post("/predict/diabetes/", {**FORM, "glucose": "8.2", "glucose__unit": "mmol/L"},
                                     follow=True)

    assert "147.73 mg/dL (entered 8.2 mmol/L)" in response.content.decode()


@pytest.fixture
def ward_patient(db: None) -> Patient:
    return Patient.objects.create(identifier="ward-7", sex="female", source="csv:ward", external_id="ward-7")


def test_clinician_records_the_observed_outcome_of_a_prediction(champion: Any, clinician_client: Client,
                                                               ward_patient: Patient) -> None:
    clinician_client.post("/predict/diabetes/", FORM)
    prediction = Prediction.objects.get()

    response = clinician_client.post(f"/predictions/{prediction.id}/outcome/",
                                     {"present": "yes", "onset_date": "2026-01-15"}, follow=True)

    outcome = Outcome.objects.get()
    assert (outcome.patient, outcome.use_case, outcome.present) == (ward_patient, "diabetes", True)
    assert outcome.onset_at == datetime(2026, 1, 15, tzinfo=UTC)
    assert (outcome.source, outcome.source_id) == ("clinpredict:web", f"diabetes:{prediction.id}")
    event = AuditEvent.objects.get(action="outcome.record")
    assert (event.actor_id, event.inputs["prediction_id"]) == ("clinician", str(prediction.id))
    assert "Recorded: <strong>present</strong>, onset 2026-01-15" in response.content.decode()

    clinician_client.post(f"/predictions/{prediction.id}/outcome/", {"present": "no"})

    outcome = Outcome.objects.get()
    assert outcome.present is False and outcome.onset_at is None


def test_bad_outcome_form_names_the_fields_and_stores_nothing(champion: Any, clinician_client: Client,
                                                              ward_patient: Patient) -> None:
    clinician_client.post("/predict/diabetes/", FORM)
    prediction = Prediction.objects.get()
    events = AuditEvent.objects.count()

    response = clinician_client.post(f"/predictions/{prediction.id}/outcome/", {"onset_date": "2999-01-01"})

    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="id_present_error"' in page and "choose yes or no" in page
    assert 'id="id_onset_date_error"' in page and "2999-01-01 is in the future" in page
    assert 'value="2999-01-01"' in page
    assert Outcome.objects.count() == 0 and AuditEvent.objects.count() == events


def test_outcome_needs_a_known_patient(champion: Any, clinician_client: Client) -> None:
    clinician_client.post("/predict/diabetes/", {**FORM, "patient_id": ""})
    prediction = Prediction.objects.get()

    page = clinician_client.get(f"/predictions/{prediction.id}/").content.decode()
    response = clinician_client.post(f"/predictions/{prediction.id}/outcome/", {"present": "yes"})

    assert "cannot be recorded here" in page and "Record outcome" not in page
    assert response.status_code == 404 and Outcome.objects.count() == 0


def test_auditor_cannot_record_an_outcome(champion: Any, clinician_client: Client, auditor: Any,
                                          ward_patient: Patient) -> None:
    clinician_client.post("/predict/diabetes/", FORM)
    prediction = Prediction.objects.get()
    client = Client()
    client.force_login(auditor)

    assert client.post(f"/predictions/{prediction.id}/outcome/", {"present": "yes"}).status_code == 403
    assert Outcome.objects.count() == 0


# --- Model card ----------------------------------------------------------------------------------------------------


def test_model_card_page_shows_the_registered_card_and_verified_plots(champion: Any, clinician_client: Client,
                                                                      settings: Any) -> None:
    response = clinician_client.get(f"/models/diabetes/{champion.version}/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "does not diagnose" in page and "Live model" in page
    assert "TRIPOD" in page and "<style" not in page and "style=" not in page
    plot_urls = set(re.findall(r'src="(/models/diabetes/\d+/plots/[a-z_]+\.png)"', page))
    assert {f"/models/diabetes/{champion.version}/plots/roc.png",
            f"/models/diabetes/{champion.version}/plots/calibration.png"} <= plot_urls
    assert 'src="plots/' not in page
    plot = clinician_client.get(f"/models/diabetes/{champion.version}/plots/roc.png")
    stored = Path(settings.MODEL_STORAGE_DIR) / champion.storage_path / "plots" / "roc.png"
    assert plot.status_code == 200 and plot["Content-Type"] == "image/png"
    assert plot.content == stored.read_bytes()


def test_altered_plot_or_card_is_never_served(champion: Any, clinician_client: Client, settings: Any) -> None:
    folder = Path(settings.MODEL_STORAGE_DIR) / champion.storage_path
    with (folder / "plots" / "roc.png").open("ab") as handle:
        handle.write(b"tampered")
    (folder / "model_card.html").write_text("<h1>Model card</h1><p>Totally safe, trust me</p>")

    plot = clinician_client.get(f"/models/diabetes/{champion.version}/plots/roc.png")
    page = clinician_client.get(f"/models/diabetes/{champion.version}/").content.decode()

    assert plot.status_code == 503 and b"tampered" not in plot.content
    assert "does not match its registered sha256" in page and "trust me" not in page


def test_model_card_refuses_unregistered_or_odd_plot_names(champion: Any, clinician_client: Client) -> None:
    for name in ("model.onnx", "..%2Fmanifest.json", "nope.png"):
        assert clinician_client.get(f"/models/diabetes/{champion.version}/plots/{name}").status_code == 404
    assert clinician_client.get("/models/diabetes/99/").status_code == 404


def test_dashboard_links_each_live_model_to_its_card(champion: Any, clinician_client: Client) -> None:
    page = clinician_client.get("/").content.decode()

    assert f'href="/models/diabetes/{champion.version}/"' in page


# --- What a clinician cannot reach --------------------------------------------------------------------------------


def test_clinician_cannot_reach_admin_audit_pages_export_or_registry_history(champion: Any,
                                                                             clinician_client: Client) -> None:
    admin = clinician_client.get("/admin/")
    admin_models = clinician_client.get("/admin/registry/modelversion/")

    assert admin.status_code == 302 and admin["Location"].startswith("/admin/login/")
    assert admin_models.status_code == 302 and admin_models["Location"].startswith("/admin/login/")
    assert clinician_client.get("/audit/").status_code == 403
    assert clinician_client.get("/audit/events/1/").status_code == 403
    for export_format in ("csv", "jsonl", "fhir"):
        assert clinician_client.get(f"/audit/export.{export_format}").status_code == 403
    assert clinician_client.get("/registry/history/").status_code == 403
    assert clinician_client.get("/api/v1/audit/events").status_code in (401, 403)
    page = clinician_client.get("/").content.decode()
    assert 'href="/audit/' not in page and 'href="/admin/' not in page


def test_model_card_and_patient_pages_need_sign_in(champion: Any) -> None:
    for url in (f"/models/diabetes/{champion.version}/", f"/models/diabetes/{champion.version}/plots/roc.png",
                "/patients/"):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_altered_model_file_gives_an_unavailable_page_and_stores_nothing(champion: Any, clinician_client: Client,
                                                                         ward_patient: Patient,
                                                                         settings: Any) -> None:
    with (Path(settings.MODEL_STORAGE_DIR) / champion.storage_path / "model.onnx").open("ab") as handle:
        handle.write(b"\0")

    form = clinician_client.get("/predict/diabetes/")
    post = clinician_client.post("/predict/diabetes/", FORM)
    review = clinician_client.get(f"/patients/{ward_patient.pk}/predict/diabetes/")

    for response in (form, post, review):
        assert response.status_code == 503
        assert "does not match its registered sha256" in response.content.decode()
    assert Prediction.objects.count() == 0


def test_forbidden_page_explains_and_leads_back(champion: Any, clinician_client: Client) -> None:
    response = clinician_client.get("/audit/")

    assert response.status_code == 403
    assert "You do not have access to this page" in response.content.decode()


def test_model_card_markup_is_reduced_to_safe_text_tables_and_registered_plots(
        db: None, clinician_client: Client, model_dir_copy: Any) -> None:
    folder = model_dir_copy()
    (folder / "model_card.html").write_text(
        '<html><head><style>body{color:red}</style><script>alert(1)</script></head><body>'
        '<h1 onclick="alert(2)" style="color:red">Card &amp; more</h1><p>Safe <strong class="human">text</strong>'
        '<a href="javascript:alert(3)">link</a></p><img src="plots/roc.png" onerror="alert(4)" alt="ROC">'
        '<img src="https://cdn.example.org/x.png" alt="remote"><img src="plots/../model.onnx" alt="odd">'
        '<iframe src="https://example.org"></iframe><table><tr><td colspan="2" style="x">cell</td></tr></table>'
        '<p>unclosed <em>tags</body></html>', encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"]["model_card.html"]["sha256"] = hashlib.sha256(
        (folder / "model_card.html").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    version = model_version_register(source_dir=folder, actor=Actor(type="system", id="tests")).version

    page = clinician_client.get(f"/models/diabetes/{version.version}/").content.decode()

    card = page.split('data-testid="model-card">')[1].split("</section>")[0]
    assert "<h3>Card &amp; more</h3>" in card and '<strong class="human">text</strong>' in card
    assert "alert" not in card and "style" not in card and "<iframe" not in card and "javascript" not in card
    assert "cdn.example.org" not in card and "model.onnx" not in card
    assert f'<img alt="ROC" src="/models/diabetes/{version.version}/plots/roc.png">' in card
    assert '<td colspan="2">cell</td>' in card and "<em>tags</em></p>" in card
    assert "Not the live model" in page or "not the live model" in page
