"""Exactly one Celery beat per deployment: a second beat started while one runs exits with one message, and takes
over once the first has stopped (real beat processes, the broker's Redis)."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/14"


def _beat(tmp_path: Path, name: str, key: str, wait: str = "0") -> subprocess.Popen[bytes]:
    from django.db import connection

    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"DJANGO_SETTINGS_MODULE": "clinpredict.settings.test", "CELERY_BROKER_URL": BROKER,
                "CLINPREDICT_BEAT_LOCK_KEY": key, "CLINPREDICT_BEAT_LOCK_WAIT_SECONDS": wait,
                # django_celery_beat's DatabaseScheduler (settings) reads its schedule from this test database.
                "DATABASE_URL": url})
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "clinpredict", "beat", "-l", "info",
             "--schedule", str(tmp_path / f"{name}-schedule")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_second_beat_exits_while_one_runs_and_takes_over_after_it(tmp_path: Path) -> None:
    key = f"test-beat-lock-{uuid.uuid4().hex}"
    store = redis.Redis.from_url(BROKER)
    first = _beat(tmp_path, "first", key)
    try:
        _until(lambda: store.exists(key), 60, "the first beat to take the lock")
        second = _beat(tmp_path, "second", key)
        second.wait(timeout=60)
        refused = (tmp_path / "second.log").read_text()

        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        _until(lambda: not store.exists(key), 10, "the first beat to release the lock")
        third = _beat(tmp_path, "third", key)
        _until(lambda: store.exists(key), 60, "the next beat to take the lock")
        time.sleep(1.0)
        still_running = third.poll() is None
        third.send_signal(signal.SIGTERM)
        third.wait(timeout=30)
    finally:
        for process in (first,):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)

    assert second.returncode == 2
    assert f"Another Celery beat holds the schedule lock '{key}'" in refused
    assert still_running
    assert not store.exists(key)  # released on a clean stop
