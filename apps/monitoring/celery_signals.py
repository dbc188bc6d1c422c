"""Celery task outcomes as `clinpredict_celery_tasks_total{task,state}`, and the worker's own /metrics endpoint.

Why signals here, against the house rule (the same exception as apps/audit/auth_events.py): Celery fires
task_success / task_failure / task_retry / task_revoked / task_rejected for every task on every path (worker,
eager, retries, revocations, unknown messages); wrapping each task would miss the paths outside the task body. Each
receiver only increments a counter; none holds business logic.

The web's /metrics cannot see the worker's processes. With CELERY_WORKER_METRICS_PORT set, the worker's main
process serves its own /metrics on that port when it is ready. Under the prefork pool the tasks run in child
processes: set PROMETHEUS_MULTIPROC_DIR (a directory of the worker's own, emptied before it starts) so the main
process can sum their samples.
"""

import logging
import os
from typing import Any

from celery import signals
from django.conf import settings

from .metrics import CELERY_TASKS

logger = logging.getLogger(__name__)


def _name(sender: Any = None, request: Any = None, message: Any = None) -> str:
    for candidate in (getattr(sender, "name", None), getattr(request, "task", None),
                      getattr(request, "name", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    headers = getattr(message, "headers", None) or {}
    return str(headers.get("task") or "unknown")


def on_success(sender: Any = None, **kwargs: Any) -> None:
    CELERY_TASKS.labels(_name(sender), "success").inc()


def on_failure(sender: Any = None, **kwargs: Any) -> None:
    CELERY_TASKS.labels(_name(sender), "failure").inc()


def on_retry(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    CELERY_TASKS.labels(_name(sender, request), "retry").inc()


def on_revoked(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    CELERY_TASKS.labels(_name(sender, request), "revoked").inc()


def on_rejected(message: Any = None, **kwargs: Any) -> None:
    CELERY_TASKS.labels(_name(message=message), "rejected").inc()


def on_unknown(name: str = "", **kwargs: Any) -> None:
    CELERY_TASKS.labels(name or "unknown", "unknown").inc()


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    port = settings.CELERY_WORKER_METRICS_PORT
    if not port:
        return
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        logger.warning("worker /metrics without PROMETHEUS_MULTIPROC_DIR: prefork children's counts are not seen")
    start_http_server(port, addr=settings.CELERY_WORKER_METRICS_ADDRESS, registry=registry)
    logger.info("worker metrics served", extra={"port": port, "address": settings.CELERY_WORKER_METRICS_ADDRESS})


def on_child_shutdown(pid: int | None = None, **kwargs: Any) -> None:
    """A prefork child is gone: drop its live gauges from the multiprocess directory (counters keep counting)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


def connect() -> None:
    signals.task_success.connect(on_success, weak=False, dispatch_uid="monitoring.task_success")
    signals.task_failure.connect(on_failure, weak=False, dispatch_uid="monitoring.task_failure")
    signals.task_retry.connect(on_retry, weak=False, dispatch_uid="monitoring.task_retry")
    signals.task_revoked.connect(on_revoked, weak=False, dispatch_uid="monitoring.task_revoked")
    signals.task_rejected.connect(on_rejected, weak=False, dispatch_uid="monitoring.task_rejected")
    signals.task_unknown.connect(on_unknown, weak=False, dispatch_uid="monitoring.task_unknown")
    signals.worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="monitoring.worker_ready")
    signals.worker_process_shutdown.connect(on_child_shutdown, weak=False, dispatch_uid="monitoring.child_shutdown")
