"""Per-client API rate limit: each OAuth2 application (or user) gets its own budget; over it, 429 + Retry-After.

The counts live in the cache (Redis in production). If the cache is unreachable the limit is not enforced for that
request (logged), rather than failing clinical traffic: rate limiting protects capacity, it is not an access check."""

import logging
from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class ClientRateThrottle(SimpleRateThrottle):
    scope = "client"

    def get_rate(self) -> str | None:
        # Read at request time (not import time) so the rate follows settings.
        rate: str | None = settings.CLINPREDICT_API_THROTTLE_RATE
        return rate

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # the cache backend's connection errors differ per backend
            logger.warning("rate-limit cache unavailable; request allowed", extra={"error_type": type(exc).__name__})
            return True

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        application = getattr(getattr(request, "auth", None), "application", None)
        if application is not None:
            ident = f"app:{application.pk}"
        elif getattr(request, "user", None) is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
