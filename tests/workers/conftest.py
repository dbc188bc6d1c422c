"""A real Celery worker process for the tests: `celery -A clinpredict worker --pool prefork -c 2` against the test
database and a real Redis broker, started once per module (and restarted by the tests that kill it).

The worker is another process: it sees only committed data, so these tests use transactional databases. It shares
with this process the model storage folder, the var folder (the demo CSV it retrains on) and the broker; it trains
with the fast configuration and without MLflow to keep the suite quick. Redelivery after a killed worker is made
quick with a short visibility timeout. The worker is stopped through its process group."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FALLBACK_BROKER = "redis://127.0.0.1:6379/14"  # when the suite runs without CELERY_BROKER_URL
VISIBILITY_TIMEOUT = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Worker:
    env: dict[str, str]
    root: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self, timeout: float = 90.0) -> "Worker":
        self.starts += 1
        log = self.root / f"worker-{self.starts}.log"
        self.logs.append(log)
        handle = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "clinpredict", "worker", "-l", "info", "-c", "2",
             "--pool", "prefork", "-n", f"tests-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            env=self.env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the worker exited ({self.process.returncode}): {self.log_text()[-3000:]}")
            if re.search(r"\bready\b", log.read_text(errors="replace")):
                return self
            time.sleep(0.2)
        pytest.fail(f"the worker did not get ready: {self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (main process and pool children): nothing gets to clean up."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:  # noqa: S310
            return response.read().decode()


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """This process publishes to the worker's broker (not eagerly); queued leftovers of earlier runs are purged."""
    from django.conf import settings

    from clinpredict.celery import app

    url = settings.CELERY_BROKER_URL or FALLBACK_BROKER
    previous = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.broker_url, app.conf.task_always_eager = url, False
    app.control.purge()
    yield url
    app.conf.broker_url, app.conf.task_always_eager = previous


@pytest.fixture(scope="module")
def worker_dirs(tmp_path_factory: pytest.TempPathFactory, pima_csv: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("worker")
    dirs = {"root": root, "storage": root / "model-storage", "var": root / "var", "metrics": root / "prometheus"}
    (dirs["var"] / "data").mkdir(parents=True)
    shutil.copyfile(pima_csv, dirs["var"] / "data" / "diabetes.csv")
    dirs["metrics"].mkdir()
    return dirs


@pytest.fixture(scope="module")
def worker(django_db_setup: None, broker_url: str, worker_dirs: dict[str, Path]) -> Iterator[Worker]:
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{db['NAME']}"
    else:
        database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "clinpredict.settings.test", "PYTHONPATH": str(REPO),
        "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url,
        "MODEL_STORAGE_DIR": str(worker_dirs["storage"]), "CLINPREDICT_VAR_DIR": str(worker_dirs["var"]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{worker_dirs['root'] / 'mlflow.db'}",
        "CLINPREDICT_RETRAIN_CONFIG": "fast", "CLINPREDICT_RETRAIN_TRACKING": "false",
        "CELERY_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT),
        "CELERY_UNACKED_RESTORE_INTERVAL_SECONDS": "1", "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(worker_dirs["metrics"]), "CELERY_WORKER_METRICS_PORT": str(_free_port()),
    })
    running = Worker(env, worker_dirs["root"], int(env["CELERY_WORKER_METRICS_PORT"])).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def _shared_with_the_worker(settings: Any, worker_dirs: dict[str, Path]) -> None:
    """This process and the worker use the same model storage and training data."""
    settings.MODEL_STORAGE_DIR = worker_dirs["storage"]
    settings.CLINPREDICT_RETRAIN = {**settings.CLINPREDICT_RETRAIN,
                                    "datasets": {"diabetes": worker_dirs["var"] / "data" / "diabetes.csv"}}


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, worker: Worker, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}; worker log:\n{worker.log_text()[-4000:]}")
