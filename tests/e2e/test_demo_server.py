"""End to end on a real server process: migrate + bootstrap_demo into an empty var/ (embedded SQLite, eager
Celery), serve, then the smoke script signs in as the clinician, gets a risk through the form, and an OAuth2
client gets a 201 from the API."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo_server(tmp_path: Path, trained_dir: Path, pima_csv: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "clinpredict.settings.local",
        "CLINPREDICT_VAR_DIR": str(tmp_path / "var"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CLINPREDICT_DEMO_PASSWORD": "smoke-password-123",
        "CLINPREDICT_DEMO_CLIENT_ID": "smoke-client",
        "CLINPREDICT_DEMO_CLIENT_SECRET": "smoke-secret-456",
    })
    # Training is proven elsewhere; reuse the session's trained folder so this test stays fast.
    shutil.copytree(trained_dir, tmp_path / "var" / "runs" / "diabetes-seed42")
    (tmp_path / "var" / "data").mkdir(parents=True)
    shutil.copy(pima_csv, tmp_path / "var" / "data" / "diabetes.csv")
    manage = [sys.executable, str(REPO / "manage.py")]
    for step in (["migrate", "--noinput"], ["bootstrap_demo"], ["bootstrap_demo"]):
        result = subprocess.run(manage + step, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(manage + ["runserver", f"127.0.0.1:{port}", "--noreload"], env=env, cwd=REPO,
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310
                break
            except OSError:
                time.sleep(0.2)
        yield base, env
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_demo_server_serves_clinician_and_api(demo_server: tuple[str, dict[str, str]]) -> None:
    base, env = demo_server

    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "smoke_demo.py"), "--base", base, "--password",
         env["CLINPREDICT_DEMO_PASSWORD"], "--client-id", "smoke-client", "--client-secret", "smoke-secret-456"],
        capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "readyz: 200 ready" in result.stdout
    assert "web: clinician got" in result.stdout
    assert "api: 201 probability=" in result.stdout and "audit_seq=" in result.stdout
