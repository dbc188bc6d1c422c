"""Per-client API rate limit: each OAuth2 application (or user) gets its own budget; over it, 429 + Retry-After."""

from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class ClientRateThrottle(SimpleRateThrottle):
    scope = "client"

    def get_rate(self) -> str | None:
        # Read at request time (not import time) so the rate follows settings.
        rate: str | None = settings.CLINPREDICT_API_THROTTLE_RATE
        return rate

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        application = getattr(getattr(request, "auth", None), "application", None)
        if application is not None:
            ident = f"app:{application.pk}"
        elif getattr(request, "user", None) is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
