"""The one audit writer. Every audited change calls `audit_event_record` inside its own transaction."""

import json
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from apps.core.context import request_id_var

from .actors import Actor
from .hashing import GENESIS_HASH, canonical_json, event_hash
from .models import AuditEvent

# Any constant works; it names the one advisory lock that serialises chain appends on PostgreSQL.
_AUDIT_CHAIN_LOCK_KEY = 0x436C696E50726564  # "ClinPred"


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_CHAIN_LOCK_KEY])
    # SQLite serialises writers on the database file, which is all the embedded default needs.


def _normalise(value: Any) -> Any:
    # Store exactly what was hashed: JSON types only, so reading back from the database hashes the same.
    return None if value is None else json.loads(canonical_json(value))


def audit_event_record(
    *,
    actor: Actor,
    action: str,
    object_type: str = "",
    object_id: str = "",
    patient_ref: str = "",
    model_version: str = "",
    model_sha256: str = "",
    inputs: Any = None,
    output: Any = None,
    source_ip: str | None = None,
) -> AuditEvent:
    """Append one event to the chain. Must run inside the caller's transaction, so the event and the change it
    records commit or roll back together; the sequence is assigned under a lock so writers never fork the chain."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_event_record must be called inside the transaction of the change it records")
    _lock_chain()
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    fields: dict[str, Any] = {
        "seq": seq,
        "created_at": timezone.now(),
        "actor_type": actor.type,
        "actor_id": actor.id,
        "action": action,
        "object_type": object_type,
        "object_id": str(object_id),
        "patient_ref": patient_ref,
        "model_version": model_version,
        "model_sha256": model_sha256,
        "inputs": _normalise(inputs),
        "output": _normalise(output),
        "request_id": request_id_var.get(),
        "source_ip": source_ip,
    }
    event = AuditEvent(**fields, prev_hash=prev_hash, hash=event_hash(fields, prev_hash))
    event.save(force_insert=True)
    return event


@transaction.atomic
def audit_event_record_standalone(**kwargs: Any) -> AuditEvent:
    """For events that record no other write (a login, an export): its own short transaction."""
    return audit_event_record(**kwargs)
