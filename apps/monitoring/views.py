"""Monitoring pages for model admins (drift with charts, realised performance, retraining and scoring runs) and the
/metrics endpoint. Read-only and thin: selectors in, templates out."""

import logging
import os
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from apps.audit.selectors import audit_backup_status

from . import charts
from .access import metrics_access_allowed
from .metrics import scrape_time_collectors
from .selectors import (
    daily_summaries_recent,
    drift_check_get,
    drift_check_latest,
    drift_checks_recent,
    monitored_use_cases,
    monitoring_overview,
    performance_snapshots_latest,
    performance_snapshots_recent,
    retraining_runs_recent,
    scoring_runs_recent,
)

VIEW_PERMISSION = "monitoring.view_driftcheck"

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) the samples of every worker process are
    summed from the shared directory (django-prometheus' request metrics and ours), plus the collectors that read
    stored state (audit chain, drift, realised performance, retraining); otherwise this process's registry, where
    those collectors are registered at start-up.

    Only for the monitoring network or the metrics token (apps/monitoring/access.py); anyone else gets a 403 that
    says nothing about the metrics, before any collector runs."""
    if not metrics_access_allowed(request):
        logger.warning("metrics scrape refused: address outside CLINPREDICT_METRICS_ALLOWED_NETWORKS and no valid "
                       "metrics token")
        return HttpResponseForbidden("Forbidden\n", content_type="text/plain; charset=utf-8")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        for collector in scrape_time_collectors():
            registry.register(collector)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


@never_cache
@login_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "monitoring/overview.html", {
        "use_cases": monitoring_overview(),
        "audit_backup": audit_backup_status(key=settings.AUDIT_BACKUP_KEY),
    })


def _drift_charts(check: Any) -> dict[str, Any]:
    features = list(check.features.all())
    bars = [charts.PsiBar(f.feature, f.psi, f.alert, f.note) for f in features]
    context: dict[str, Any] = {
        "features": features,
        "psi_chart": charts.psi_chart(bars, limit=check.psi_alert,
                                      title=f"PSI per feature, {check.model_label}") if features else None,
        "feature_charts": [
            {"feature": f, "chart": charts.distribution_chart(
                labels=charts.bin_labels(f.edges), reference=f.reference, current=f.current,
                title=f"{f.feature}: share of present values per training-quantile bin")}
            for f in features if f.current
        ],
    }
    if check.prediction_current:
        context["prediction_chart"] = charts.distribution_chart(
            labels=charts.bin_labels(check.prediction_edges, percent=True), reference=check.prediction_reference,
            current=check.prediction_current, title="Predicted risk: share of predictions per bin")
    return context


@never_cache
@login_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
def use_case_detail(request: HttpRequest, use_case: str) -> HttpResponse:
    if use_case not in monitored_use_cases():
        raise Http404(f"No champion model for use case '{use_case}'.")
    check = None
    if request.GET.get("check", "").isdigit():
        check = drift_check_get(check_id=int(request.GET["check"]))
        if check is not None and check.use_case != use_case:
            check = None
    check = check or drift_check_latest(use_case=use_case)
    history = drift_checks_recent(use_case=use_case)
    context: dict[str, Any] = {
        "use_case": use_case,
        "check": check,
        "history": list(reversed(history)),
        "performance": performance_snapshots_latest(use_case=use_case),
        "performance_history": performance_snapshots_recent(use_case=use_case),
        "retraining": retraining_runs_recent(use_case=use_case),
        "scoring": scoring_runs_recent(use_case=use_case, limit=5),
        "summaries": daily_summaries_recent(use_case=use_case, limit=14),
    }
    if check is not None:
        context.update(_drift_charts(check))
    if history:
        max_psi = [charts.HistoryPoint(c.created_at, c.max_psi) for c in history]
        prediction = [charts.HistoryPoint(c.created_at, c.prediction_psi) for c in history]
        context["history_chart"] = charts.history_chart(
            [("largest feature PSI", charts.RAISES, max_psi), ("predicted-risk PSI", charts.CURRENT_FILL, prediction)],
            limit=history[-1].psi_alert, title=f"Drift of {use_case} over the last {len(history)} checks",
            y_label="PSI")
    return render(request, "monitoring/use_case.html", context)
