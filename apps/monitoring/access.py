"""Who may read the web's /metrics: the monitoring network or the holder of the metrics token.

/metrics names every use case, model version, Celery task and view, and shows traffic and failure rates: useful to
an attacker, none of it for the public. A request is served when its client address (apps/core/net.py: the peer,
or the entry the trusted proxies wrote) lies in CLINPREDICT_METRICS_ALLOWED_NETWORKS, or when it carries
`Authorization: Bearer <CLINPREDICT_METRICS_TOKEN>` (compared in constant time). Behind an ingress the address is the
real client's, so a private range in the list opens /metrics to everyone on that range who can reach the ingress:
on Kubernetes and compose, Prometheus uses the token instead (docs/deploy.md)."""

import hmac
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any

from django.conf import settings

from apps.core.net import client_ip


@lru_cache(maxsize=4)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
    return tuple(ip_network(cidr, strict=False) for cidr in cidrs)


def _bearer(request: Any) -> str:
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def metrics_token_valid(request: Any) -> bool:
    token: str = settings.CLINPREDICT_METRICS_TOKEN
    presented = _bearer(request)
    return bool(token and presented) and hmac.compare_digest(presented.encode(), token.encode())


def metrics_address_allowed(request: Any) -> bool:
    address = client_ip(request)
    if not address:
        return False
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.1 from a dual-stack socket
        ip = ip.ipv4_mapped
    return any(ip in network for network in _networks(tuple(settings.CLINPREDICT_METRICS_ALLOWED_NETWORKS)))


def metrics_access_allowed(request: Any) -> bool:
    return metrics_token_valid(request) or metrics_address_allowed(request)
