"""Local development and the `make run` demo: DEBUG on, a development key, SQLite and eager Celery by default."""

from .base import *  # noqa: F403
from .base import env, metrics_networks

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-local-development-key-not-for-production")
# Serve static files straight from the app folders (no collectstatic step needed here).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# /metrics open to any address in development (`make run` listens on 127.0.0.1 only); base.py's default is loopback.
CLINPREDICT_METRICS_ALLOWED_NETWORKS = metrics_networks(
    env.list("CLINPREDICT_METRICS_ALLOWED_NETWORKS", default=["0.0.0.0/0", "::/0"]))
