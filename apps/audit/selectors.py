"""Reads over the audit ledger, including verification of the hash chain."""

from collections.abc import Iterator
from dataclasses import dataclass

from .hashing import GENESIS_HASH, HASHED_FIELDS, event_hash
from .models import AuditEvent


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    count: int
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""


def _events_in_order(chunk_size: int = 2000) -> Iterator[AuditEvent]:
    return AuditEvent.objects.order_by("seq").only(*HASHED_FIELDS, "prev_hash", "hash").iterator(chunk_size=chunk_size)


def audit_chain_verify() -> ChainVerification:
    """Walk the chain in sequence order; report the first event that was altered, is missing or out of place."""
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    for event in _events_in_order():
        if event.seq != expected_seq:
            reason = f"sequence gap: expected #{expected_seq}, found #{event.seq} (events missing)"
            return ChainVerification(False, count, prev_hash, expected_seq, reason)
        if event.prev_hash != prev_hash:
            reason = f"#{event.seq} does not follow #{event.seq - 1} (reordered or predecessor replaced)"
            return ChainVerification(False, count, prev_hash, event.seq, reason)
        fields = {name: getattr(event, name) for name in HASHED_FIELDS}
        if event_hash(fields, prev_hash) != event.hash:
            return ChainVerification(False, count, prev_hash, event.seq, f"#{event.seq} content was altered")
        prev_hash, expected_seq, count = event.hash, expected_seq + 1, count + 1
    return ChainVerification(True, count, prev_hash)


def audit_events_for_object(*, object_type: str, object_id: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(object_type=object_type, object_id=object_id).order_by("seq"))
