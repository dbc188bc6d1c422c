"""Production: secrets and hosts come from the environment (or `<NAME>_FILE` secrets) with no defaults; DEBUG cannot
be switched on; web and worker processes refuse to start on a failed deployment check (apps/core/startup.py)."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

# gunicorn workers, Celery workers and beat run `check --deploy` before serving and stop on any error
# (apps/core/checks.py): a per-process cache, a superuser or table-owning database role, ...
CLINPREDICT_ENFORCE_DEPLOY_CHECKS = True
