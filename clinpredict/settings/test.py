"""Test settings: real PostgreSQL/Redis when DATABASE_URL / CELERY_BROKER_URL are set (always in CI)."""

from .base import *  # noqa: F403
from .base import STORAGES as BASE_STORAGES
from .base import env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY", default="test-only-secret-key-with-enough-length-0123456789abcdef")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]
# Tests read pages without a collectstatic step.
STORAGES = {
    **BASE_STORAGES,  # `models` and `audit_backups` as configured
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CLINPREDICT_CHAMPION_CACHE_SECONDS = 0.0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not shared-cache memory: in-memory SQLite fails concurrent writers at once ("table is locked")
    # instead of queueing them, which the concurrency tests need.
    import os
    import tempfile

    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"clinpredict-test-{os.getpid()}.sqlite3"),
    }
# Serve static files straight from the app folders (no collectstatic step needed here).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
