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
    dropped = {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE", "CACHE_URL"}
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**base, "DJANGO_SETTINGS_MODULE": "clinpredict.settings.production", **env})


@pytest.fixture
def database(request: pytest.FixtureRequest) -> dict[str, str]:
    """On PostgreSQL, as production connects: the application role (a superuser fails clinpredict.E002,
    tests/apps/core/test_db_roles.py)."""
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        return {"DATABASE_URL": request.getfixturevalue("app_role_database_url")}
    return {}


def test_check_deploy_is_clean_at_warning_level(database: dict[str, str]) -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING",
                     SECRET_KEY="k" * 20 + "-production-like-secret-key-with-enough-entropy-1234567890",
                     ALLOWED_HOSTS="clinpredict.example.org", CACHE_URL="redis://127.0.0.1:6379/14", **database)

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


# --- Shared state and secrets from files ---------------------------------------------------------------------------

PRODUCTION = {"SECRET_KEY": "k" * 20 + "-production-like-secret-key-with-enough-entropy-1234567890",
              "ALLOWED_HOSTS": "clinpredict.example.org", "CACHE_URL": "redis://127.0.0.1:6379/14"}


def test_check_deploy_names_cache_url_when_the_cache_is_per_process() -> None:
    result = _manage("check", "--deploy", **{**PRODUCTION, "CACHE_URL": ""})

    assert result.returncode != 0
    assert "clinpredict.E001" in result.stderr and "CACHE_URL is not set" in result.stderr


def test_one_process_may_say_so_instead_of_sharing_a_cache(database: dict[str, str]) -> None:
    result = _manage("check", "--deploy", **{**PRODUCTION, "CACHE_URL": "", "CLINPREDICT_SINGLE_PROCESS": "true"},
                     **database)

    assert result.returncode == 0, result.stderr


def test_every_setting_can_come_from_a_file_without_its_trailing_newline(tmp_path: Path) -> None:
    key_file, password_file = tmp_path / "secret_key", tmp_path / "db_password"
    key_file.write_text(PRODUCTION["SECRET_KEY"] + "\n")
    password_file.write_text("pw-from-a-file\n")
    code = ("from django.conf import settings; "
            f"print(settings.SECRET_KEY == {PRODUCTION['SECRET_KEY']!r}, "
            "settings.DATABASES['default']['PASSWORD'] == 'pw-from-a-file', settings.AUDIT_BACKUP_KEY == 'k1')")
    env = {**PRODUCTION, "SECRET_KEY": "", "SECRET_KEY_FILE": str(key_file),
           "DATABASE_PASSWORD_FILE": str(password_file), "AUDIT_BACKUP_KEY": "k1"}

    result = _manage("shell", "-c", code, **env)

    assert result.stdout.strip().splitlines()[-1] == "True True True", result.stderr


def test_a_missing_secret_file_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    result = _manage("check", **{**PRODUCTION, "SECRET_KEY_FILE": str(missing)})

    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"django.core.exceptions.ImproperlyConfigured: SECRET_KEY_FILE={missing}: cannot read the "
                    "secret file (No such file or directory); mount it there or unset SECRET_KEY_FILE.")
