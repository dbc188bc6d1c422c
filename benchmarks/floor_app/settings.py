"""Settings of the floor app (benchmarks/floor_app): the least Django needs to serve one view."""

import os

import environ

SECRET_KEY = "floor-benchmark-only-not-a-secret"  # noqa: S105 - a throwaway benchmark app on 127.0.0.1
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "benchmarks.floor_app.urls"
WSGI_APPLICATION = "benchmarks.floor_app.wsgi.application"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True
# The durable variant writes one row per request to its own scratch database (autocommit: one fsync'd COMMIT).
DATABASES = {"default": environ.Env.db_url_config(os.environ["FLOOR_DATABASE_URL"])} if os.environ.get(
    "FLOOR_DATABASE_URL") else {}
if DATABASES:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
FLOOR_RUN_DIR = os.environ.get("FLOOR_RUN_DIR", "")
LOGGING_CONFIG = None
