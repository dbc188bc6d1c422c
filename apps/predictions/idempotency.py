"""Idempotent prediction requests: the same Idempotency-Key and body return the first answer; the same key with
another body is refused. Duplicates that arrive together are serialised on a per-(actor, key) lock, so exactly one
of them creates predictions and audit events and the others replay its result."""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError
from apps.core.validators import refusal as identifier_refusal

from .models import IdempotencyRecord, Prediction
from .services import PredictionRequest, prediction_create_many

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotentResult:
    predictions: list[Prediction]
    replayed: bool


def request_fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validate_key(key: str) -> str:
    wrong = identifier_refusal(key) or (None if key.isprintable() else "Contains a character that is not printable.")
    if not 1 <= len(key) <= MAX_KEY_LENGTH or wrong:
        raise ApplicationError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.", code="invalid_idempotency_key",
            fields={"Idempotency-Key": [f"{wrong + ' ' if wrong else ''}"
                                        f"Accepted: 1 to {MAX_KEY_LENGTH} printable characters, e.g. a UUID."]},
        )
    return key


def _lock(actor: Actor, key: str) -> None:
    if connection.vendor != "postgresql":
        return  # SQLite (embedded default) serialises writers on the database file
    digest = hashlib.sha256(f"{actor.label}\0{key}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)])


@transaction.atomic
def prediction_create_idempotent(
    *,
    key: str,
    fingerprint: str,
    requests: Sequence[PredictionRequest],
    many: bool,
    actor: Actor,
    channel: str,
    source_ip: str | None = None,
) -> IdempotentResult:
    _lock(actor, key)
    record = IdempotencyRecord.objects.filter(actor=actor.label, key=key).first()
    if record is not None:
        if record.request_sha256 != fingerprint or record.many != many:
            raise ApplicationError(
                "This Idempotency-Key was already used with a different request body.",
                code="idempotency_key_reused", status_code=422,
                fields={"Idempotency-Key": ["Use a new key for a different request."]},
            )
        by_id = {str(p.id): p for p in Prediction.objects.filter(id__in=record.prediction_ids)}
        return IdempotentResult([by_id[i] for i in record.prediction_ids], replayed=True)
    predictions = prediction_create_many(requests=requests, actor=actor, channel=channel, source_ip=source_ip)
    IdempotencyRecord.objects.create(actor=actor.label, key=key, request_sha256=fingerprint, many=many,
                                     prediction_ids=[str(p.id) for p in predictions])
    return IdempotentResult(predictions, replayed=False)
