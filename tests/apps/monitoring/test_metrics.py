"""Prometheus: Celery task outcomes through the signal adapter, and /metrics under gunicorn with two workers in
multiprocess mode (the sum of both workers' predictions, the stored-state collectors, a dead worker's gauges gone)."""

import json
import os
import re
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from apps.monitoring.metrics import CELERY_TASKS

TOKEN = "metrics-multiprocess-token-0123456789"  # noqa: S105 - a test credential in a throwaway database
BODY = json.dumps({"use_case": "diabetes", "features": {
    "pregnancies": 2, "glucose": 140, "blood_pressure": 72, "skin_thickness": 29, "insulin": None, "bmi": 33.6,
    "pedigree": 0.627, "age": 50}}).encode()


def _count(task: str, state: str) -> float:
    return CELERY_TASKS.labels(task, state)._value.get()


def test_celery_task_outcomes_are_counted_by_task_and_state(db: None) -> None:
    from apps.monitoring.tasks import check_drift_task, daily_summary_task

    success, failure = (_count("monitoring.check_drift", "success"),
                        _count("monitoring.daily_summary", "failure"))

    check_drift_task.apply()  # no champion: nothing to check, succeeds
    daily_summary_task.apply(kwargs={"day": "not-a-date"}, throw=False)  # ValueError inside the task

    assert _count("monitoring.check_drift", "success") == success + 1
    assert _count("monitoring.daily_summary", "failure") == failure + 1


@pytest.fixture
def gunicorn_multiprocess(transactional_db: None, settings: Any, tmp_path: Path, servers: Any,
                          app_role_database_url: str) -> Iterator[dict[str, Any]]:
    """gunicorn, 2 workers, production settings as the application role, PROMETHEUS_MULTIPROC_DIR, the repository's
    gunicorn.conf.py (tests/servers.py)."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale file of an earlier server")  # on_starting removes it
    with servers.production_gunicorn(tmp_path / "server", workers=2, env={
            "DATABASE_URL": app_role_database_url, "MODEL_STORAGE_DIR": str(settings.MODEL_STORAGE_DIR),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "CLINPREDICT_API_THROTTLE_RATE": "100000/min",
            "CACHE_URL": "redis://127.0.0.1:6379/14", "CACHE_KEY_PREFIX": f"metrics-{uuid.uuid4().hex}"}) as server:
        yield {"base": server.base, "server": server, "dir": metrics_dir}


def _post(base: str) -> tuple[int, str]:
    request_id = f"metrics-{uuid.uuid4().hex}"
    request = urllib.request.Request(f"{base}/api/v1/predictions", data=BODY, method="POST", headers={  # noqa: S310
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "X-Request-ID": request_id})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return response.status, request_id


def _scrape(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310 - loopback
        return response.read().decode()


def _sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_metrics_from_two_gunicorn_workers_report_the_sum_of_both_workers_predictions(
        gunicorn_multiprocess: dict[str, Any], trained_dir: Path) -> None:
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application

    from apps.audit.actors import Actor
    from apps.audit.services import audit_chain_verification_run
    from apps.registry.services import model_version_promote, model_version_register

    actor = Actor(type="system", id="metrics-test")
    version = model_version_register(source_dir=trained_dir, actor=actor).version
    model_version_promote(version_id=version.pk, actor=actor, reason="metrics test champion")
    app = Application.objects.create(name="metrics", client_type=Application.CLIENT_CONFIDENTIAL,
                                     authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    AccessToken.objects.create(application=app, token=TOKEN, scope="predictions:write",
                               expires=timezone.now() + timedelta(hours=1))
    audit_chain_verification_run(trigger="manual")
    base = gunicorn_multiprocess["base"]
    assert not (gunicorn_multiprocess["dir"] / "counter_99999.db").exists()

    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for _ in range(n):
            answer = _post(base)
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=client, args=(15,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pids = gunicorn_multiprocess["server"].workers_by_request()
    served_by = {pids[request_id] for _status, request_id in answers}

    assert [status for status, _ in answers] == [201] * 60
    assert len(served_by) == 2, f"both workers must have answered: {served_by}"
    scrapes = [_scrape(base) for _ in range(6)]  # whichever worker answers the scrape, it reports all of them
    for text in scrapes:
        assert _sample(text, "clinpredict_predictions_total", use_case="diabetes", channel="api") == 60
        assert _sample(text, "django_http_responses_total_by_status_view_method_total", status="201",
                       view="api-predictions") == 60
        assert _sample(text, "clinpredict_inference_seconds_count", use_case="diabetes") == 60
        assert _sample(text, "clinpredict_champion_loaded", use_case="diabetes") == 1.0  # livemin over live workers
        assert _sample(text, "clinpredict_audit_chain_ok") == 1.0  # stored-state collectors in multiprocess mode
    print(f"60 predictions served by workers {sorted(served_by)}; /metrics: "  # noqa: T201 - evidence with -s
          f"clinpredict_predictions_total={_sample(scrapes[0], 'clinpredict_predictions_total')}")

    # A worker dies: gunicorn replaces it and child_exit drops its live gauges; its counts stay in the sums.
    victim = int(sorted(served_by)[0])
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (gunicorn_multiprocess["dir"] / f"gauge_livemin_{victim}.db").exists():
        time.sleep(0.2)
    assert not (gunicorn_multiprocess["dir"] / f"gauge_livemin_{victim}.db").exists()
    after = _scrape(base)
    assert _sample(after, "clinpredict_predictions_total", use_case="diabetes", channel="api") == 60
