"""Realised performance: recorded outcomes joined to the predictions they judge, AUROC / calibration / Brier per
model version with the number of outcomes and events behind them."""

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone
from sklearn.metrics import roc_auc_score

from apps.monitoring.models import PerformanceSnapshot
from apps.monitoring.selectors import outcome_prediction_pairs
from apps.monitoring.services import performance_snapshots_record
from apps.patients.models import Patient
from apps.patients.services import outcome_record
from apps.predictions.models import Prediction
from apps.registry.services import model_version_promote, model_version_register
from ml.evaluation import brier, calibration_slope_intercept

from .conftest import ACTOR


def _patients(identifiers: list[str]) -> dict[str, int]:
    Patient.objects.bulk_create([Patient(identifier=i, source="csv:tests", external_id=i) for i in identifiers])
    return dict(Patient.objects.filter(identifier__in=identifiers).values_list("identifier", "pk"))


def _record_outcomes(predictions: list[Prediction], labels: dict[str, bool], ids: dict[str, int]) -> None:
    for prediction in predictions:
        outcome_record(patient_id=ids[prediction.patient_ref], use_case="diabetes",
                       present=labels[prediction.patient_ref], actor=ACTOR, source="tests",
                       source_id=f"outcome-{prediction.patient_ref}")


def test_realised_auroc_and_calibration_per_model_version_from_recorded_outcomes(
        champion: Any, predict_pima: Callable[..., list[Prediction]], distinct_model_dir: Callable[[], Path],
        pima_rows: list[dict[str, str]]) -> None:
    labels = {row["patient_id"]: row["Outcome"] == "1" for row in pima_rows}
    first = predict_pima(200, seed=1)
    second_version = model_version_register(source_dir=distinct_model_dir(), actor=ACTOR).version
    model_version_promote(version_id=second_version.pk, actor=ACTOR, reason="a second version to compare")
    second = predict_pima(120, seed=2, skip={p.patient_ref for p in first})
    ids = _patients([p.patient_ref for p in first + second])
    _record_outcomes(first + second, labels, ids)

    snapshots = {s.model_label: s for s in performance_snapshots_record(use_case="diabetes", actor=ACTOR,
                                                                        trigger="test")}

    assert set(snapshots) == {"diabetes@1", "diabetes@2"}
    for label, predictions in (("diabetes@1", first), ("diabetes@2", second)):
        y = np.array([labels[p.patient_ref] for p in predictions], dtype=int)
        p = np.array([p.probability for p in predictions])
        snapshot = snapshots[label]
        slope, intercept = calibration_slope_intercept(y, p)
        assert (snapshot.n, snapshot.events) == (len(y), int(y.sum()))
        assert snapshot.auroc == pytest.approx(roc_auc_score(y, p))
        assert snapshot.calibration_slope == pytest.approx(slope)
        assert snapshot.calibration_intercept == pytest.approx(intercept)
        assert snapshot.brier == pytest.approx(brier(y, p))
        assert snapshot.status == PerformanceSnapshot.Status.OK
        print(f"{label}: n={snapshot.n} events={snapshot.events} AUROC={snapshot.auroc:.3f} "  # noqa: T201
              f"slope={snapshot.calibration_slope:.2f} intercept={snapshot.calibration_intercept:.2f} "
              f"Brier={snapshot.brier:.3f}")
    metrics = Client().get("/metrics").content.decode()
    match = re.search(r'^clinpredict_realised_auroc\{model_version="diabetes@1",use_case="diabetes"\} (\S+)$', metrics,
                      re.MULTILINE)
    assert match and float(match.group(1)) == pytest.approx(snapshots["diabetes@1"].auroc)
    assert f'clinpredict_realised_outcomes{{model_version="diabetes@2",use_case="diabetes"}} {len(second)}.0' in metrics


def test_too_few_outcomes_report_counts_without_auroc(champion: Any, predict_pima: Callable[..., list[Prediction]],
                                                      pima_rows: list[dict[str, str]]) -> None:
    labels = {row["patient_id"]: row["Outcome"] == "1" for row in pima_rows}
    predictions = predict_pima(12)
    _record_outcomes(predictions, labels, _patients([p.patient_ref for p in predictions]))

    (snapshot,) = performance_snapshots_record(use_case="diabetes", actor=ACTOR, trigger="test")

    assert snapshot.status == PerformanceSnapshot.Status.INSUFFICIENT
    assert snapshot.n == 12 and snapshot.auroc is None and snapshot.calibration_slope is None
    assert "12 outcomes" in snapshot.message and "at least 50" in snapshot.message


def test_join_rule_pairs_an_outcome_with_the_latest_earlier_prediction_within_the_window(
        champion: Any, predict_pima: Callable[..., list[Prediction]]) -> None:
    old, earlier, latest, after = predict_pima(4)
    patient = "pima-join"
    ids = _patients([patient])
    now = timezone.now()
    for prediction, age in ((old, timedelta(days=400)), (earlier, timedelta(days=20)),
                            (latest, timedelta(days=10)), (after, -timedelta(days=1))):
        Prediction.objects.filter(pk=prediction.pk).update(patient_ref=patient, created_at=now - age)
    outcome_record(patient_id=ids[patient], use_case="diabetes", present=True, actor=ACTOR, source="tests",
                   source_id="onset", onset_at=now - timedelta(days=5))

    pairs = outcome_prediction_pairs(use_case="diabetes")
    short_window = outcome_prediction_pairs(use_case="diabetes", match_window=timedelta(days=3))

    assert [(p.prediction_id, p.present) for p in pairs] == [(latest.pk, True)]  # not the later one, not the older
    assert short_window == []  # the latest earlier prediction is 5 days before the onset: outside a 3-day window


def test_an_outcome_without_onset_is_dated_by_when_it_was_recorded(
        champion: Any, predict_pima: Callable[..., list[Prediction]]) -> None:
    (prediction,) = predict_pima(1)
    ids = _patients([prediction.patient_ref])
    outcome_record(patient_id=ids[prediction.patient_ref], use_case="diabetes", present=False, actor=ACTOR,
                   source="tests", source_id="absent")
    Prediction.objects.filter(pk=prediction.pk).update(created_at=timezone.now() + timedelta(minutes=1))

    assert outcome_prediction_pairs(use_case="diabetes") == []  # the prediction came after the recording
    Prediction.objects.filter(pk=prediction.pk).update(created_at=timezone.now() - timedelta(days=1))
    (pair,) = outcome_prediction_pairs(use_case="diabetes")
    assert pair.prediction_id == prediction.pk and pair.present is False
