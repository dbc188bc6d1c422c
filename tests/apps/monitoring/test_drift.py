"""Drift against the champion's reference profile, over predictions made through the real service from Pima rows."""

import io
import math
import re
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.test import Client

from apps.audit.models import AuditEvent
from apps.monitoring.drift import bin_fractions, distribution_drift, psi
from apps.monitoring.models import DriftCheck, RetrainingRun
from apps.monitoring.services import drift_check_run

from .conftest import ACTOR

FEATURES = ["pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi", "pedigree", "age"]


@pytest.fixture(autouse=True)
def _no_retraining_trigger(settings: Any) -> None:
    settings.CLINPREDICT_RETRAIN = {**settings.CLINPREDICT_RETRAIN, "on_drift": False}


def _metric(name: str, **labels: str) -> float | None:
    text = Client().get("/metrics").content.decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_psi_of_identical_distributions_is_zero_and_grows_with_the_shift() -> None:
    reference = [0.25, 0.25, 0.25, 0.25]
    assert psi(reference, reference) == 0.0
    small, large = psi(reference, [0.2, 0.25, 0.25, 0.3]), psi(reference, [0.05, 0.15, 0.3, 0.5])
    assert 0 < small < 0.1 < 0.25 < large
    # bins are (-inf, e0], (e0, e1], (e1, inf): a value equal to an edge falls in the bin that edge closes
    assert list(bin_fractions(np.array([1.0, 2.0, 2.5, 9.0]), [1.0, 2.0])) == [0.25, 0.25, 0.5]


def test_missing_rate_moving_beyond_the_limit_alerts_even_without_a_psi() -> None:
    profile = {"missing_fraction": 0.1, "edges": [1.0], "fractions": [0.5, 0.5], "mean": 1.0}
    values = np.array([math.nan] * 60 + [0.5] * 20 + [1.5] * 20)

    result = distribution_drift("insulin", profile, values, psi_alert=0.25, missing_alert=0.1, min_samples=100)

    assert result.missing_rate == pytest.approx(0.6) and result.missing_alert
    assert result.psi is None and "only 40 present values" in result.note


def test_pima_rows_as_served_raise_no_drift_alert(champion: Any, predict_pima: Any) -> None:
    predict_pima(300)

    check = drift_check_run(use_case="diabetes", actor=ACTOR, trigger="test")

    assert check.status == DriftCheck.Status.OK and check.alert_features == []
    psis = {f.feature: f.psi for f in check.features.all()}
    assert list(psis) == FEATURES
    assert all(value is not None and value < 0.1 for value in psis.values()), psis
    assert check.prediction_psi is not None and not check.prediction_alert


def test_glucose_raised_by_30_percent_alerts_for_glucose_and_for_no_other_feature(champion: Any,
                                                                                  predict_pima: Any) -> None:
    predict_pima(300, shift={"glucose": 1.3})
    out = io.StringIO()

    call_command("check_drift", "--use-case", "diabetes", stdout=out)

    check = DriftCheck.objects.get()
    psis = {f.feature: f.psi for f in check.features.all()}
    print(out.getvalue())  # noqa: T201 - the command's report, shown with -s as evidence
    assert check.status == DriftCheck.Status.DRIFT
    assert check.alert_features == ["glucose"]
    assert psis["glucose"] > 0.25
    assert all(psis[name] <= 0.25 for name in FEATURES if name != "glucose"), psis
    assert "ALERT diabetes: glucose drifted" in out.getvalue()
    assert [line for line in out.getvalue().splitlines() if "ALERT" in line and "glucose" not in line] == []
    # /metrics reports what the alert rule (clinpredict_drift_psi > 0.25) fires on: glucose only
    assert _metric("clinpredict_drift_psi", feature="glucose", use_case="diabetes") == pytest.approx(psis["glucose"])
    assert _metric("clinpredict_drift_psi", feature="bmi", use_case="diabetes") < 0.25
    assert _metric("clinpredict_drift_sufficient_data", use_case="diabetes") == 1.0
    event = AuditEvent.objects.get(action="monitoring.drift_check")
    assert event.output["alert_features"] == ["glucose"] and check.audit_seq == event.seq


def test_too_few_predictions_say_so_instead_of_alarming(champion: Any, predict_pima: Any) -> None:
    predict_pima(40, shift={"glucose": 1.3})
    out = io.StringIO()

    call_command("check_drift", stdout=out)

    check = DriftCheck.objects.get()
    assert check.status == DriftCheck.Status.INSUFFICIENT
    assert "Too little data: 40 predictions" in check.message and "at least 100 are needed" in check.message
    assert check.alert_features == [] and check.features.count() == 0
    assert "ALERT" not in out.getvalue() and "Too little data" in out.getvalue()
    assert _metric("clinpredict_drift_psi", feature="glucose", use_case="diabetes") is None
    assert _metric("clinpredict_drift_samples", use_case="diabetes") == 40.0
    assert _metric("clinpredict_drift_sufficient_data", use_case="diabetes") == 0.0


def test_drift_alert_requests_one_retraining_per_cooldown(champion: Any, predict_pima: Any, settings: Any,
                                                          retrain_settings: Any) -> None:
    settings.CLINPREDICT_RETRAIN = {**settings.CLINPREDICT_RETRAIN, "on_drift": True, "cooldown_days": 7}
    predict_pima(150, shift={"glucose": 1.3})

    first = drift_check_run(use_case="diabetes", actor=ACTOR, trigger="test")
    second = drift_check_run(use_case="diabetes", actor=ACTOR, trigger="test")

    run = RetrainingRun.objects.get()  # the second alert fell within the cooldown
    assert (first.status, second.status) == ("drift", "drift")
    assert run.trigger == "drift" and run.drift_check == first and run.status == "queued"
    assert run.requested_by == "system:monitoring" and "glucose" in run.reason


def test_check_drift_without_a_champion_fails_with_a_clear_message(db: None) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no champion"):
        call_command("check_drift", "--use-case", "diabetes", stdout=io.StringIO())
