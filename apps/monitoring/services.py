"""Monitoring writes: drift checks, realised-performance snapshots, daily summaries (and their MLflow record),
retraining requests and runs, daily scoring runs and their chunks. Each writes its audit event in the transaction of
the change it records. Tasks and commands call these; Celery tasks are enqueued only after the commit.

Retraining never promotes: it ends with a registered candidate that a person may promote through the gate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Avg, Count, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from apps.audit.actors import Actor
from apps.audit.services import audit_event_record
from apps.core.exceptions import ApplicationError
from apps.predictions.models import Prediction
from apps.predictions.selectors import EVERYONE, prediction_list
from apps.predictions.services import PredictionRequest, prediction_create_many
from apps.registry.loader import champion_model
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_version_champion
from apps.registry.services import model_version_register

from . import drift as drift_math
from .models import (
    DailySummary,
    DriftCheck,
    FeatureDrift,
    PerformanceSnapshot,
    RetrainingRun,
    ScoringChunk,
    ScoringRun,
    Trigger,
)
from .selectors import (
    drift_check_covering,
    drift_window_values,
    outcome_prediction_pairs,
    patients_due_for_scoring,
    performance_by_version,
    performance_figures,
)

logger = logging.getLogger(__name__)

RETRAIN_ACTOR = Actor(type="system", id="monitoring.retrain")
SCORING_ACTOR = Actor(type="system", id="monitoring.score_daily")
MONITORING_ACTOR = Actor(type="system", id="monitoring")
# Enqueueing fails fast when the broker is down: two quick retries, then the caller records the failure.
ENQUEUE_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.2}


def _aware(moment: datetime | None, name: str) -> datetime:
    if moment is None:
        return timezone.now()
    if timezone.is_naive(moment):
        raise ApplicationError(f"{name} must carry a timezone.", code="naive_datetime",
                               fields={name: ["give a timezone, e.g. 2026-06-01T00:00:00+00:00"]})
    return moment


def _champion_or_error(use_case: str) -> ModelVersion:
    version = model_version_champion(use_case=use_case)
    if version is None:
        raise ApplicationError(f"Use case '{use_case}' has no champion model, so there is nothing to monitor.",
                               code="no_champion", fields={"use_case": [f"'{use_case}' has no champion."]})
    return version


def enqueue(task: Any, *args: Any) -> str | None:
    """Send a task to the broker. Returns None when sent, else the error (already logged). Only broker errors are
    caught: in eager mode (no broker) the task runs here and its own errors propagate."""
    try:
        task.apply_async(args=list(args), retry=True, retry_policy=ENQUEUE_RETRY_POLICY)
    except (BrokerError, ConnectionError, OSError) as exc:
        logger.error("could not enqueue a task: the broker is unavailable",
                     extra={"task": task.name, "error_type": type(exc).__name__, "error": str(exc)[:300]})
        return f"could not enqueue {task.name}: {type(exc).__name__}: {str(exc)[:300]}"
    return None


# ====================================================================================================================
# Drift
# ====================================================================================================================


@transaction.atomic
def drift_check_run(*, use_case: str, actor: Actor, trigger: str, window_end: datetime | None = None,
                    window_days: int | None = None) -> DriftCheck:
    """Compare the champion's predictions of the last `window_days` with the reference profile of its manifest: PSI
    and missing rate per feature, PSI of the predicted risk. Too few predictions give a check that says so and
    raises no alert. A feature alert may request a retraining (CLINPREDICT_RETRAIN on_drift, cooldown)."""
    limits = settings.CLINPREDICT_DRIFT
    version = _champion_or_error(use_case)
    end = _aware(window_end, "window_end")
    days = window_days or limits["window_days"]
    start = end - timedelta(days=days)
    features, probabilities = drift_window_values(version=version, start=start, end=end)
    n = len(features)
    profile = version.manifest.get("reference_profile") or {}
    feature_order = list(version.manifest.get("feature_order") or [])
    thresholds = {"psi_alert": limits["psi_alert"], "missing_alert": limits["missing_alert"],
                  "min_samples": limits["min_samples"]}

    results: list[drift_math.DistributionDrift] = []
    prediction: drift_math.DistributionDrift | None = None
    if not profile:
        status = DriftCheck.Status.NO_REFERENCE
        message = f"{version.label} has no reference profile in its manifest (trained before profiles existed)."
    elif n < limits["min_samples"]:
        status = DriftCheck.Status.INSUFFICIENT
        message = (f"Too little data: {n} predictions by {version.label} in the {days} days up to "
                   f"{end:%Y-%m-%d %H:%M} UTC; at least {limits['min_samples']} are needed. No alert is raised.")
    else:
        for name in feature_order:
            values = drift_math.as_values([row.get(name) for row in features])
            results.append(drift_math.distribution_drift(name, profile.get("features", {}).get(name), values,
                                                         **thresholds))
        prediction = drift_math.distribution_drift("prediction", profile.get("prediction"),
                                                   np.asarray(probabilities, dtype=np.float64), **thresholds)
        alerts = [r.name for r in results if r.alert or r.missing_alert]
        status = DriftCheck.Status.DRIFT if alerts else DriftCheck.Status.OK
        message = (f"Drift in {', '.join(alerts)} over {n} predictions." if alerts
                   else f"No feature drifted over {n} predictions.")
        if prediction.alert:
            message += f" The predicted-risk distribution moved too (PSI {prediction.psi:.2f})."
    check = DriftCheck.objects.create(
        use_case=use_case, model_version=version, model_label=version.label, created_at=timezone.now(),
        window_start=start, window_end=end, status=status, message=message, n_predictions=n,
        psi_alert=limits["psi_alert"], missing_alert=limits["missing_alert"], min_samples=limits["min_samples"],
        alert_features=[r.name for r in results if r.alert or r.missing_alert],
        prediction_psi=prediction.psi if prediction else None,
        prediction_alert=bool(prediction and prediction.alert),
        prediction_edges=prediction.edges if prediction else [],
        prediction_reference=prediction.reference if prediction else [],
        prediction_current=prediction.current if prediction else [],
        prediction_mean=prediction.mean if prediction else (float(np.mean(probabilities)) if n else None),
        prediction_reference_mean=(profile.get("prediction") or {}).get("mean"),
        trigger=trigger,
    )
    FeatureDrift.objects.bulk_create([
        FeatureDrift(drift_check=check, position=i, feature=r.name, psi=r.psi, alert=r.alert, n_present=r.n_present,
                     missing_rate=r.missing_rate, reference_missing_rate=r.reference_missing_rate,
                     missing_alert=r.missing_alert, edges=r.edges, reference=r.reference, current=r.current,
                     mean=r.mean, reference_mean=r.reference_mean, note=r.note[:300])
        for i, r in enumerate(results)
    ])
    event = audit_event_record(
        actor=actor, action="monitoring.drift_check", object_type="drift_check", object_id=str(check.pk),
        model_version=version.label, model_sha256=version.onnx_sha256,
        inputs={"window_start": start.isoformat(), "window_end": end.isoformat(), **thresholds, "trigger": trigger},
        output={"status": status, "n_predictions": n, "alert_features": check.alert_features,
                "psi": {r.name: r.psi for r in results}, "prediction_psi": check.prediction_psi},
    )
    check.audit_seq = event.seq
    check.save(update_fields=["audit_seq"])
    if status == DriftCheck.Status.DRIFT and settings.CLINPREDICT_RETRAIN["on_drift"]:
        _retraining_trigger(use_case=use_case, trigger=Trigger.DRIFT, request_key=f"drift:{check.pk}",
                            reason=check.message, drift_check=check)
    return check


def drift_checks_run(*, actor: Actor, trigger: str, use_cases: list[str]) -> list[DriftCheck]:
    return [drift_check_run(use_case=use_case, actor=actor, trigger=trigger) for use_case in use_cases]


# ====================================================================================================================
# Realised performance
# ====================================================================================================================


@transaction.atomic
def performance_snapshots_record(*, use_case: str, actor: Actor, trigger: str,
                                 window_end: datetime | None = None) -> list[PerformanceSnapshot]:
    """Realised performance of every version of `use_case` whose predictions of the last window_days have recorded
    outcomes (and of the champion, even without any), one snapshot each. A degraded champion may request a
    retraining (CLINPREDICT_RETRAIN on_performance, cooldown)."""
    limits = settings.CLINPREDICT_PERFORMANCE
    end = _aware(window_end, "window_end")
    start = end - timedelta(days=limits["window_days"])
    pairs = outcome_prediction_pairs(use_case=use_case, predicted_from=start, predicted_until=end)
    grouped = performance_by_version(pairs)
    champion = model_version_champion(use_case=use_case)
    if champion is not None and champion.pk not in grouped:
        grouped[champion.pk] = (champion.label, [])
    versions = {v.pk: v for v in ModelVersion.objects.filter(pk__in=list(grouped))}
    snapshots = []
    for version_id, (label, version_pairs) in sorted(grouped.items()):
        figures = performance_figures(version_pairs)
        snapshot = PerformanceSnapshot.objects.create(
            use_case=use_case, model_version_id=version_id, model_label=label, created_at=timezone.now(),
            window_start=start, window_end=end, match_window_days=limits["match_window_days"],
            status=figures.status, message=figures.message, n=figures.n, events=figures.events, auroc=figures.auroc,
            calibration_slope=figures.calibration_slope, calibration_intercept=figures.calibration_intercept,
            brier=figures.brier, mean_predicted=figures.mean_predicted, observed_rate=figures.observed_rate,
            trigger=trigger,
        )
        event = audit_event_record(
            actor=actor, action="monitoring.performance", object_type="performance_snapshot",
            object_id=str(snapshot.pk), model_version=label, model_sha256=versions[version_id].onnx_sha256,
            inputs={"window_start": start.isoformat(), "window_end": end.isoformat(),
                    "match_window_days": limits["match_window_days"], "trigger": trigger},
            output={"status": figures.status, "n": figures.n, "events": figures.events, "auroc": figures.auroc,
                    "calibration_slope": figures.calibration_slope,
                    "calibration_intercept": figures.calibration_intercept, "brier": figures.brier},
        )
        snapshot.audit_seq = event.seq
        snapshot.save(update_fields=["audit_seq"])
        snapshots.append(snapshot)
        degraded_champion = champion is not None and version_id == champion.pk and figures.degraded
        if degraded_champion and settings.CLINPREDICT_RETRAIN["on_performance"]:
            _retraining_trigger(use_case=use_case, trigger=Trigger.PERFORMANCE,
                                request_key=f"performance:{snapshot.pk}", reason=figures.message,
                                performance=snapshot)
    return snapshots


# ====================================================================================================================
# Daily summaries (logged to MLflow)
# ====================================================================================================================


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _summary_metrics(volume: int, mean_risk: float | None, positive_rate: float | None, check: DriftCheck | None,
                     figures: Any) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {"inference_volume": float(volume), "inference_mean_risk": mean_risk,
                                        "inference_positive_rate": positive_rate}
    if check is not None:
        features = list(check.features.all())
        psis = [f.psi for f in features if f.psi is not None]
        metrics.update({"drift_samples": float(check.n_predictions), "drift_psi_max": max(psis) if psis else None,
                        "drift_prediction_psi": check.prediction_psi,
                        "drift_alert_features": float(len(check.alert_features))})
        for feature in features:
            metrics[f"drift_psi.{feature.feature}"] = feature.psi
            metrics[f"drift_missing_rate.{feature.feature}"] = feature.missing_rate
    if figures.n:
        metrics.update({"realised_n": float(figures.n), "realised_events": float(figures.events),
                        "realised_auroc": figures.auroc, "realised_calibration_slope": figures.calibration_slope,
                        "realised_calibration_intercept": figures.calibration_intercept,
                        "realised_brier": figures.brier, "realised_mean_predicted": figures.mean_predicted,
                        "realised_observed_rate": figures.observed_rate})
    return metrics


@transaction.atomic
def daily_summaries_record(*, day: date, actor: Actor = MONITORING_ACTOR) -> list[DailySummary]:
    """One summary per model version that answered predictions on `day` (UTC): volume, mean risk, positive rate,
    the drift check whose window covers the day, and realised performance of its predictions in the
    window_days up to the end of the day. Rerunning updates the day's rows; changed figures are logged again."""
    start, end = _day_bounds(day)
    rows = (prediction_list(reader=EVERYONE, created_after=start, created_before=end).order_by()
            .values("model_version_id", "model_label", "use_case")
            .annotate(volume=Count("id"), mean_risk=Avg("probability"), positives=Count("id", filter=Q(positive=True)))
            .order_by("use_case", "model_label"))
    window = timedelta(days=settings.CLINPREDICT_PERFORMANCE["window_days"])
    now = timezone.now()
    summaries = []
    for row in rows:
        version_id = row["model_version_id"]
        check = drift_check_covering(version_id=version_id, start=start, end=end)
        pairs = [p for p in outcome_prediction_pairs(use_case=row["use_case"], predicted_from=end - window,
                                                     predicted_until=end) if p.model_version_id == version_id]
        figures = performance_figures(pairs)
        positive_rate = row["positives"] / row["volume"] if row["volume"] else None
        metrics = _summary_metrics(row["volume"], row["mean_risk"], positive_rate, check, figures)
        summary = DailySummary.objects.select_for_update().filter(model_version_id=version_id, day=day).first()
        if summary is None:
            summary = DailySummary(model_version_id=version_id, day=day, created_at=now)
        elif summary.metrics == _jsonable(metrics):
            summaries.append(summary)
            continue
        summary.use_case, summary.model_label = row["use_case"], row["model_label"]
        summary.volume, summary.mean_risk, summary.positive_rate = row["volume"], row["mean_risk"], positive_rate
        summary.drift_check = check
        summary.metrics = _jsonable(metrics)
        summary.mlflow_status, summary.mlflow_detail, summary.updated_at = DailySummary.MlflowStatus.PENDING, "", now
        summary.save()
        summaries.append(summary)
    audit_event_record(actor=actor, action="monitoring.daily_summary", object_type="daily_summary",
                       object_id=day.isoformat(), inputs={"day": day.isoformat()},
                       output={s.model_label: {"volume": s.volume, "mean_risk": s.mean_risk,
                                               "positive_rate": s.positive_rate} for s in summaries})
    return summaries


def _jsonable(metrics: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in metrics.items()}


@transaction.atomic
def daily_summary_mlflow_record(*, summary_id: int, status: str, run_id: str = "", detail: str = "") -> DailySummary:
    summary = DailySummary.objects.select_for_update().select_related("model_version").get(pk=summary_id)
    summary.mlflow_status, summary.mlflow_run_id, summary.mlflow_detail = status, run_id, detail[:500]
    summary.mlflow_logged_at = timezone.now()
    summary.save(update_fields=["mlflow_status", "mlflow_run_id", "mlflow_detail", "mlflow_logged_at"])
    audit_event_record(actor=MONITORING_ACTOR, action="monitoring.daily_summary_mlflow", object_type="daily_summary",
                       object_id=str(summary.pk), model_version=summary.model_label,
                       model_sha256=summary.model_version.onnx_sha256,
                       inputs={"day": summary.day.isoformat()},
                       output={"status": status, "mlflow_run_id": run_id or None, "detail": detail[:500]})
    return summary


def daily_summaries_log(*, summaries: list[DailySummary], tracking_uri: str | None = None) -> list[DailySummary]:
    """Log each summary not yet in MLflow. An MLflow failure is recorded on the row (and retried by the next run),
    never raised: monitoring must not stop because MLflow is down."""
    from .mlflow_log import daily_metrics_log

    logged = []
    for summary in summaries:
        if summary.mlflow_status == DailySummary.MlflowStatus.OK:
            logged.append(summary)
            continue
        try:
            run_id = daily_metrics_log(use_case=summary.use_case, model_label=summary.model_label,
                                       training_run_id=summary.model_version.mlflow_run_id, day=summary.day,
                                       metrics=summary.metrics, tracking_uri=tracking_uri)
        except Exception as exc:
            logger.error("could not log the daily summary to MLflow; it is retried on the next run",
                         extra={"model_version": summary.model_label, "error_type": type(exc).__name__})
            logged.append(daily_summary_mlflow_record(summary_id=summary.pk, status=DailySummary.MlflowStatus.FAILED,
                                                      detail=f"{type(exc).__name__}: {exc}"))
        else:
            logged.append(daily_summary_mlflow_record(summary_id=summary.pk, status=DailySummary.MlflowStatus.OK,
                                                      run_id=run_id))
    return logged


def daily_summary_run(*, day: date, tracking_uri: str | None = None) -> list[DailySummary]:
    """Record the day's summaries, then log them (and any earlier ones that failed to log) to MLflow."""
    summaries = daily_summaries_record(day=day)
    pending = list(DailySummary.objects.filter(mlflow_status=DailySummary.MlflowStatus.FAILED, day__lt=day)
                   .select_related("model_version"))
    ids = [s.pk for s in summaries]
    fresh = list(DailySummary.objects.filter(pk__in=ids).select_related("model_version").order_by("model_label"))
    return daily_summaries_log(summaries=pending + fresh, tracking_uri=tracking_uri)


# ====================================================================================================================
# Retraining
# ====================================================================================================================


@dataclass(frozen=True)
class RetrainingRequest:
    run: RetrainingRun
    created: bool


def _retrain_settings() -> dict[str, Any]:
    return settings.CLINPREDICT_RETRAIN


def retraining_data_source(*, use_case: str) -> tuple[str, Path | None]:
    """("csv", path) for a use case trained from a configured CSV file, ("database", None) for one whose training
    data is assembled from stored patients. Raises ApplicationError when neither is possible."""
    from apps.patients.specs import spec_path_for

    datasets = _retrain_settings()["datasets"]
    if use_case in datasets:
        path = Path(datasets[use_case])
        if not path.is_file():
            raise ApplicationError(f"The training data of '{use_case}' ({path}) does not exist.",
                                   code="retraining_data_missing",
                                   fields={"use_case": [f"{path} is missing; run bootstrap_demo or set "
                                                        f"CLINPREDICT_RETRAIN['datasets']."]})
        return "csv", path
    if not spec_path_for(use_case).is_file():
        raise ApplicationError(f"Use case '{use_case}' has no spec file and no configured training CSV.",
                               code="unknown_use_case", fields={"use_case": [f"No ml/specs/{use_case}.yaml."]})
    return "database", None


def _seed(run_id: Any) -> int:
    return int(hashlib.sha256(str(run_id).encode()).hexdigest()[:8], 16) % (2**31)


def _expire_stale_runs(use_case: str, now: datetime) -> None:
    """An active run whose worker and message are gone (hard time limit hit, broker data lost) would block its use
    case forever: after stale_after_seconds it is recorded as abandoned."""
    cutoff = now - timedelta(seconds=_retrain_settings()["stale_after_seconds"])
    stale = RetrainingRun.objects.select_for_update().filter(use_case=use_case, status__in=RetrainingRun.ACTIVE,
                                                            created_at__lt=cutoff)
    for run in stale:
        if run.started_at is None or run.started_at < cutoff:
            _fail(run, f"abandoned: still {run.status} after {_retrain_settings()['stale_after_seconds']} s")


def retraining_request(*, use_case: str, actor: Actor, trigger: str, reason: str = "", request_key: str = "",
                       drift_check: DriftCheck | None = None, performance: PerformanceSnapshot | None = None,
                       enqueue_task: bool = True) -> RetrainingRequest:
    """Ask for `use_case` to be retrained. Idempotent: the same request_key returns its run, and while a run of the
    use case is queued or running that run is returned instead of a second one. The task is enqueued after the
    commit; when the broker cannot take it the run is recorded as failed with the reason (and the error logged).
    `enqueue_task=False`: the caller runs `retraining_run_execute` itself (manage.py retrain --inline)."""
    retraining_data_source(use_case=use_case)  # refuse early, naming the field, when there is nothing to train on
    return _retraining_request(use_case=use_case, actor=actor, trigger=trigger, reason=reason,
                               request_key=request_key, drift_check=drift_check, performance=performance,
                               enqueue_task=enqueue_task)


@transaction.atomic
def _retraining_request(*, use_case: str, actor: Actor, trigger: str, reason: str, request_key: str,
                        drift_check: DriftCheck | None, performance: PerformanceSnapshot | None,
                        enqueue_task: bool = True) -> RetrainingRequest:
    request_key = request_key.strip()[:200]
    if request_key:
        existing = RetrainingRun.objects.filter(request_key=request_key).first()
        if existing is not None:
            return RetrainingRequest(existing, created=False)
    now = timezone.now()
    _expire_stale_runs(use_case, now)
    active = RetrainingRun.objects.filter(use_case=use_case, status__in=RetrainingRun.ACTIVE).first()
    if active is not None:
        return RetrainingRequest(active, created=False)
    run = RetrainingRun(use_case=use_case, trigger=trigger, reason=reason[:2000], request_key=request_key,
                        requested_by=actor.label, requested_by_user_id=actor.user_id, drift_check=drift_check,
                        performance=performance, created_at=now, config=str(_retrain_settings()["config"]))
    run.seed = _seed(run.pk)
    try:
        with transaction.atomic():
            run.save(force_insert=True)
    except IntegrityError:
        # A concurrent request won the race (same key, or another run became active): that run answers.
        raced = (RetrainingRun.objects.filter(request_key=request_key).first() if request_key else None) or \
            RetrainingRun.objects.filter(use_case=use_case, status__in=RetrainingRun.ACTIVE).first()
        if raced is None:
            raise
        return RetrainingRequest(raced, created=False)
    event = audit_event_record(
        actor=actor, action="retraining.request", object_type="retraining_run", object_id=str(run.pk),
        inputs={"use_case": use_case, "trigger": trigger, "reason": reason[:2000], "request_key": request_key or None,
                "drift_check": drift_check.pk if drift_check else None,
                "performance_snapshot": performance.pk if performance else None},
        output={"status": run.status, "seed": run.seed, "config": run.config},
    )
    run.audit_seq = event.seq
    run.save(update_fields=["audit_seq"])
    if enqueue_task:
        transaction.on_commit(partial(_enqueue_retraining, run.pk))
    return RetrainingRequest(run, created=True)


def _enqueue_retraining(run_id: Any) -> None:
    from .tasks import retrain_task

    error = enqueue(retrain_task, str(run_id))
    if error is not None:
        retraining_run_fail(run_id=run_id, error=error)


def _retraining_trigger(*, use_case: str, trigger: str, request_key: str, reason: str,
                        drift_check: DriftCheck | None = None,
                        performance: PerformanceSnapshot | None = None) -> RetrainingRequest | None:
    """An automatic trigger (drift, performance): at most one per cooldown_days per use case."""
    cooldown = timedelta(days=_retrain_settings()["cooldown_days"])
    recent = RetrainingRun.objects.filter(use_case=use_case, trigger__in=[Trigger.DRIFT, Trigger.PERFORMANCE],
                                          created_at__gte=timezone.now() - cooldown).exists()
    if recent:
        logger.info("retraining trigger skipped: one was requested within the cooldown",
                    extra={"use_case": use_case, "trigger": trigger})
        return None
    try:
        retraining_data_source(use_case=use_case)
    except ApplicationError as exc:
        logger.warning("retraining trigger skipped: no training data", extra={"use_case": use_case,
                                                                             "error": exc.message})
        return None
    return _retraining_request(use_case=use_case, actor=MONITORING_ACTOR, trigger=trigger, reason=reason,
                               request_key=request_key, drift_check=drift_check, performance=performance)


def _fail(run: RetrainingRun, error: str, report: dict[str, Any] | None = None) -> RetrainingRun:
    run.status, run.error, run.finished_at = RetrainingRun.Status.FAILED, error[:5000], timezone.now()
    fields = ["status", "error", "finished_at"]
    if report is not None:
        run.validation_report = report
        fields.append("validation_report")
    run.save(update_fields=fields)
    audit_event_record(actor=RETRAIN_ACTOR, action="retraining.fail", object_type="retraining_run",
                       object_id=str(run.pk), inputs={"use_case": run.use_case, "attempts": run.attempts},
                       output={"error": error[:2000], "valid_data": None if report is None else report.get("valid")})
    return run


@transaction.atomic
def retraining_run_fail(*, run_id: Any, error: str, report: dict[str, Any] | None = None) -> RetrainingRun:
    """Record that a run failed, and why (with the data validation report when the data were unusable)."""
    run = RetrainingRun.objects.select_for_update().get(pk=run_id)
    if run.status in (RetrainingRun.Status.SUCCEEDED, RetrainingRun.Status.FAILED):
        return run
    return _fail(run, error, report)


@contextmanager
def _attempt_lock(run_id: Any) -> Iterator[bool]:
    """Only one process works on a run at a time (a redelivered message while the first worker is still training, or
    two workers handed the same run). A PostgreSQL session lock: a worker that dies releases it with its
    connection. SQLite (embedded, eager) has one process: always granted."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = int.from_bytes(hashlib.sha256(f"retraining:{run_id}".encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


@transaction.atomic
def _retraining_claim(run_id: Any) -> RetrainingRun | None:
    run = RetrainingRun.objects.select_for_update().filter(pk=run_id).first()
    if run is None or run.status in (RetrainingRun.Status.SUCCEEDED, RetrainingRun.Status.FAILED):
        return run
    run.attempts += 1
    if run.attempts > _retrain_settings()["max_attempts"]:
        return _fail(run, f"gave up after {run.attempts - 1} attempts: the worker was lost each time")
    run.status, run.started_at, run.error = RetrainingRun.Status.RUNNING, timezone.now(), ""
    run.save(update_fields=["attempts", "status", "started_at", "error"])
    audit_event_record(actor=RETRAIN_ACTOR, action="retraining.start", object_type="retraining_run",
                       object_id=str(run.pk), inputs={"use_case": run.use_case, "attempt": run.attempts},
                       output={"status": run.status, "worker": f"{socket.gethostname()}:{os.getpid()}"})
    return run


@transaction.atomic
def _retraining_data_record(*, run_id: Any, source: str, sha256: str) -> None:
    RetrainingRun.objects.filter(pk=run_id).update(data_source=source[:500], dataset_sha256=sha256)


def _train_config(name: str) -> Any:
    from ml.training import TrainConfig

    if name == "fast":
        return TrainConfig.fast()
    if name == "default":
        return TrainConfig()
    return TrainConfig.load(Path(name))


def _spec(use_case: str) -> Any:
    from apps.patients.specs import spec_path_for
    from ml.schema import UseCaseSpec

    path = spec_path_for(use_case)
    if path.is_file():
        return UseCaseSpec.load(path)
    champion = _champion_or_error(use_case)  # no spec file: retrain on the champion's own contract
    return UseCaseSpec.from_dict(champion.manifest["spec"])


def _assemble_training_data(run: RetrainingRun, work: Path) -> Path:
    """Fix the data this run trains on inside its work folder: a copy of the configured CSV, or the use case's
    training CSV exported from the database now."""
    from apps.patients.services import training_dataset_export
    from ml.validation import file_sha256

    _kind, path = retraining_data_source(use_case=run.use_case)
    target = work / "data.csv"
    if path is not None:  # a configured CSV file
        shutil.copyfile(path, target)
        source = f"csv:{path}"
    else:
        export = training_dataset_export(spec=run.use_case, out_path=target, actor=RETRAIN_ACTOR)
        source = f"database export ({export.rows} rows, {export.events} events)"
    _retraining_data_record(run_id=run.pk, source=source, sha256=file_sha256(target))
    return target


def retraining_run_execute(*, run_id: Any, progress: Callable[[str], None] | None = None) -> RetrainingRun | None:
    """Run one retraining: assemble the data, train with `ml.pipeline.train_run` (seed fixed per run, so a retried
    attempt trains the same model) and register the result as a candidate, in one transaction with the run's
    success. Safe to call again: a finished run is returned as it is, and a run another process holds is left to
    it. Invalid data fail the run with the validation report and register nothing."""
    from ml.pipeline import train_run
    from ml.validation import DataValidationError

    with _attempt_lock(run_id) as acquired:
        if not acquired:
            logger.info("retraining run is being worked on by another process", extra={"run_id": str(run_id)})
            return RetrainingRun.objects.filter(pk=run_id).first()
        run = _retraining_claim(run_id)
        if run is None or run.status != RetrainingRun.Status.RUNNING:
            return run
        work = Path(_retrain_settings()["work_dir"]) / str(run.pk)
        shutil.rmtree(work, ignore_errors=True)  # what a killed attempt left behind
        work.mkdir(parents=True)
        try:
            data = _assemble_training_data(run, work)
            train_run(spec=_spec(run.use_case), data_path=data, out_dir=work / "model", seed=run.seed,
                      model_type=_retrain_settings()["model_type"], config=_train_config(run.config),
                      tracking=_retrain_settings()["tracking"], tracking_uri=settings.MLFLOW_TRACKING_URI,
                      progress=progress)
            return _retraining_register(run_id=run.pk, folder=work / "model")
        except DataValidationError as exc:
            return retraining_run_fail(run_id=run.pk, error=f"the training data are invalid: {exc}",
                                       report=exc.report.to_dict())
        except Exception as exc:  # SoftTimeLimitExceeded, export, registration: recorded, never half-done
            logger.exception("retraining failed", extra={"run_id": str(run.pk), "error_type": type(exc).__name__})
            return retraining_run_fail(run_id=run.pk, error=f"{type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(work, ignore_errors=True)


@transaction.atomic
def _retraining_register(*, run_id: Any, folder: Path) -> RetrainingRun:
    """Register the trained folder as a candidate and record the run's success together: a crash in between leaves
    neither, so a retried attempt cannot register twice."""
    import json

    run = RetrainingRun.objects.select_for_update().get(pk=run_id)
    registration = model_version_register(source_dir=folder, actor=RETRAIN_ACTOR, source=f"retraining run {run.pk}")
    report = json.loads((folder / "validation_report.json").read_text(encoding="utf-8"))
    run.status, run.finished_at = RetrainingRun.Status.SUCCEEDED, timezone.now()
    run.candidate, run.candidate_created = registration.version, registration.created
    run.validation_report = report
    run.save(update_fields=["status", "finished_at", "candidate", "candidate_created", "validation_report"])
    version = registration.version
    audit_event_record(
        actor=RETRAIN_ACTOR, action="retraining.succeed", object_type="retraining_run", object_id=str(run.pk),
        model_version=version.label, model_sha256=version.onnx_sha256,
        inputs={"use_case": run.use_case, "attempt": run.attempts, "dataset_sha256": run.dataset_sha256},
        output={"candidate": version.label, "candidate_status": version.status, "new_version": registration.created,
                "test_auroc": version.test_auroc, "calibration_slope": version.calibration_slope},
    )
    return run


# ====================================================================================================================
# Daily scoring
# ====================================================================================================================


@dataclass(frozen=True)
class ScoringPlan:
    run: ScoringRun
    created: bool
    enqueue_errors: list[str]  # filled when the commit ran (empty inside a caller's still-open transaction)


def scoring_run_start(*, use_case: str, actor: Actor, trigger: str, chunk_size: int | None = None,
                      day: date | None = None) -> ScoringPlan:
    """Plan a day's scoring of `use_case`: the patients with observations stored since their latest prediction of it
    (or never predicted), in chunks of `chunk_size`, each enqueued as its own task after the commit, so the workers
    share them. Once per use case and day: running it again returns the day's run and enqueues its chunks that are
    not done yet (a chunk is scored once however often it is delivered)."""
    errors: list[str] = []
    with transaction.atomic():
        run, created = _scoring_run_plan(use_case=use_case, actor=actor, trigger=trigger, chunk_size=chunk_size,
                                         day=day or timezone.localdate())
        pending = list(run.chunk_rows.filter(status=ScoringChunk.Status.PENDING).order_by("index")
                       .values_list("pk", flat=True))
        transaction.on_commit(partial(_enqueue_chunks, pending, errors))
    return ScoringPlan(run, created, errors)


def _enqueue_chunks(chunk_ids: list[int], errors: list[str]) -> None:
    from .tasks import score_chunk_task

    for chunk_id in chunk_ids:
        error = enqueue(score_chunk_task, chunk_id)
        if error is not None:
            errors.append(error)
            return  # the rest would fail the same way; the next score_daily enqueues what is still pending


def _scoring_run_plan(*, use_case: str, actor: Actor, trigger: str, chunk_size: int | None, day: date
                      ) -> tuple[ScoringRun, bool]:
    existing = ScoringRun.objects.filter(use_case=use_case, day=day).first()
    if existing is not None:
        return existing, False
    champion = _champion_or_error(use_case)
    size = chunk_size or settings.CLINPREDICT_SCORING["chunk_size"]
    if size < 1:
        raise ApplicationError("The chunk size must be at least 1.", code="invalid",
                               fields={"chunk_size": ["a positive number of patients per task"]})
    patient_ids = patients_due_for_scoring(use_case=use_case)
    chunks = [patient_ids[i:i + size] for i in range(0, len(patient_ids), size)]
    now = timezone.now()
    try:
        with transaction.atomic():
            run = ScoringRun.objects.create(
                use_case=use_case, day=day, trigger=trigger, requested_by=actor.label, model_label=champion.label,
                chunk_size=size, patients=len(patient_ids), chunks=len(chunks), created_at=now,
                status=ScoringRun.Status.RUNNING if chunks else ScoringRun.Status.DONE,
                finished_at=None if chunks else now)
    except IntegrityError:  # a concurrent start of the same day won
        return ScoringRun.objects.get(use_case=use_case, day=day), False
    ScoringChunk.objects.bulk_create([ScoringChunk(run=run, index=i, patient_ids=ids) for i, ids in enumerate(chunks)])
    event = audit_event_record(actor=actor, action="scoring.start", object_type="scoring_run", object_id=str(run.pk),
                               model_version=champion.label, model_sha256=champion.onnx_sha256,
                               inputs={"use_case": use_case, "day": day.isoformat(), "chunk_size": size,
                                       "trigger": trigger},
                               output={"patients": len(patient_ids), "chunks": len(chunks)})
    run.audit_seq = event.seq
    run.save(update_fields=["audit_seq"])
    return run, True


def _skip_reason(errors: Mapping[str, list[str]]) -> str:
    # Field names only: the messages may quote the patient's values, which stay out of stored summaries and logs.
    return "cannot be scored: " + ", ".join(sorted(errors))


def _chunk_done(chunk: ScoringChunk, *, predicted: int, skipped: Counter[str], model: Any) -> ScoringChunk:
    """Record a finished chunk, its audit event, and the run's progress (inside the caller's transaction)."""
    chunk.status, chunk.finished_at = ScoringChunk.Status.DONE, timezone.now()
    chunk.predicted, chunk.skipped, chunk.skipped_reasons = predicted, sum(skipped.values()), dict(skipped)
    chunk.processed_by = f"{socket.gethostname()}:{os.getpid()}"[:200]
    chunk.save(update_fields=["status", "finished_at", "predicted", "skipped", "skipped_reasons", "processed_by"])
    # Audit first, then the run row: every chunk takes the audit chain lock before the run's row lock, so two
    # chunks committing at once never wait on each other in opposite order.
    audit_event_record(actor=SCORING_ACTOR, action="scoring.chunk", object_type="scoring_chunk",
                       object_id=str(chunk.pk), model_version=model.label if model else "",
                       model_sha256=model.sha256 if model else "",
                       inputs={"run": chunk.run_id, "chunk": chunk.index, "patients": len(chunk.patient_ids),
                               "attempt": chunk.attempts},
                       output={"predicted": predicted, "skipped": dict(skipped), "worker": chunk.processed_by})
    run = ScoringRun.objects.select_for_update().get(pk=chunk.run_id)
    run.predicted += predicted
    run.skipped += chunk.skipped
    run.skipped_reasons = dict(Counter(run.skipped_reasons) + skipped)
    fields = ["predicted", "skipped", "skipped_reasons"]
    if not run.chunk_rows.filter(status=ScoringChunk.Status.PENDING).exists():
        run.status, run.finished_at = ScoringRun.Status.DONE, timezone.now()
        fields += ["status", "finished_at"]
    run.save(update_fields=fields)
    return chunk


@transaction.atomic
def _scoring_chunk_attempt(chunk_id: int) -> ScoringChunk | None:
    """Count the attempt in its own commit, so a chunk that kills its worker every time is eventually given up."""
    chunk = ScoringChunk.objects.select_for_update().filter(pk=chunk_id).first()
    if chunk is None or chunk.status == ScoringChunk.Status.DONE:
        return chunk
    chunk.attempts += 1
    chunk.save(update_fields=["attempts"])
    if chunk.attempts > _retrain_settings()["max_attempts"]:
        reason = f"gave up after {chunk.attempts - 1} attempts: the worker was lost each time"
        return _chunk_done(chunk, predicted=0, skipped=Counter({reason: len(chunk.patient_ids)}), model=None)
    return chunk


@transaction.atomic
def scoring_chunk_execute(*, chunk_id: int, at: datetime | None = None) -> ScoringChunk | None:
    """Score one chunk: assemble each patient's features for the live champion, skip those that cannot be scored
    (the reason names fields, never values), and create the rest through `prediction_create_many` (channel system,
    each prediction audited like any other). The predictions, the chunk's completion and the run's progress commit
    together, so a chunk is scored exactly once however often its task is delivered."""
    from apps.patients.selectors import patients_features_assemble
    from ml.validation import validate_record

    chunk = ScoringChunk.objects.select_for_update().select_related("run").filter(pk=chunk_id).first()
    if chunk is None or chunk.status == ScoringChunk.Status.DONE:
        return chunk
    use_case = chunk.run.use_case
    at = _aware(at, "at")
    skipped: Counter[str] = Counter()
    requests: list[PredictionRequest] = []
    model = champion_model(use_case)
    if model is None:
        skipped["no champion model is live"] += len(chunk.patient_ids)
    else:
        lookback = timedelta(days=settings.CLINPREDICT_SCORING["lookback_days"])
        for assembled in patients_features_assemble(spec=model.spec, at=at, lookback=lookback,
                                                    patient_ids=chunk.patient_ids):
            features = assembled.features()
            result = validate_record(model.spec, features)
            if not result.ok:
                skipped[_skip_reason(result.errors)] += 1
                continue
            requests.append(PredictionRequest(use_case, features, assembled.patient_identifier,
                                              tuple(assembled.basis)))
    predictions = prediction_create_many(requests=requests, actor=SCORING_ACTOR,
                                         channel=Prediction.Channel.SYSTEM) if requests else []
    return _chunk_done(chunk, predicted=len(predictions), skipped=skipped, model=model)


def scoring_chunk_run(*, chunk_id: int) -> ScoringChunk | None:
    """The chunk task's entry point: count the attempt (giving up after max_attempts), then score the chunk."""
    chunk = _scoring_chunk_attempt(chunk_id)
    if chunk is None or chunk.status == ScoringChunk.Status.DONE:
        return chunk
    return scoring_chunk_execute(chunk_id=chunk_id)
