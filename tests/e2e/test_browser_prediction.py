"""A clinician in a real browser: sign in, fill the form (with a unit choice), read the risk; bad values are named
on the page, kept, and nothing is stored; sign out."""

from typing import Any

from playwright.sync_api import Page, expect

from apps.audit.models import AuditEvent
from apps.predictions.models import Prediction

from .conftest import PASSWORD, screenshot


def _sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill("clinician")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Signed in as")).to_be_visible()


def _fill_valid(page: Page) -> None:
    page.get_by_label("Patient identifier (optional)").fill("ward-7-bed-3")
    page.get_by_label("Number of pregnancies").fill("2")
    page.get_by_label("Plasma glucose, 2 h after 75 g oral glucose", exact=True).fill("8.2")
    page.get_by_label("Unit of plasma glucose, 2 h after 75 g oral glucose").select_option("mmol/L")
    page.get_by_label("Diastolic blood pressure", exact=True).fill("72")
    page.get_by_label("Body mass index", exact=True).fill("33.6")
    page.get_by_label("Diabetes pedigree function (family history score)").fill("0.627")
    page.get_by_label("Age", exact=True).fill("50")


def test_clinician_gets_an_explained_risk_in_the_browser(live_server: Any, live_champion: Any, live_clinician: Any,
                                                         page: Page) -> None:
    _sign_in(page, live_server.url)
    screenshot(page, "dashboard-no-patients")
    page.get_by_role("link", name="New prediction").click()
    _fill_valid(page)
    page.get_by_role("button", name="Calculate risk").click()

    expect(page.get_by_test_id("probability")).to_be_visible()
    expect(page.get_by_test_id("model-version")).to_have_text(live_champion.label)
    expect(page.get_by_text("What drove this estimate")).to_be_visible()
    expect(page.locator("svg.chart-factors.chart-wide rect")).to_have_count(8)
    screenshot(page, "result-manual")
    prediction = Prediction.objects.get()
    assert page.get_by_test_id("probability").inner_text() == f"{round(prediction.probability * 100)}%"
    assert prediction.features["glucose"] == 8.2 * 18.016
    assert prediction.patient_ref == "ward-7-bed-3"
    event = AuditEvent.objects.get(action="prediction.create")
    assert (event.actor_type, event.actor_id, event.object_id) == ("user", "clinician", str(prediction.id))

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{live_server.url}/predict/diabetes/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_bad_value_is_named_next_to_its_field_and_nothing_is_stored(live_server: Any, live_champion: Any,
                                                                   live_clinician: Any, page: Page) -> None:
    _sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/predict/diabetes/")
    _fill_valid(page)
    page.get_by_label("Body mass index", exact=True).fill("120")
    page.get_by_role("button", name="Calculate risk").click()

    error = page.locator("#id_bmi_error")
    expect(error).to_contain_text("Body mass index: must be between 12 and 80 kg/m2")
    expect(page.get_by_label("Body mass index", exact=True)).to_have_value("120")
    expect(page.get_by_label("Body mass index", exact=True)).to_have_attribute("aria-invalid", "true")
    screenshot(page, "predict-form-error")
    assert Prediction.objects.count() == 0
    assert not AuditEvent.objects.filter(action="prediction.create").exists()
