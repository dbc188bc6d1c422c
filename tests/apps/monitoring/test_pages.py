"""The monitoring pages (model admins) with server-side SVG charts, and the admin button that requests a retraining."""

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.monitoring.models import RetrainingRun
from apps.monitoring.services import drift_check_run

from .conftest import ACTOR


@pytest.fixture
def checked(champion: Any, predict_pima: Callable[..., list[Any]], settings: Any) -> Any:
    settings.CLINPREDICT_RETRAIN = {**settings.CLINPREDICT_RETRAIN, "on_drift": False}
    predict_pima(150, shift={"glucose": 1.3})
    drift_check_run(use_case="diabetes", actor=ACTOR, trigger="test")
    return drift_check_run(use_case="diabetes", actor=ACTOR, trigger="test")


def test_model_admin_sees_drift_with_charts_and_tables(checked: Any, model_admin_client: Client) -> None:
    overview = model_admin_client.get("/monitoring/")
    page = model_admin_client.get("/monitoring/diabetes/")

    assert overview.status_code == 200 and "Drift in glucose over 150 predictions" in overview.content.decode()
    html = page.content.decode()
    assert page.status_code == 200
    with_psi = [f.feature for f in checked.features.all() if f.psi is not None]
    assert "insulin" not in with_psi  # about half missing: fewer than 100 present values, reported as such
    assert html.count("<svg") == 1 + 1 + len(with_psi) + 1  # PSI bars, predicted risk, each feature, history
    assert "present values in the window; at least 100 are needed for a PSI" in html
    assert 'aria-labelledby="chart' in html and "PSI per feature, diabetes@1" in html
    assert not re.search(r"<[^>]+\sstyle=", html) and "<style" not in html and "<script" not in html  # CSP
    assert re.search(r"<td>glucose <span class=\"flag flag-missing\">alert</span></td>\s*<td>\d+\.\d{3}</td>", html)
    older = model_admin_client.get(f"/monitoring/diabetes/?check={checked.pk - 1}")
    assert older.status_code == 200


def test_only_model_admins_reach_the_monitoring_pages(checked: Any, clinician_client: Client,
                                                      model_admin_client: Client) -> None:
    assert Client().get("/monitoring/").status_code == 302
    assert clinician_client.get("/monitoring/").status_code == 403
    assert clinician_client.get("/monitoring/diabetes/").status_code == 403
    assert model_admin_client.get("/monitoring/no-such-use-case/").status_code == 404


def test_admin_button_requests_one_retraining_per_form(champion: Any, model_admin_client: Client,
                                                       retrain_settings: Any) -> None:
    form = model_admin_client.get("/admin/monitoring/retrainingrun/request/")
    key = re.search(r'name="request_key" value="([0-9a-f]+)"', form.content.decode()).group(1)
    listing = model_admin_client.get("/admin/monitoring/retrainingrun/")
    assert "Request retraining" in listing.content.decode()

    data = {"use_case": "diabetes", "reason": "new lab method since March", "request_key": key}
    first = model_admin_client.post("/admin/monitoring/retrainingrun/request/", data)
    second = model_admin_client.post("/admin/monitoring/retrainingrun/request/", data, follow=True)

    assert first.status_code == 302
    run = RetrainingRun.objects.get()
    assert (run.trigger, run.reason, run.requested_by) == ("admin", "new lab method since March", "user:modeladmin")
    assert "no second one was started" in second.content.decode()
    missing_reason = model_admin_client.post("/admin/monitoring/retrainingrun/request/",
                                             {"use_case": "diabetes", "reason": "", "request_key": "x"})
    assert missing_reason.status_code == 400 and RetrainingRun.objects.count() == 1


def test_staff_without_the_permission_cannot_request_a_retraining(champion: Any, user_in_group: Any) -> None:
    client = Client()
    client.force_login(user_in_group("Auditors", "auditor-staff", staff=True))

    assert client.get("/admin/monitoring/retrainingrun/request/").status_code == 403
