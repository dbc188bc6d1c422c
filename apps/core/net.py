"""The client's address, taken correctly behind a configured number of trusted reverse proxies.

With TRUSTED_PROXY_COUNT = 0 (the default) X-Forwarded-For is ignored entirely: a client could write anything in
it. With N trusted proxies, each appends the address it received the request from, so the client is the N-th entry
from the right; entries further left were written by the client and are not trusted."""

from ipaddress import ip_address
from typing import Any

from django.conf import settings


def client_ip(request: Any) -> str | None:
    remote = request.META.get("REMOTE_ADDR") or None
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) < count:
        return remote
    candidate = hops[-count]
    try:
        return str(ip_address(candidate))
    except ValueError:
        return remote
