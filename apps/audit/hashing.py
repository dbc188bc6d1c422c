"""Canonical serialisation and hashing of audit events (shared by the writer and the verifier)."""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor_type",
    "actor_id",
    "action",
    "object_type",
    "object_id",
    "patient_ref",
    "model_version",
    "model_sha256",
    "inputs",
    "output",
    "request_id",
    "source_ip",
)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    raise TypeError(f"not serialisable in an audit event: {type(value).__name__}")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def event_hash(fields: dict[str, Any], prev_hash: str) -> str:
    payload = canonical_json({name: fields[name] for name in HASHED_FIELDS}) + "|" + prev_hash
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
