"""Prometheus view of the chain's health, read from the latest stored verification at scrape time.

The periodic verification runs in a Celery worker, whose in-process gauges the web's /metrics never sees. So the
worker stores each result in the database (`AuditChainVerification`), and this collector, registered in every
process, reports the newest row: web and worker agree, and the value survives restarts.
"""

from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CHAIN_OK = "clinpredict_audit_chain_ok"
CHAIN_EVENTS = "clinpredict_audit_chain_events"
CHAIN_VERIFIED_AT = "clinpredict_audit_chain_verified_timestamp_seconds"
CHAIN_VERIFY_SECONDS = "clinpredict_audit_chain_verify_duration_seconds"


def _families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily(CHAIN_OK, "1 if the latest audit chain verification passed, 0 if it found a break"),
        GaugeMetricFamily(CHAIN_EVENTS, "Events covered by the latest audit chain verification"),
        GaugeMetricFamily(CHAIN_VERIFIED_AT, "Unix time of the latest audit chain verification"),
        GaugeMetricFamily(CHAIN_VERIFY_SECONDS, "How long the latest audit chain verification took"),
    )


class AuditChainCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Declared without values so registering does not query the database during start-up.
        yield from _families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from .selectors import audit_chain_verification_latest

        try:
            latest = audit_chain_verification_latest()
        except DatabaseError:
            return  # no value rather than a wrong one; alert on absence
        if latest is None:
            return
        ok, events, verified_at, duration = _families()
        ok.add_metric([], 1.0 if latest.ok else 0.0)
        events.add_metric([], float(latest.event_count))
        verified_at.add_metric([], latest.created_at.timestamp())
        duration.add_metric([], latest.duration_seconds)
        yield from (ok, events, verified_at, duration)


_registered = False


def register_collector() -> None:
    """Add the collector to prometheus_client's default registry once per process. (In multiprocess mode, a
    /metrics view that builds its own registry must register `AuditChainCollector()` there too.)"""
    global _registered
    if _registered:
        return
    from prometheus_client import REGISTRY

    REGISTRY.register(AuditChainCollector())
    _registered = True
