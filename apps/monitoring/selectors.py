"""Monitoring reads: the predictions of a drift window, outcomes paired with the predictions they judge, realised
performance figures, the patients due for daily scoring, and what the monitoring pages and /metrics show.

Other apps' data is read through their selectors (`prediction_list`, `outcome_list`, `patient_list`), narrowed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Max, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from apps.patients.selectors import outcome_list, patient_list
from apps.predictions.selectors import EVERYONE, prediction_list
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_versions_champions

from .models import DailySummary, DriftCheck, PerformanceSnapshot, RetrainingRun, ScoringRun

# --- drift ----------------------------------------------------------------------------------------------------------


def drift_window_values(*, version: ModelVersion, start: datetime, end: datetime
                        ) -> tuple[list[dict[str, float | None]], list[float]]:
    """The canonical features and predicted risks of the predictions `version` made in [start, end)."""
    rows = (prediction_list(reader=EVERYONE, use_case=version.use_case, created_after=start, created_before=end)
            .filter(model_version_id=version.pk).order_by().values_list("features", "probability"))
    features: list[dict[str, float | None]] = []
    probabilities: list[float] = []
    for feature_values, probability in rows.iterator(chunk_size=2000):
        features.append(feature_values)
        probabilities.append(probability)
    return features, probabilities


def drift_check_latest(*, use_case: str) -> DriftCheck | None:
    return (DriftCheck.objects.filter(use_case=use_case).select_related("model_version")
            .prefetch_related("features").order_by("-created_at", "-id").first())


def drift_check_get(*, check_id: int) -> DriftCheck | None:
    return (DriftCheck.objects.filter(pk=check_id).select_related("model_version").prefetch_related("features")
            .first())


def drift_checks_recent(*, use_case: str, limit: int = 30) -> list[DriftCheck]:
    """The latest checks of a use case, oldest first, with their features (for the history chart and table)."""
    rows = (DriftCheck.objects.filter(use_case=use_case).prefetch_related("features")
            .order_by("-created_at", "-id")[:limit])
    return list(reversed(list(rows)))


def drift_check_covering(*, version_id: int, start: datetime, end: datetime) -> DriftCheck | None:
    """The newest check of a version whose window overlaps [start, end)."""
    return (DriftCheck.objects.filter(model_version_id=version_id, window_start__lt=end, window_end__gt=start)
            .prefetch_related("features").order_by("-created_at", "-id").first())


# --- realised performance -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomePair:
    prediction_id: Any
    model_version_id: int
    model_label: str
    predicted_at: datetime
    probability: float
    present: bool


def outcome_prediction_pairs(*, use_case: str, match_window: timedelta | None = None,
                             predicted_from: datetime | None = None, predicted_until: datetime | None = None
                             ) -> list[OutcomePair]:
    """Recorded outcomes joined to the predictions they judge.

    The join rule: an outcome of use case U for patient P is paired with the latest prediction of U whose
    `patient_ref` is P's identifier, made at or before the outcome's reference time (its onset when known, otherwise
    when the outcome was recorded) and at most `match_window` (default CLINPREDICT_PERFORMANCE match_window_days)
    before it. Outcomes with no such prediction are left out. A prediction judged by several outcomes counts once,
    as an event if any of them records the condition as present. Optionally only predictions made in
    [predicted_from, predicted_until)."""
    window = match_window or timedelta(days=settings.CLINPREDICT_PERFORMANCE["match_window_days"])
    outcomes = outcome_list(use_case=use_case).order_by().annotate(
        reference_at=Coalesce("onset_at", "created_at"),
    ).annotate(
        earliest=ExpressionWrapper(F("reference_at") - Value(window), output_field=DateTimeField()),
    )
    latest = (prediction_list(reader=EVERYONE, use_case=use_case).order_by()
              .filter(patient_ref=OuterRef("patient__identifier"), created_at__lte=OuterRef("reference_at"),
                      created_at__gte=OuterRef("earliest"))
              .order_by("-created_at", "-id").values("pk")[:1])
    matched = (outcomes.annotate(prediction_id=Subquery(latest)).filter(prediction_id__isnull=False)
               .values_list("prediction_id", "present"))
    present_by_prediction: dict[Any, bool] = {}
    for prediction_id, present in matched.iterator(chunk_size=2000):
        present_by_prediction[prediction_id] = present_by_prediction.get(prediction_id, False) or bool(present)
    predictions = prediction_list(reader=EVERYONE, use_case=use_case, created_after=predicted_from,
                                  created_before=predicted_until)
    pairs = []
    ids = list(present_by_prediction)
    for start in range(0, len(ids), 5000):
        rows = (predictions.filter(pk__in=ids[start:start + 5000]).order_by()
                .values_list("pk", "model_version_id", "model_label", "created_at", "probability"))
        for pk, version_id, label, created_at, probability in rows:
            pairs.append(OutcomePair(pk, version_id, label, created_at, probability, present_by_prediction[pk]))
    pairs.sort(key=lambda pair: (pair.predicted_at, str(pair.prediction_id)))
    return pairs


@dataclass(frozen=True)
class PerformanceFigures:
    n: int
    events: int
    auroc: float | None
    calibration_slope: float | None
    calibration_intercept: float | None
    brier: float | None
    mean_predicted: float | None
    observed_rate: float | None
    status: str
    message: str
    degraded: list[str] = field(default_factory=list)


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def performance_figures(pairs: Iterable[OutcomePair]) -> PerformanceFigures:
    """AUROC, calibration slope and intercept and Brier score (ml.evaluation) of paired predictions, with the
    number of pairs and events behind them; AUROC and calibration only from min_outcomes pairs with both classes."""
    from ml.evaluation import auroc, brier, calibration_slope_intercept  # scikit-learn: loaded when needed

    limits = settings.CLINPREDICT_PERFORMANCE
    chosen = list(pairs)
    y = np.asarray([1 if p.present else 0 for p in chosen], dtype=int)
    p = np.asarray([p.probability for p in chosen], dtype=np.float64)
    n, events = int(y.size), int(y.sum())
    if n == 0:
        return PerformanceFigures(0, 0, None, None, None, None, None, None, PerformanceSnapshot.Status.INSUFFICIENT,
                                  "no prediction of this version has a recorded outcome yet")
    mean_predicted, observed, brier_score = float(p.mean()), float(y.mean()), _finite(brier(y, p))
    if n < limits["min_outcomes"] or events in (0, n):
        why = (f"{n} outcomes ({events} with the condition); AUROC and calibration need at least "
               f"{limits['min_outcomes']} with both outcomes present")
        return PerformanceFigures(n, events, None, None, None, brier_score, mean_predicted, observed,
                                  PerformanceSnapshot.Status.INSUFFICIENT, why)
    slope, intercept = calibration_slope_intercept(y, p)
    figures = {"auroc": _finite(auroc(y, p)), "slope": _finite(slope), "intercept": _finite(intercept)}
    degraded = []
    if figures["auroc"] is not None and figures["auroc"] < limits["auroc_alert"]:
        degraded.append(f"AUROC {figures['auroc']:.3f} < {limits['auroc_alert']}")
    if figures["slope"] is not None and not (
            limits["calibration_slope_min"] <= figures["slope"] <= limits["calibration_slope_max"]):
        degraded.append(f"calibration slope {figures['slope']:.2f} outside "
                        f"{limits['calibration_slope_min']}-{limits['calibration_slope_max']}")
    status = PerformanceSnapshot.Status.DEGRADED if degraded else PerformanceSnapshot.Status.OK
    message = "; ".join(degraded) or f"{n} outcomes ({events} with the condition)"
    return PerformanceFigures(n, events, figures["auroc"], figures["slope"], figures["intercept"], brier_score,
                              mean_predicted, observed, status, message, degraded)


def performance_by_version(pairs: Iterable[OutcomePair]) -> dict[int, tuple[str, list[OutcomePair]]]:
    grouped: dict[int, tuple[str, list[OutcomePair]]] = {}
    for pair in pairs:
        grouped.setdefault(pair.model_version_id, (pair.model_label, []))[1].append(pair)
    return grouped


def performance_snapshots_latest(*, use_case: str | None = None, limit: int = 20) -> list[PerformanceSnapshot]:
    """The newest snapshot of each model version (most recent versions first)."""
    rows = PerformanceSnapshot.objects.all()
    if use_case:
        rows = rows.filter(use_case=use_case)
    latest_ids = (rows.values("model_version_id").annotate(last=Max("id")).order_by("-model_version_id")
                  .values_list("last", flat=True)[:limit])
    return list(PerformanceSnapshot.objects.filter(pk__in=list(latest_ids)).order_by("use_case", "-model_version_id"))


def performance_snapshots_recent(*, use_case: str, limit: int = 30) -> list[PerformanceSnapshot]:
    return list(PerformanceSnapshot.objects.filter(use_case=use_case).order_by("-created_at", "-id")[:limit])


# --- daily scoring --------------------------------------------------------------------------------------------------


def patients_due_for_scoring(*, use_case: str) -> list[int]:
    """Ids of the patients with observations stored after their latest prediction of `use_case` (or with
    observations and no prediction of it yet), in id order."""
    last = (prediction_list(reader=EVERYONE, use_case=use_case).order_by()
            .filter(patient_ref=OuterRef("identifier")).order_by("-created_at").values("created_at")[:1])
    due = (patient_list().order_by()
           .annotate(new_data_at=Max("observations__created_at"), last_predicted_at=Subquery(last))
           .filter(new_data_at__isnull=False)
           .filter(Q(last_predicted_at__isnull=True) | Q(new_data_at__gt=F("last_predicted_at"))))
    return list(due.order_by("pk").values_list("pk", flat=True))


def scoring_run_for_day(*, use_case: str, day: Any) -> ScoringRun | None:
    return ScoringRun.objects.filter(use_case=use_case, day=day).first()


def scoring_runs_recent(*, use_case: str | None = None, limit: int = 10) -> QuerySet[ScoringRun]:
    rows = ScoringRun.objects.all()
    if use_case:
        rows = rows.filter(use_case=use_case)
    return rows.order_by("-created_at")[:limit]


# --- retraining -----------------------------------------------------------------------------------------------------


def retraining_runs_recent(*, use_case: str | None = None, limit: int = 10) -> QuerySet[RetrainingRun]:
    rows = RetrainingRun.objects.select_related("candidate")
    if use_case:
        rows = rows.filter(use_case=use_case)
    return rows.order_by("-created_at")[:limit]


def retraining_run_get(*, run_id: Any) -> RetrainingRun | None:
    return RetrainingRun.objects.select_related("candidate").filter(pk=run_id).first()


def retraining_status_counts() -> dict[tuple[str, str], int]:
    rows = RetrainingRun.objects.order_by().values("use_case", "status").annotate(n=Count("pk"))
    return {(row["use_case"], row["status"]): row["n"] for row in rows}


def retraining_last_success() -> dict[str, datetime]:
    """When each use case last had a candidate registered by retraining."""
    rows = (RetrainingRun.objects.filter(status=RetrainingRun.Status.SUCCEEDED, finished_at__isnull=False)
            .order_by().values("use_case").annotate(last=Max("finished_at")))
    return {row["use_case"]: row["last"] for row in rows}


# --- pages ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UseCaseOverview:
    use_case: str
    champion: ModelVersion
    drift: DriftCheck | None
    performance: list[PerformanceSnapshot]
    retraining: list[RetrainingRun]
    scoring: ScoringRun | None


def monitoring_overview() -> list[UseCaseOverview]:
    overview = []
    for champion in model_versions_champions():
        use_case = champion.use_case
        overview.append(UseCaseOverview(
            use_case=use_case,
            champion=champion,
            drift=drift_check_latest(use_case=use_case),
            performance=performance_snapshots_latest(use_case=use_case, limit=5),
            retraining=list(retraining_runs_recent(use_case=use_case, limit=3)),
            scoring=scoring_runs_recent(use_case=use_case, limit=1).first(),
        ))
    return overview


def daily_summaries_recent(*, use_case: str, limit: int = 30) -> list[DailySummary]:
    return list(DailySummary.objects.filter(use_case=use_case).order_by("-day", "model_label")[:limit])


def monitored_use_cases() -> list[str]:
    """Use cases that have a champion (what the nightly tasks look at)."""
    return [version.use_case for version in model_versions_champions()]
