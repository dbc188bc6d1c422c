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


# One encoder, reused: json.dumps with non-default options builds a new JSONEncoder on every call. encode() keeps
# no state between calls, so sharing it across threads is safe.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def canonical_json(data: Any) -> str:
    return _ENCODER.encode(data)


def event_hash(fields: dict[str, Any], prev_hash: str) -> str:
    payload = canonical_json({name: fields[name] for name in HASHED_FIELDS}) + "|" + prev_hash
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# The two chain fields assigned under the chain lock; every other hashed field is known before it is taken.
_CHAIN_FIELDS = ("created_at", "seq")
# '{"action":', ',"actor_id":', ... in canonical (sorted) order.
_KEY_PREFIXES = tuple((name, ("{" if i == 0 else ",") + canonical_json(name) + ":")
                      for i, name in enumerate(sorted(HASHED_FIELDS)))


def hash_template(fields: dict[str, Any]) -> tuple[str, str, str]:
    """`canonical_json` of the hashed fields, split around the two values assigned under the chain lock:
    head + json(created_at) + middle + str(seq) + tail == canonical_json({...all hashed fields...}).

    It lets PostgreSQL assign `created_at` and `seq` and hash the event inside the locked section (see
    apps/audit/migrations/0004_append_function.py) while everything else is serialised in Python, by the same
    encoder the verifier uses. Built key by key in sorted order, which is exactly what `json.dumps(sort_keys=True,
    separators=(",", ":"))` writes for a flat dict of these keys."""
    pieces: list[str] = []
    parts: list[str] = []
    for name, prefix in _KEY_PREFIXES:
        if name in _CHAIN_FIELDS:
            pieces.append(prefix)
            parts.append("".join(pieces))
            pieces = []
            continue
        pieces.append(prefix + canonical_json(fields[name]))
    pieces.append("}")
    parts.append("".join(pieces))
    head, middle, tail = parts
    return head, middle, tail
