"""Browser fixtures: Debian's headless Chromium driven by Playwright against pytest-django's live server."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PASSWORD = "a-long-test-password"  # the password tests/conftest.py gives its users

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between page actions are
# still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def live_champion(transactional_db: None, trained_dir: Path) -> Any:
    """The trained model registered and promoted, committed so the live server thread sees it."""
    from apps.audit.actors import Actor
    from apps.registry.services import model_version_promote, model_version_register

    actor = Actor(type="system", id="tests")
    version = model_version_register(source_dir=trained_dir, actor=actor).version
    return model_version_promote(version_id=version.pk, actor=actor, reason="browser tests")


@pytest.fixture
def live_clinician(transactional_db: None, user_in_group: Any) -> Any:
    return user_in_group("Clinicians", "clinician")


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


FHIR_SOURCE = "https://fhir.example.org/fhir"


@pytest.fixture
def live_patients(transactional_db: None, live_champion: Any, live_clinician: Any) -> dict[str, Any]:
    """Patients for the browser journey, committed so the live server sees them (ORM, as an ingestion would leave
    them): pt-0001 has FHIR glucose (mmol/L), BMI and a stale blood pressure, a CSV pregnancy count, age from the birth
    date and two earlier predictions (glucose and BMI arrived after the last one); pt-0002 got a new observation after
    its last prediction."""
    from datetime import date, timedelta

    from django.utils import timezone

    from apps.audit.actors import Actor
    from apps.patients.models import Observation, Patient
    from apps.predictions.models import Prediction
    from apps.predictions.services import PredictionRequest, prediction_create

    now = timezone.now()

    def observe(patient: Any, code: str, value: float, unit: str, canonical: float, days_ago: int, source_id: str,
                source: str = FHIR_SOURCE) -> None:
        at = now - timedelta(days=days_ago)
        row = Observation.objects.create(patient=patient, code=code, value=value, unit=unit,
                                         value_canonical=canonical, unit_canonical=unit, effective_at=at,
                                         source=source, source_id=source_id, source_resource=source_id.split("#")[0])
        if days_ago:  # as if ingested when measured (the dashboard compares arrival times with predictions)
            Observation.objects.filter(pk=row.pk).update(created_at=at)

    first = Patient.objects.create(identifier="pt-0001", sex="female", birth_date=date(1976, 3, 1),
                                   source=FHIR_SOURCE, external_id="123")
    second = Patient.objects.create(identifier="pt-0002", sex="female", birth_date=date(1990, 7, 9),
                                    source=FHIR_SOURCE, external_id="456")
    observe(first, "20438-8", 8.2, "mmol/L", 8.2 * 18.016, 10, "Observation/glu-1")
    observe(first, "39156-5", 33.6, "kg/m2", 33.6, 10, "Observation/bmi-1")
    observe(first, "8462-4", 72, "mm[Hg]", 72, 200, "Observation/bp-1#8462-4")
    observe(first, "11996-6", 2, "{count}", 2, 30, "abc/row1/pregnancies", source="csv:ward")
    observe(second, "20438-8", 6.1, "mmol/L", 6.1 * 18.016, 40, "Observation/glu-2")

    actor = Actor(type="user", id=live_clinician.get_username(), user_id=live_clinician.pk)
    base = {"pregnancies": 2, "glucose": None, "blood_pressure": 72, "skin_thickness": None, "insulin": None,
            "bmi": 33.6, "pedigree": None, "age": 50}
    for glucose, days_ago in ((110, 60), (128, 20)):
        prediction = prediction_create(request=PredictionRequest("diabetes", {**base, "glucose": glucose}, "pt-0001"),
                                       actor=actor, channel=Prediction.Channel.WEB)
        # Spread the history over time for the chart (the audit row keeps the real time; only the display moves).
        Prediction.objects.filter(pk=prediction.pk).update(created_at=now - timedelta(days=days_ago))
    prediction_create(request=PredictionRequest("diabetes", {**base, "glucose": 6.1 * 18.016, "age": 36}, "pt-0002"),
                      actor=actor, channel=Prediction.Channel.WEB)
    observe(second, "39156-5", 27.4, "kg/m2", 27.4, 0, "Observation/bmi-2")
    return {"first": first, "second": second}
