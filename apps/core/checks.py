"""ClinPredict's own deployment checks (`manage.py check --deploy`), which production web and worker processes also
run before they serve (apps/core/startup.py): a deployment that fails one never starts half-safe.

Each error names the setting to fix. They run only with --deploy (or at production start), so development and
tests on one process are unaffected.
"""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

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
