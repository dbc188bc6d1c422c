"""The one audit writer, and the ledger's other writes: export records, verification runs, encrypted backups and
their restore. Every audited change calls `audit_event_record` inside its own transaction."""

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from apps.core.context import request_id_var
from apps.core.storage import SettingDirStorage, audit_backup_storage, remove_stored, save_new
from ml.validation import file_sha256

from . import backup as backup_file
from .actors import Actor
from .hashing import GENESIS_HASH, canonical_json, event_hash, hash_template
from .models import AuditBackup, AuditChainVerification, AuditEvent
from .selectors import (
    BACKUP_ACTION,
    EXPORT_FIELDS,
    AuditEventFilters,
    audit_backup_last_seq,
    audit_backup_verify,
    audit_chain_anchor,
    audit_chain_verify,
    audit_event_rows,
    audit_events_to_back_up,
    audit_head,
    chain_check,
)

logger = logging.getLogger(__name__)

# Any constants work; they name the advisory locks that serialise chain appends and backup runs on PostgreSQL.
_AUDIT_CHAIN_LOCK_KEY = 0x436C696E50726564  # "ClinPred"
_AUDIT_BACKUP_LOCK_KEY = 0x436C696E42616B75  # "ClinBaku"


def _advisory_xact_lock(key: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
    # SQLite serialises writers on the database file (transactions BEGIN IMMEDIATE: settings/base.py).


def _lock_chain() -> None:
    _advisory_xact_lock(_AUDIT_CHAIN_LOCK_KEY)


def _normalise(value: Any) -> Any:
    # Store exactly what was hashed: JSON types only, so reading back from the database hashes the same.
    return None if value is None else json.loads(canonical_json(value))


@dataclass(frozen=True)
class AuditEventDraft:
    """One event for `audit_events_record_many`: everything but the chain fields (seq, time, hashes)."""

    action: str
    object_type: str = ""
    object_id: str = ""
    patient_ref: str = ""
    model_version: str = ""
    model_sha256: str = ""
    inputs: Any = None
    output: Any = None


def audit_events_record_many(*, actor: Actor, drafts: Sequence[AuditEventDraft], source_ip: str | None = None,
                             rows: Sequence[models.Model] | None = None,
                             own_transaction: bool = False) -> list[AuditEvent]:
    """Append events to the chain in the given order, taking the chain lock once and inserting them in one
    statement: contiguous sequence numbers, each event hashed over its predecessor. Must run inside the caller's
    transaction, so the events and the changes they record commit or roll back together.

    `rows`: one unsaved instance per event, of one model with `audit_seq` and `created_at` fields (the change each
    event records, e.g. the prediction). They get their event's seq and time and are inserted with the events: on
    PostgreSQL in the same statement, so the section other writers wait for is one round trip and the COMMIT.

    `own_transaction`: for a change that is nothing but `rows` (a prediction without shadow scoring), the caller
    opens no transaction: the events and the rows are one transaction of their own, committed (durably) before
    this returns. On PostgreSQL that is the append statement alone in autocommit: BEGIN and COMMIT cost no round
    trips of their own, and the chain lock is released by the commit inside that statement instead of waiting for
    the client's COMMIT. Inside a caller's transaction (an idempotent request, a test) the statement simply joins
    it. Elsewhere (SQLite) the writes are wrapped in a transaction here."""
    if own_transaction and not (connection.vendor == "postgresql"
                                and (connection.in_atomic_block or connection.get_autocommit())):
        with transaction.atomic():
            return audit_events_record_many(actor=actor, drafts=drafts, source_ip=source_ip, rows=rows)
    if not (own_transaction or connection.in_atomic_block):
        raise RuntimeError("audit_event_record must be called inside the transaction of the change it records")
    if not drafts:
        return []
    # Everything that does not depend on the chain is prepared before the lock: writers queue on it until commit.
    request_id = request_id_var.get()
    prepared: list[dict[str, Any]] = [
        {
            "actor_type": actor.type,
            "actor_id": actor.id,
            "action": draft.action,
            "object_type": draft.object_type,
            "object_id": str(draft.object_id),
            "patient_ref": draft.patient_ref,
            "model_version": draft.model_version,
            "model_sha256": draft.model_sha256,
            "inputs": _normalise(draft.inputs),
            "output": _normalise(draft.output),
            "request_id": request_id,
            "source_ip": source_ip,
        }
        for draft in drafts
    ]
    if rows is not None and len(rows) != len(drafts):
        raise ValueError("one row per event")
    if connection.vendor == "postgresql":
        return _append_in_database(prepared, rows)
    _lock_chain()
    head_seq, prev_hash = audit_head()
    seq = head_seq + 1
    events: list[AuditEvent] = []
    for fields in prepared:
        chained = {**fields, "seq": seq, "created_at": timezone.now()}
        digest = event_hash(chained, prev_hash)
        events.append(AuditEvent(**chained, prev_hash=prev_hash, hash=digest))
        seq, prev_hash = seq + 1, digest
    events = AuditEvent.objects.bulk_create(events)
    if rows:
        for row, event in zip(rows, events, strict=True):
            row.audit_seq, row.created_at = event.seq, event.created_at  # type: ignore[attr-defined]
        type(rows[0])._default_manager.bulk_create(rows)
    return events


_APPEND_SQL = ("SELECT event_id, event_seq, event_created_at, event_prev_hash, event_hash "
               "FROM audit_auditevent_append(%s, %s::jsonb, %s::text)")


@cache
def _companion_append_sql(function: str) -> str:
    """The statement for a model that names its own append function (`AUDITED_APPEND_FUNCTION`, e.g. the
    predictions' in apps/predictions/migrations/0005): it calls `audit_auditevent_append` for the events and inserts
    that model's rows with a static INSERT whose plan PostgreSQL keeps, where the generic function plans a dynamic
    one on every call under the chain lock. Same arguments, same result columns."""
    name = connection.ops.quote_name(function)
    return f"SELECT event_id, event_seq, event_created_at, event_prev_hash, event_hash FROM {name}(%s, %s::jsonb)"  # noqa: S608 - a model constant


def _json_column(value: Any) -> Any:
    """A model value as JSON that jsonb_populate_record turns back into the same column value."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _append_in_database(prepared: Sequence[dict[str, Any]],
                        rows: Sequence[models.Model] | None) -> list[AuditEvent]:
    """PostgreSQL: lock, head read, hashing and the inserts in one round trip (migration 0004), so the section
    every other writer waits for is one statement and the COMMIT. The hashes are the ones `event_hash` gives."""
    payload = []
    for index, fields in enumerate(prepared):
        head, middle, tail = hash_template(fields)
        item = {**fields, "head": head, "middle": middle, "tail": tail}
        if rows:
            row = rows[index]
            item["row"] = {f.column: _json_column(getattr(row, f.attname)) for f in row._meta.concrete_fields
                           if f.attname not in ("audit_seq", "created_at")}
        payload.append(item)
    function = getattr(type(rows[0]), "AUDITED_APPEND_FUNCTION", None) if rows else None
    if function:
        sql, params = _companion_append_sql(function), [_AUDIT_CHAIN_LOCK_KEY, json.dumps(payload)]
    else:
        table = rows[0]._meta.db_table if rows else None
        sql, params = _APPEND_SQL, [_AUDIT_CHAIN_LOCK_KEY, json.dumps(payload), table]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = sorted(cursor.fetchall(), key=lambda r: r[1])  # by seq: the order of the drafts
    events: list[AuditEvent] = []
    for index, (fields, (pk, seq, created_at, prev_hash, digest)) in enumerate(zip(prepared, returned, strict=True)):
        event = AuditEvent(id=pk, seq=seq, created_at=created_at, prev_hash=prev_hash, hash=digest, **fields)
        event._state.adding = False
        event._state.db = connection.alias
        events.append(event)
        if rows:
            row = rows[index]
            row.audit_seq, row.created_at = seq, created_at  # type: ignore[attr-defined]
            row._state.adding = False
            row._state.db = connection.alias
    return events


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
    draft = AuditEventDraft(action=action, object_type=object_type, object_id=object_id, patient_ref=patient_ref,
                            model_version=model_version, model_sha256=model_sha256, inputs=inputs, output=output)
    (event,) = audit_events_record_many(actor=actor, drafts=[draft], source_ip=source_ip)
    return event


@transaction.atomic
def audit_event_record_standalone(**kwargs: Any) -> AuditEvent:
    """For events that record no other write (a login, an export): its own short transaction."""
    return audit_event_record(**kwargs)


# --- Exports --------------------------------------------------------------------------------------------------


@transaction.atomic
def audit_export_start(*, actor: Actor, export_format: str, filters: AuditEventFilters, channel: str,
                       source_ip: str | None = None) -> AuditEvent:
    """Record that an export starts, with its format and filters. The export then covers the events before this
    one (seq < event.seq), so what was exported is fixed at the moment it was recorded."""
    return audit_event_record(
        actor=actor,
        action="audit.export",
        object_type="audit_export",
        inputs={"format": export_format, "filters": filters.as_dict(), "channel": channel},
        source_ip=source_ip,
    )


# --- Verification ---------------------------------------------------------------------------------------------


def audit_chain_verification_run(*, trigger: str) -> AuditChainVerification:
    """Verify the chain (anchored at the last good head) and store the result, which /metrics reports.
    Runs the long read outside a transaction; only the result row is written. Not itself an audit event: the
    verifier reports on the chain and must not keep extending it."""
    started = time.perf_counter()
    result = audit_chain_verify(anchor=audit_chain_anchor())
    record = AuditChainVerification.objects.create(
        created_at=timezone.now(),
        trigger=trigger,
        ok=result.ok,
        event_count=result.count,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
        broken_seq=result.broken_seq,
        reason=result.reason,
        duration_seconds=round(time.perf_counter() - started, 3),
    )
    if result.ok:
        logger.info("audit chain verified", extra={"events": result.count, "head_hash": result.head_hash})
    else:
        logger.error("audit chain broken", extra={"broken_seq": result.broken_seq, "reason": result.reason})
    return record


# --- Encrypted backups ----------------------------------------------------------------------------------------


@transaction.atomic
def audit_backup_create(*, actor: Actor, key: str, directory: Path | None = None,
                        full: bool = False) -> AuditBackup | None:
    """Write the events not yet backed up (all of them with `full`) to one encrypted file, record it, and audit it.
    The file goes to the `audit_backups` storage (AUDIT_BACKUP_DIR, or the bucket with ARTIFACT_S3_BUCKET;
    apps/core/storage.py), or to a local `directory` when given. Returns None when there is nothing new: the last
    backup's own event alone does not call for a new file (it goes into the next one). Safe to rerun; concurrent
    runs queue on a lock."""
    aes_key = backup_file.parse_key(key)
    _advisory_xact_lock(_AUDIT_BACKUP_LOCK_KEY)
    head_seq, head_hash = audit_head()
    first_seq = 1 if full else audit_backup_last_seq() + 1
    if head_seq < first_seq or not (full or audit_events_to_back_up(first_seq=first_seq)):
        return None
    prev_hash = GENESIS_HASH if first_seq == 1 else AuditEvent.objects.values_list("hash", flat=True).get(
        seq=first_seq - 1)
    count = head_seq - first_seq + 1
    chunk_events = backup_file.CHUNK_EVENTS
    now = timezone.now()
    manifest = backup_file.Manifest(
        created_at=now.isoformat(), first_seq=first_seq, last_seq=head_seq, count=count, prev_hash=prev_hash,
        head_hash=head_hash, chunks=backup_file.chunks_for(count, chunk_events), chunk_events=chunk_events,
        key_id=backup_file.key_id(aes_key),
    )
    storage = SettingDirStorage(directory=directory) if directory is not None else audit_backup_storage()
    name = f"audit-{first_seq:012d}-{head_seq:012d}-{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}.jsonl.aesgcm"
    saved: list[str] = []
    try:
        # Built in a private temporary file, then stored whole: a reader never sees half a backup.
        with tempfile.NamedTemporaryFile(prefix="clinpredict-audit-backup-", suffix=".partial") as out:
            rows = audit_event_rows(filters=AuditEventFilters(seq_from=first_seq), up_to_seq=head_seq)
            backup_file.write_backup(out, rows=rows, manifest=manifest, key=aes_key)
            out.flush()
            digest = file_sha256(Path(out.name))
            out.seek(0)
            saved.append(save_new(storage, name, out))
        sidecar = json.dumps({**manifest.to_json(), "file": name, "file_sha256": digest}, indent=2) + "\n"
        saved.append(save_new(storage, f"{name}.manifest.json", sidecar.encode("utf-8")))
        backup = AuditBackup.objects.create(
            created_at=now, first_seq=first_seq, last_seq=head_seq, event_count=count, prev_hash=prev_hash,
            head_hash=head_hash, file_name=name, file_sha256=digest, key_id=manifest.key_id,
        )
        audit_event_record(
            actor=actor, action=BACKUP_ACTION, object_type="audit_backup", object_id=str(backup.pk),
            inputs={"first_seq": first_seq, "last_seq": head_seq, "full": full},
            output={"file": name, "file_sha256": digest, "events": count, "head_hash": head_hash,
                    "key_id": manifest.key_id},
        )
    except BaseException:
        remove_stored(storage, saved)
        raise
    return backup


@dataclass(frozen=True)
class RestoreResult:
    first_seq: int
    last_seq: int
    restored: int
    head_hash: str
    already_present: bool = False


def _restore_rows(rows: Iterator[dict[str, Any]], batch_size: int = 2000) -> Iterator[dict[str, Any]]:
    """Pass rows through to the chain check, inserting them in batches as they go (inside the caller's
    transaction: a later failure rolls every batch back)."""
    batch: list[AuditEvent] = []
    for row in rows:
        yield row
        batch.append(AuditEvent(**{name: row[name] for name in EXPORT_FIELDS}))
        if len(batch) >= batch_size:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    if batch:
        AuditEvent.objects.bulk_create(batch)


RESTORE_ACTION = "audit.restore"
RESTORE_ACTOR = Actor(type="system", id="audit_backup_restore")


def audit_backup_restore(*, path: Path, key: str, actor: Actor = RESTORE_ACTOR) -> RestoreResult:
    """`audit_backups_restore` of one file."""
    return audit_backups_restore(paths=[path], key=key, actor=actor).files[0]


@dataclass(frozen=True)
class RestoreRun:
    files: list[RestoreResult]  # one per file, in the order given
    event_seq: int | None  # the audit.restore event; None when every file was already present


@transaction.atomic
def audit_backups_restore(*, paths: Sequence[Path], key: str, actor: Actor) -> RestoreRun:
    """Append the events of backup files to the ledger, verbatim (same seq, time and hashes), in the order given,
    then record the restore itself as one `audit.restore` event after the last restored event. All or nothing: one
    transaction, so a wrong key, a damaged file or a file that does not continue the chain restores nothing of the
    run (and records nothing, leaving the sequence free for a corrected run). Each file must continue the chain
    exactly; every chunk is authenticated and the chain checked before commit. A file whose events are all present
    already is verified instead. The restore event is appended only when events were restored, after the last file:
    a backup file continuing the chain past it cannot be restored later, so a lost ledger is restored in one run
    with every file."""
    _lock_chain()
    results = [_backup_restore_one(path=path, key=key) for path in paths]
    restored = [(path, result) for path, result in zip(paths, results, strict=True) if result.restored]
    if not restored:
        return RestoreRun(results, None)
    event = audit_event_record(
        actor=actor, action=RESTORE_ACTION, object_type="audit_backup",
        object_id=f"{restored[0][1].first_seq}-{restored[-1][1].last_seq}",
        inputs={"files": [path.name for path in paths]},
        output={"restored": [{"file": path.name, "first_seq": result.first_seq, "last_seq": result.last_seq,
                              "events": result.restored, "head_hash": result.head_hash}
                             for path, result in restored],
                "events": sum(result.restored for _path, result in restored),
                "already_present": [path.name for path, result in zip(paths, results, strict=True)
                                    if result.already_present]},
    )
    return RestoreRun(results, event.seq)


def _backup_restore_one(*, path: Path, key: str) -> RestoreResult:
    aes_key = backup_file.parse_key(key)
    manifest = backup_file.read_manifest(path)
    with transaction.atomic():
        _lock_chain()
        head_seq, head_hash = audit_head()
        if head_seq >= manifest.last_seq:
            check = audit_backup_verify(path=path, key=key)
            if not check.ok:
                raise backup_file.BackupError(
                    f"{path.name}: events #{manifest.first_seq}..#{manifest.last_seq} are already in the database "
                    f"but differ from the backup: {check.reason}", code="backup_mismatch")
            return RestoreResult(manifest.first_seq, manifest.last_seq, 0, manifest.head_hash, already_present=True)
        if head_seq != manifest.first_seq - 1 or head_hash != manifest.prev_hash:
            raise backup_file.BackupError(
                f"{path.name} holds #{manifest.first_seq}..#{manifest.last_seq}, but the database chain ends at "
                f"#{head_seq} ({head_hash[:12]}...), so the file does not continue it; restore the backups in order "
                f"(the next one must start at #{head_seq + 1} with prev_hash {head_hash[:12]}...).",
                code="backup_out_of_order")
        _manifest, rows = backup_file.read_backup(path, key=aes_key)
        result = chain_check(_restore_rows(rows), first_seq=manifest.first_seq, prev_hash=manifest.prev_hash)
        if not result.ok:
            raise backup_file.BackupError(f"{path.name}: the backup's own chain is broken: {result.reason}; nothing "
                                          "was restored.", code="backup_corrupt")
        if result.count != manifest.count or result.head_hash != manifest.head_hash:
            raise backup_file.BackupError(
                f"{path.name}: holds {result.count} events ending at {result.head_hash[:12]}..., the manifest says "
                f"{manifest.count} ending at {manifest.head_hash[:12]}...; nothing was restored.",
                code="backup_corrupt")
    return RestoreResult(manifest.first_seq, manifest.last_seq, result.count, result.head_hash)

