"""ClinPredict's own deployment checks (`manage.py check --deploy`), which production web and worker processes also
run before they serve (apps/core/startup.py): a deployment that fails one never starts half-safe.

Each error names the setting to fix. They run only with --deploy (or at production start), so development and
tests on one process are unaffected.
"""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError, connection

from .db_roles import check_application_role

# Cache backends whose state every process and host shares.
SHARED_CACHE_BACKENDS = (
    "django.core.cache.backends.redis.RedisCache",
    "django.core.cache.backends.memcached.PyMemcacheCache",
    "django.core.cache.backends.memcached.PyLibMCCache",
    "django.core.cache.backends.db.DatabaseCache",
)


@register(Tags.caches, deploy=True)
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    backend = settings.CACHES["default"]["BACKEND"]
    if backend in SHARED_CACHE_BACKENDS or settings.CLINPREDICT_SINGLE_PROCESS:
        return []
    return [Error(
        f"CACHE_URL is not set, so the cache is per process ({backend.rsplit('.', 1)[-1]}): the API rate limit, the "
        "/o/token/ lockout and the CDS Hooks JWT replay check would each hold only within one worker.",
        hint="Set CACHE_URL to a Redis shared by every worker and host (e.g. redis://redis:6379/1), or set "
             "CLINPREDICT_SINGLE_PROCESS=true if exactly one process serves ClinPredict.",
        id="clinpredict.E001",
    )]


@register(Tags.security, deploy=True)
def database_role_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """clinpredict.E002 when DATABASE_URL connects as more than the application role (superuser, table owner,
    DDL or TRUNCATE rights); a warning, not a crash, when the database cannot be reached. SQLite: nothing to check."""
    if connection.vendor != "postgresql":
        return []
    try:
        message = check_application_role(connection)
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [Warning(f"could not check the database role DATABASE_URL connects as: {reason}",
                        id="clinpredict.W001")]
    if message is None:
        return []
    return [Error(message, hint="Create the roles with `manage.py setup_database_roles` (as a superuser) and set "
                                "DATABASE_URL to the application role; see docs/security.md.",
                  id="clinpredict.E002")]
