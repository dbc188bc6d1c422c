"""A misconfigured production deployment fails at start with one message naming the setting; it never starts
half-safe. Real gunicorn (the web) and a real Celery worker, with production settings."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def refusal(servers: Any, tmp_path: Path, app_role_database_url: str) -> Any:
    """Start a production gunicorn that is correct but for `env`; return what it said when it refused to start."""

    def start(**env: str) -> str:
        with pytest.raises(RuntimeError, match="gunicorn exited"):
            with servers.production_gunicorn(tmp_path, workers=2, start_timeout=60, env={
                    "DATABASE_URL": app_role_database_url, "CACHE_URL": "redis://127.0.0.1:6379/14", **env}):
                pass
        return (tmp_path / "gunicorn.log").read_text()  # the whole log: each worker wrote its traceback

    return start


def test_the_correct_configuration_starts(servers: Any, tmp_path: Path, app_role_database_url: str) -> None:
    with servers.production_gunicorn(tmp_path, workers=1, env={
            "DATABASE_URL": app_role_database_url, "CACHE_URL": "redis://127.0.0.1:6379/14"}) as server:
        assert "refuses" not in server.log_tail()


def test_gunicorn_refuses_to_start_with_a_per_process_cache(refusal: Any) -> None:
    log = refusal(CACHE_URL="")

    assert "ClinPredict refuses to start: clinpredict.E001: CACHE_URL is not set" in log


def test_gunicorn_refuses_to_start_with_a_missing_secret_file(refusal: Any) -> None:
    log = refusal(SECRET_KEY_FILE="/run/secrets/not-mounted")

    assert "SECRET_KEY_FILE=/run/secrets/not-mounted: cannot read the secret file" in log


def test_gunicorn_refuses_to_start_as_a_database_superuser(refusal: Any, servers: Any) -> None:
    from django.db import connection

    log = refusal(DATABASE_URL=servers.database_url(connection.settings_dict))  # the test runner's superuser

    assert "ClinPredict refuses to start: clinpredict.E002: DATABASE_URL connects as role" in log
    assert "which is a superuser" in log


def test_a_celery_worker_refuses_to_start_with_a_per_process_cache(servers: Any, app_role_database_url: str) -> None:
    env = servers.clean_environ()
    env.update({"DJANGO_SETTINGS_MODULE": "clinpredict.settings.production", "SECRET_KEY": servers.SECRET_KEY,
                "ALLOWED_HOSTS": "127.0.0.1", "CACHE_URL": "",
                "DATABASE_URL": app_role_database_url})
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "clinpredict", "worker", "--pool", "solo"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2, result.stderr[-2000:]
    assert "ClinPredict refuses to start: clinpredict.E001: CACHE_URL is not set" in result.stderr
