"""Per-client API rate limit: each OAuth2 application (or user) gets its own budget; over it, 429 + Retry-After.

The counts live in the cache (Redis in production). If the cache is unreachable the limit is not enforced for that
request (logged), rather than failing clinical traffic: rate limiting protects capacity, it is not an access check.

A fixed-window counter (one atomic `incr` per request), not DRF's sliding log: `SimpleRateThrottle` reads, trims
and writes back the list of every request time within the window on each request, so at the rates an EHR or a
batch client reaches (thousands a minute) each request pickled and shipped a list of thousands of floats, and two
workers could overwrite each other's lists. The counter is O(1) and exact across workers; the price is that a
client may spend up to two windows' budget across a window boundary, which is fine for capacity protection.

On Redis (production) the count is one round trip: a Lua script that increments the counter and gives a new one its
expiry, atomically, through one client kept per cache. Django's `cache.incr` costs two (EXISTS, then INCR; and an
`add` for a window's first request), and builds a new redis client, with its ~170 response callbacks, on every
call. Any other cache backend keeps the `incr`/`add` path."""

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)

# KEYS[1]: the window's counter; ARGV[1]: its lifetime in seconds (set by the request that creates it).
_INCREMENT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


def _redis_increment(cache: RedisCache) -> Any:
    """The counter script bound to one client of this cache's write pool, made once per cache object (Django's
    caches are per thread; the pool is redis-py's, which is thread-safe and reconnects after a fork)."""
    client = cache._cache  # noqa: SLF001 - Django's RedisCacheClient: its pool and key prefix are what we need
    script = getattr(client, "_clinpredict_increment", None)
    if script is None:
        script = client.get_client(write=True).register_script(_INCREMENT)
        client._clinpredict_increment = script
    return script


class ClientRateThrottle(SimpleRateThrottle):
    scope = "client"

    def get_rate(self) -> str | None:
        # Read at request time (not import time) so the rate follows settings.
        rate: str | None = settings.CLINPREDICT_API_THROTTLE_RATE
        return rate

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        self._wait = (window + 1) * self.duration - now
        try:
            count = self._count(f"{key}:{window}")
        except Exception as exc:  # the cache backend's connection errors differ per backend
            logger.warning("rate-limit cache unavailable; request allowed", extra={"error_type": type(exc).__name__})
            return True
        return count <= self.num_requests

    def _count(self, key: str) -> int:
        cache = caches["default"]
        if isinstance(cache, RedisCache):
            return int(_redis_increment(cache)(keys=[cache.make_and_validate_key(key)],
                                               args=[int(self.duration) + 1]))
        try:
            return int(cache.incr(key))
        except ValueError:  # no counter for this window yet
            if cache.add(key, 1, timeout=int(self.duration) + 1):
                return 1
            return int(cache.incr(key))  # another worker created it first

    def wait(self) -> float | None:
        return max(1.0, math.ceil(self._wait))

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        application = getattr(getattr(request, "auth", None), "application", None)
        if application is not None:
            ident = f"app:{application.pk}"
        elif getattr(request, "user", None) is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
