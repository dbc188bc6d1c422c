"""Monitoring metrics.

- `clinpredict_celery_tasks_total{task,state}`: a counter incremented by the Celery signal adapter (celery_signals.py)
  in whichever process runs the task.
- Drift, realised performance and retraining state are computed by the worker and stored; `MonitoringCollector`
  reports the stored rows at scrape time (like apps/audit/metrics.py), so the web's /metrics shows what the worker
  found and the values survive restarts:
  `clinpredict_drift_psi{use_case,feature}` (only from a check with enough data), `clinpredict_drift_missing_rate`
  and `clinpredict_drift_reference_missing_rate{use_case,feature}`, `clinpredict_drift_prediction_psi{use_case}`,
  `clinpredict_drift_samples{use_case}`, `clinpredict_drift_sufficient_data{use_case}`,
  `clinpredict_drift_checked_timestamp_seconds{use_case}`; `clinpredict_realised_{auroc,calibration_slope,
  calibration_intercept,brier,outcomes,events}{use_case,model_version}`; `clinpredict_retraining_runs{use_case,
  status}` and `clinpredict_retraining_last_success_timestamp_seconds{use_case}`.
"""

from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CELERY_TASKS = Counter(
    "clinpredict_celery_tasks_total",
    "Celery task outcomes by task name and state (success, failure, retry, revoked, rejected, unknown)",
    ["task", "state"],
)

_FAMILIES = (
    ("clinpredict_drift_psi", "Population stability index of a feature against the training reference (latest "
                              "check with enough data)", ["use_case", "feature"]),
    ("clinpredict_drift_missing_rate", "Share of missing values of a feature in the latest drift window",
     ["use_case", "feature"]),
    ("clinpredict_drift_reference_missing_rate", "Share of missing values of a feature in the training data",
     ["use_case", "feature"]),
    ("clinpredict_drift_prediction_psi", "PSI of the predicted risk against the out-of-fold training predictions",
     ["use_case"]),
    ("clinpredict_drift_samples", "Predictions in the latest drift check's window", ["use_case"]),
    ("clinpredict_drift_sufficient_data", "1 if the latest drift check had enough predictions, else 0",
     ["use_case"]),
    ("clinpredict_drift_checked_timestamp_seconds", "Unix time of the latest drift check", ["use_case"]),
    ("clinpredict_realised_auroc", "Realised AUROC from recorded outcomes (latest snapshot of the version)",
     ["use_case", "model_version"]),
    ("clinpredict_realised_calibration_slope", "Realised calibration slope", ["use_case", "model_version"]),
    ("clinpredict_realised_calibration_intercept", "Realised calibration intercept (calibration-in-the-large)",
     ["use_case", "model_version"]),
    ("clinpredict_realised_brier", "Realised Brier score", ["use_case", "model_version"]),
    ("clinpredict_realised_outcomes", "Predictions paired with a recorded outcome behind the realised figures",
     ["use_case", "model_version"]),
    ("clinpredict_realised_events", "Of those, outcomes with the condition present", ["use_case", "model_version"]),
    ("clinpredict_retraining_runs", "Retraining runs by status", ["use_case", "status"]),
    ("clinpredict_retraining_last_success_timestamp_seconds", "Unix time the latest candidate was registered by "
                                                              "retraining", ["use_case"]),
)


def _families() -> dict[str, GaugeMetricFamily]:
    return {name: GaugeMetricFamily(name, doc, labels=labels) for name, doc, labels in _FAMILIES}


class MonitoringCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Declared without values so registering does not query the database during start-up.
        yield from _families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            families = self._collect()
        except DatabaseError:
            return  # no value rather than a wrong one; alert on absence
        yield from (family for family in families.values() if family.samples)

    def _collect(self) -> dict[str, GaugeMetricFamily]:
        from .selectors import (
            drift_check_latest,
            monitored_use_cases,
            performance_snapshots_latest,
            retraining_last_success,
            retraining_status_counts,
        )

        f = _families()
        for use_case in monitored_use_cases():
            check = drift_check_latest(use_case=use_case)
            if check is None:
                continue
            sufficient = check.status in ("ok", "drift")
            f["clinpredict_drift_samples"].add_metric([use_case], check.n_predictions)
            f["clinpredict_drift_sufficient_data"].add_metric([use_case], 1.0 if sufficient else 0.0)
            f["clinpredict_drift_checked_timestamp_seconds"].add_metric([use_case], check.created_at.timestamp())
            if check.prediction_psi is not None:
                f["clinpredict_drift_prediction_psi"].add_metric([use_case], check.prediction_psi)
            for feature in check.features.all():
                if feature.psi is not None:
                    f["clinpredict_drift_psi"].add_metric([use_case, feature.feature], feature.psi)
                if feature.missing_rate is not None:
                    f["clinpredict_drift_missing_rate"].add_metric([use_case, feature.feature], feature.missing_rate)
                if feature.reference_missing_rate is not None:
                    f["clinpredict_drift_reference_missing_rate"].add_metric([use_case, feature.feature],
                                                                             feature.reference_missing_rate)
        for snapshot in performance_snapshots_latest():
            labels = [snapshot.use_case, snapshot.model_label]
            f["clinpredict_realised_outcomes"].add_metric(labels, snapshot.n)
            f["clinpredict_realised_events"].add_metric(labels, snapshot.events)
            for name, value in (("auroc", snapshot.auroc), ("calibration_slope", snapshot.calibration_slope),
                                ("calibration_intercept", snapshot.calibration_intercept),
                                ("brier", snapshot.brier)):
                if value is not None:
                    f[f"clinpredict_realised_{name}"].add_metric(labels, value)
        for (use_case, status), count in sorted(retraining_status_counts().items()):
            f["clinpredict_retraining_runs"].add_metric([use_case, status], count)
        for use_case, finished_at in sorted(retraining_last_success().items()):
            f["clinpredict_retraining_last_success_timestamp_seconds"].add_metric([use_case], finished_at.timestamp())
        return f


_registered = False


def register_collector() -> None:
    """Add the collector to prometheus_client's default registry once per process (single-process /metrics).
    In multiprocess mode the /metrics view builds its own registry with `scrape_time_collectors()`."""
    global _registered
    if _registered:
        return
    from prometheus_client import REGISTRY

    REGISTRY.register(MonitoringCollector())
    _registered = True


def scrape_time_collectors() -> list[Collector]:
    """Collectors that read stored state at scrape time; a multiprocess registry must register them itself."""
    from apps.audit.metrics import AuditChainCollector

    return [AuditChainCollector(), MonitoringCollector()]
