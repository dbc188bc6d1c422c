"""The model-health Grafana dashboard and the monitoring alert rules: they load, query the provisioned datasource,
do not overlap, and name only metrics the application exports (tests/deploy checks the shared schema too)."""

import json
import re
from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[3] / "docker"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
MODEL_HEALTH = DASHBOARDS / "model_health.json"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\b((?:clinpredict|django)_[a-z0-9_]+)\b")


def _exported_names() -> set[str]:
    """Every sample name this application can put on /metrics (counters with _total, histograms with _bucket...)."""
    from django.test import Client
    from prometheus_client import REGISTRY

    import apps.monitoring.celery_signals  # noqa: F401 - imported by the app anyway; the counter is defined there
    from apps.audit.metrics import AuditChainCollector
    from apps.monitoring.metrics import MonitoringCollector

    Client().get("/healthz")  # django-prometheus registers its request metrics with its middleware
    names = set(REGISTRY._names_to_collectors)  # noqa: SLF001 - the registry's own index of sample names
    for collector in (AuditChainCollector(), MonitoringCollector()):
        names |= {family.name for family in collector.describe()}
    return names


def _dashboard_exprs(path: Path) -> list[str]:
    dashboard = json.loads(path.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_model_health_dashboard_loads_and_queries_the_provisioned_datasource() -> None:
    dashboard = json.loads(MODEL_HEALTH.read_text())
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")}

    assert dashboard["uid"] == "clinpredict-model-health" and len(uids) == len(list(DASHBOARDS.glob("*.json")))
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["title"]
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "clinpredict-prometheus", panel["title"]
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_model_health_dashboard_shows_drift_performance_predictions_and_tasks() -> None:
    exprs = " ".join(_dashboard_exprs(MODEL_HEALTH))
    for needle in (
        "clinpredict_drift_psi{", "clinpredict_drift_missing_rate{", "clinpredict_drift_reference_missing_rate{",
        "clinpredict_drift_prediction_psi{", "clinpredict_drift_sufficient_data{", "clinpredict_realised_auroc{",
        "clinpredict_realised_calibration_slope{", "clinpredict_realised_calibration_intercept{",
        "clinpredict_realised_brier{", "clinpredict_realised_outcomes{", "clinpredict_realised_events{",
        "sum by (model_version, risk_band) (rate(clinpredict_predictions_total",
        "sum by (use_case, reason) (rate(clinpredict_prediction_rejections_total",
        "clinpredict_inference_seconds_bucket", "clinpredict_champion_loaded{", "clinpredict_audit_chain_ok",
        "sum by (task, state) (rate(clinpredict_celery_tasks_total", "clinpredict_retraining_runs{",
    ):
        assert needle in exprs, needle


def test_dashboards_and_alert_rules_name_only_metrics_the_application_exports(db: None) -> None:
    exported = _exported_names()
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    used = {name for path in DASHBOARDS.glob("*.json") for expr in _dashboard_exprs(path)
            for name in METRIC.findall(expr)}
    used |= {name for rule in rules for name in METRIC.findall(rule["expr"])}

    assert used - exported == set(), sorted(used - exported)


def test_monitoring_alert_rules_cover_missingness_prediction_drift_performance_and_tasks() -> None:
    rules: dict[str, Any] = {rule["alert"]: rule for group in yaml.safe_load(ALERTS.read_text())["groups"]
                             for rule in group["rules"]}
    for name, metric in {
        "ClinPredictFeatureDrift": "clinpredict_drift_psi",
        "ClinPredictMissingnessDrift": "clinpredict_drift_missing_rate",
        "ClinPredictPredictionDrift": "clinpredict_drift_prediction_psi",
        "ClinPredictDriftCheckStale": "clinpredict_drift_checked_timestamp_seconds",
        "ClinPredictRealisedAurocLow": "clinpredict_realised_auroc",
        "ClinPredictRealisedCalibrationOff": "clinpredict_realised_calibration_slope",
        "ClinPredictRetrainingFailed": "clinpredict_retraining_runs",
        "ClinPredictCeleryTaskFailures": "clinpredict_celery_tasks_total",
    }.items():
        assert metric in rules[name]["expr"], name
        assert rules[name]["labels"]["severity"] in {"warning", "critical"}
        assert rules[name]["annotations"]["summary"] and rules[name]["annotations"]["description"]
