"""A clinician in a real browser (Debian Chromium): sign in, dashboard, find a patient, review the data the model will
use, complete a value, predict, read the explained result, record the observed outcome, open the model card, sign
out. No page breaks the Content-Security-Policy; the pages fit a phone screen; admin and audit stay out of reach."""

from typing import Any

from playwright.sync_api import ConsoleMessage, Page, expect

from apps.audit.models import AuditEvent
from apps.patients.models import Outcome
from apps.predictions.models import Prediction

from .conftest import PASSWORD, screenshot


def _watch_csp(page: Page) -> list[str]:
    """Chromium reports every CSP violation (inline style, inline script, foreign image) on the console."""
    violations: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            violations.append(message.text)

    page.on("console", seen)
    return violations


def _sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill("clinician")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Signed in as")).to_be_visible()


def _images_loaded(page: Page) -> bool:
    return bool(page.evaluate("[...document.images].every(img => img.complete && img.naturalWidth > 0)"))


def test_clinician_goes_from_patient_to_explained_risk_and_records_the_outcome(
        live_server: Any, live_patients: dict[str, Any], live_champion: Any, page: Page) -> None:
    violations = _watch_csp(page)
    _sign_in(page, live_server.url)

    # Dashboard: the live model with its card, this clinician's predictions, patients with new data.
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("link", name=f"Model card of {live_champion.label}")).to_be_visible()
    expect(page.get_by_test_id("new-data")).to_contain_text("pt-0002")
    expect(page.get_by_role("heading", name="Your recent predictions")).to_be_visible()
    screenshot(page, "dashboard")

    # Patient list and search.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Patients").click()
    page.get_by_label("Patient identifier").fill("pt-000")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="Patients whose identifier starts with “pt-000” (2)")).to_be_visible()
    screenshot(page, "patient-list")
    page.get_by_role("link", name="pt-0001").click()

    # Patient page: values with units, dates and sources; stale and missing flagged; history chart.
    expect(page.get_by_test_id("patient-identifier")).to_have_text("pt-0001")
    values = page.get_by_test_id("values-diabetes")
    expect(values).to_contain_text("147.73 mg/dL (recorded 8.2 mmol/L)")
    expect(values).to_contain_text("FHIR Observation/glu-1")
    expect(values).to_contain_text("200 days old")
    expect(values.locator(".flag-missing")).to_have_count(3)
    expect(page.locator("svg.chart-history.chart-wide circle")).to_have_count(2)

    # Review: the assembled values as recorded; complete the skin fold in cm; submit from the keyboard.
    page.get_by_role("link", name="Predict for this patient").click()
    glucose = page.get_by_label("Plasma glucose, 2 h after 75 g oral glucose", exact=True)
    expect(glucose).to_have_value("8.2")
    expect(page.get_by_label("Unit of plasma glucose, 2 h after 75 g oral glucose")).to_have_value("mmol/L")
    expect(page.locator("#id_glucose_source")).to_contain_text("FHIR Observation/glu-1")
    expect(page.locator("#id_blood_pressure_source")).to_contain_text("Older than 90 days")
    skin = page.get_by_label("Triceps skinfold thickness", exact=True)
    skin.focus()
    page.keyboard.type("2.9")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Unit of triceps skinfold thickness")).to_be_focused()
    page.get_by_label("Unit of triceps skinfold thickness").select_option("cm")
    screenshot(page, "review")
    skin.press("Enter")

    # Result: probability, band against the threshold, factor chart, callouts, version linked to its card.
    expect(page.get_by_test_id("probability")).to_be_visible()
    expect(page.get_by_test_id("model-version")).to_have_text(live_champion.label)
    expect(page.locator("svg.chart-factors.chart-wide rect")).to_have_count(8)
    expect(page.get_by_test_id("imputed")).to_contain_text("Serum insulin")
    expect(page.get_by_test_id("intended-use")).to_contain_text("does not diagnose")
    prediction = Prediction.objects.filter(patient_ref="pt-0001").order_by("-audit_seq").first()
    assert prediction is not None
    assert page.get_by_test_id("probability").inner_text() == f"{round(prediction.probability * 100)}%"
    assert prediction.basis == ["Observation/bmi-1", "Observation/bp-1", "Observation/glu-1"]
    assert prediction.features["skin_thickness"] == 29.0 and prediction.channel == "web"
    event = AuditEvent.objects.get(action="prediction.create", object_id=str(prediction.id))
    assert (event.actor_type, event.actor_id, event.patient_ref) == ("user", "clinician", "pt-0001")
    assert event.inputs["basis"] == prediction.basis
    screenshot(page, "result")

    # The observed outcome, recorded later from the result page.
    page.get_by_label("Yes: the condition was confirmed").check()
    page.get_by_label("Date of onset or diagnosis (optional)").fill("2026-01-15")
    page.get_by_role("button", name="Record outcome").click()
    expect(page.get_by_role("status")).to_contain_text("Outcome recorded.")
    expect(page.get_by_test_id("recorded-outcome")).to_contain_text("present, onset 2026-01-15")
    outcome = Outcome.objects.get(source="clinpredict:web")
    assert outcome.present and outcome.source_id == f"diabetes:{prediction.id}"
    assert AuditEvent.objects.get(action="outcome.record").actor_id == "clinician"

    # Model card with its verified ROC and calibration plots.
    page.get_by_role("link", name="model card").click()
    expect(page.get_by_role("heading", name=f"Model card: Diabetes mellitus (Pima cohort) {live_champion.label}"))\
        .to_be_visible()
    expect(page.get_by_role("img", name=f"ROC curve (held-out test set) of {live_champion.label}")).to_be_visible()
    expect(page.get_by_role("img", name=f"Calibration (held-out test set) of {live_champion.label}")).to_be_visible()
    expect(page.get_by_test_id("model-card")).to_contain_text("Intended use")
    page.wait_for_load_state("load")
    assert _images_loaded(page)
    screenshot(page, "model-card")

    # Back on the patient page: the new prediction in the chart, the outcome listed.
    page.goto(f"{live_server.url}/patients/{live_patients['first'].pk}/")
    expect(page.locator("svg.chart-history.chart-wide circle")).to_have_count(3)
    expect(page.get_by_test_id("outcomes")).to_contain_text("clinpredict:web")
    screenshot(page, "patient")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{live_server.url}/patients/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert violations == []


def test_review_error_is_named_next_to_the_field_and_nothing_is_stored(
        live_server: Any, live_patients: dict[str, Any], page: Page) -> None:
    violations = _watch_csp(page)
    _sign_in(page, live_server.url)
    predictions_before = Prediction.objects.count()
    page.goto(f"{live_server.url}/patients/{live_patients['first'].pk}/predict/diabetes/")

    page.get_by_label("Body mass index", exact=True).fill("120")
    page.get_by_role("button", name="Calculate risk").click()

    expect(page.locator("#id_bmi_error")).to_contain_text("Body mass index: must be between 12 and 80 kg/m2")
    expect(page.get_by_label("Body mass index", exact=True)).to_have_value("120")
    expect(page.get_by_label("Body mass index", exact=True)).to_have_attribute("aria-invalid", "true")
    summary = page.get_by_role("alert")
    expect(summary).to_contain_text("nothing was stored")
    summary.get_by_role("link", name="Body mass index").click()
    expect(page.get_by_label("Body mass index", exact=True)).to_be_focused()
    assert Prediction.objects.count() == predictions_before
    assert violations == []


def test_result_and_patient_pages_fit_a_phone_screen(live_server: Any, live_patients: dict[str, Any],
                                                     browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    try:
        _sign_in(phone, live_server.url)
        prediction = Prediction.objects.filter(patient_ref="pt-0001").first()
        for path in (f"/predictions/{prediction.id}/", f"/patients/{live_patients['first'].pk}/", "/"):
            phone.goto(f"{live_server.url}{path}")
            overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than the screen"
        phone.goto(f"{live_server.url}/predictions/{prediction.id}/")
        expect(phone.locator("svg.chart-factors.chart-compact")).to_be_visible()
        expect(phone.locator("svg.chart-factors.chart-wide")).to_be_hidden()
        screenshot(phone, "result-phone")
    finally:
        context.close()


def test_clinician_is_kept_out_of_admin_and_audit(live_server: Any, live_clinician: Any, page: Page) -> None:
    _sign_in(page, live_server.url)

    page.goto(f"{live_server.url}/admin/")
    expect(page).to_have_url(f"{live_server.url}/admin/login/?next=/admin/")
    for path in ("/audit/", "/audit/export.csv", "/registry/history/"):
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.status == 403, path
    page.goto(f"{live_server.url}/")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log")).to_have_count(0)
