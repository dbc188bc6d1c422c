"""Production settings pass Django's deployment checks at WARNING level (the security middleware settings, cookie
flags, HSTS, DEBUG off, the OAuth2 RFC 9700 gates), and refuse to start without their secrets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # DJANGO_ALLOW_ASYNC_UNSAFE is set by the browser tests' conftest for this test process only; a deployment
    # never has it (and `check --deploy` rightly refuses it).
    dropped = {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**base, "DJANGO_SETTINGS_MODULE": "clinpredict.settings.production", **env})


def test_check_deploy_is_clean_at_warning_level(request: pytest.FixtureRequest) -> None:
    # On PostgreSQL, as production connects: the application role (a superuser fails clinpredict.E001,
    # tests/apps/core/test_db_roles.py).
    database = ({"DATABASE_URL": request.getfixturevalue("app_role_database_url")}
                if os.environ.get("DATABASE_URL", "").startswith("postgres") else {})
    result = _manage("check", "--deploy", "--fail-level", "WARNING",
                     SECRET_KEY="k" * 20 + "-production-like-secret-key-with-enough-entropy-1234567890",
                     ALLOWED_HOSTS="clinpredict.example.org", **database)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_to_start_without_secret_key_or_hosts() -> None:
    no_key = _manage("check", ALLOWED_HOSTS="clinpredict.example.org")
    no_hosts = _manage("check", SECRET_KEY="k" * 60)

    assert no_key.returncode != 0 and "SECRET_KEY" in no_key.stderr
    assert no_hosts.returncode != 0 and "ALLOWED_HOSTS" in no_hosts.stderr


def test_debug_cannot_be_switched_on_in_production() -> None:
    result = _manage("shell", "-c", "from django.conf import settings; print(settings.DEBUG)", DEBUG="true",
                     SECRET_KEY="k" * 60, ALLOWED_HOSTS="clinpredict.example.org")

    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
