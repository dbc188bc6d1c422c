"""Local development and the `make run` demo: DEBUG on, a development key, SQLite and eager Celery by default."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-local-development-key-not-for-production")
# Serve static files straight from the app folders (no collectstatic step needed here).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
