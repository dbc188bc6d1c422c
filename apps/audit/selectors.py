"""Reads over the audit ledger: filtering, export rows, and verification of the hash chain."""

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from . import backup as backup_file
from .hashing import GENESIS_HASH, HASHED_FIELDS, canonical_json, event_hash
from .models import AuditBackup, AuditChainVerification, AuditEvent

# Every stored column of an event, in the order exports write them.
EXPORT_FIELDS: tuple[str, ...] = (*HASHED_FIELDS, "prev_hash", "hash")
EXPORT_CHUNK_SIZE = 2000
EXPORT_BATCH_SIZE = 500  # events per page of the PostgreSQL export path (a few MB at most)
BACKUP_ACTION = "audit.backup"


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    count: int
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""
    head_seq: int | None = None


@dataclass(frozen=True)
class AuditEventFilters:
    """Validated filters (see forms.AuditEventFilterForm). `created_after` is inclusive, `created_before` exclusive;
    an `action` ending in `*` matches by prefix."""

    created_after: datetime | None = None
    created_before: datetime | None = None
    actor: str = ""
    actor_type: str = ""
    patient: str = ""
    model_version: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    seq_from: int | None = None
    seq_to: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The filters that are set, JSON-ready (recorded in the export's own audit event)."""
        values = {
            "created_after": self.created_after, "created_before": self.created_before, "actor": self.actor,
            "actor_type": self.actor_type, "patient": self.patient, "model_version": self.model_version,
            "action": self.action, "object_type": self.object_type, "object_id": self.object_id,
            "seq_from": self.seq_from, "seq_to": self.seq_to,
        }
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in values.items() if value not in (None, "")
        }


def audit_event_list(*, filters: AuditEventFilters, newest_first: bool = False) -> QuerySet[AuditEvent]:
    queryset = AuditEvent.objects.all()
    if filters.created_after is not None:
        queryset = queryset.filter(created_at__gte=filters.created_after)
    if filters.created_before is not None:
        queryset = queryset.filter(created_at__lt=filters.created_before)
    if filters.actor:
        queryset = queryset.filter(actor_id=filters.actor)
    if filters.actor_type:
        queryset = queryset.filter(actor_type=filters.actor_type)
    if filters.patient:
        queryset = queryset.filter(patient_ref=filters.patient)
    if filters.model_version:
        queryset = queryset.filter(model_version=filters.model_version)
    if filters.action.endswith("*"):
        queryset = queryset.filter(action__startswith=filters.action[:-1])
    elif filters.action:
        queryset = queryset.filter(action=filters.action)
    if filters.object_type:
        queryset = queryset.filter(object_type=filters.object_type)
    if filters.object_id:
        queryset = queryset.filter(object_id=filters.object_id)
    if filters.seq_from is not None:
        queryset = queryset.filter(seq__gte=filters.seq_from)
    if filters.seq_to is not None:
        queryset = queryset.filter(seq__lte=filters.seq_to)
    return queryset.order_by("-seq" if newest_first else "seq")


def audit_event_rows(*, filters: AuditEventFilters, up_to_seq: int | None = None,
                     chunk_size: int = EXPORT_CHUNK_SIZE) -> Iterator[dict[str, Any]]:
    """Plain dict rows in sequence order, read with a server-side cursor in chunks (constant memory)."""
    queryset = audit_event_list(filters=filters)
    if up_to_seq is not None:
        queryset = queryset.filter(seq__lte=up_to_seq)
    return queryset.values(*EXPORT_FIELDS).iterator(chunk_size=chunk_size)


def audit_event_text_batches(*, filters: AuditEventFilters, up_to_seq: int | None = None, select: Sequence[str],
                             batch_size: int | None = None) -> Iterator[list[tuple[Any, ...]]]:
    """PostgreSQL only: the SQL expressions in `select` over the filtered events, in sequence order, as lists of up to
    `batch_size` tuples (seq, *expressions), text as undecoded UTF-8 bytes (None for NULL).

    Read page by page, keyset on `seq` (each page one short statement on the seq index): memory stays constant and
    no snapshot, cursor or temporary file is held between pages. The events an export covers are committed and
    append-only, so the pages add up to one consistent read. A reader thread fetches the next page on this
    thread's database connection while the caller formats the current one (PostgreSQL builds the text meanwhile);
    the caller must not use the connection until the iterator is exhausted or closed."""
    queryset = audit_event_list(filters=filters)
    if up_to_seq is not None:
        queryset = queryset.filter(seq__lte=up_to_seq)
    names = [f"export_{i}" for i in range(len(select))]
    # `select` holds the exporters' own SQL expressions over this table's columns, never request data.
    annotated = {name: RawSQL(expression, ()) for name, expression in zip(names, select, strict=True)}  # noqa: S611
    sql, params = queryset.annotate(**annotated).values_list("seq", *names).query.sql_with_params()
    page_sql = (f"SELECT * FROM ({sql}) AS export_page "  # noqa: S608 - the ORM's query; its params stay separate
                "WHERE export_page.seq > %s ORDER BY export_page.seq LIMIT %s")
    connection.ensure_connection()
    pages = _text_pages(connection.connection, connection.wrap_database_errors, page_sql, tuple(params),
                        batch_size or EXPORT_BATCH_SIZE)
    return _read_ahead(pages)


def _text_pages(raw_connection: Any, wrap_errors: Any, page_sql: str, params: tuple[Any, ...],
                batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
    from psycopg2.extensions import BYTES, register_type

    after = 0
    while True:
        with wrap_errors, raw_connection.cursor() as cursor:  # errors raised as Django's DatabaseError classes
            register_type(BYTES, cursor)  # text and varchar as undecoded bytes, for this cursor only
            cursor.execute(page_sql, (*params, after, batch_size))
            rows = cursor.fetchall()
        if not rows:
            return
        after = rows[-1][0]
        yield rows
        if len(rows) < batch_size:
            return


_END = object()


def _read_ahead(pages: Iterator[list[tuple[Any, ...]]]) -> Iterator[list[tuple[Any, ...]]]:
    """Run `pages` one page ahead in a thread; errors are raised here, and closing this iterator early stops the
    thread (after the page it is reading) before the connection is used again."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, which raises it
            put(exc)

    reader = threading.Thread(target=read, name="audit-export-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def audit_event_get(*, seq: int) -> AuditEvent:
    return AuditEvent.objects.get(seq=seq)


def audit_events_for_object(*, object_type: str, object_id: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(object_type=object_type, object_id=object_id).order_by("seq"))


def audit_head() -> tuple[int, str]:
    """(seq, hash) of the newest committed event; (0, genesis) when the ledger is empty."""
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    return (last[0], last[1]) if last else (0, GENESIS_HASH)


def chain_check(rows: Iterable[Mapping[str, Any]], *, first_seq: int = 1,
                prev_hash: str = GENESIS_HASH) -> ChainVerification:
    """Walk rows in sequence order from `first_seq`, whose predecessor has `prev_hash`; report the first event that
    was altered, is missing or out of place. Shared by the database verifier and backup verification."""
    expected_seq, count = first_seq, 0
    head_seq: int | None = None
    for row in rows:
        seq = row["seq"]
        if seq != expected_seq:
            if seq > expected_seq:
                missing = f"#{expected_seq}" if seq == expected_seq + 1 else f"#{expected_seq}..#{seq - 1}"
                reason = f"sequence gap: expected #{expected_seq}, found #{seq} ({missing} missing)"
            else:
                reason = f"sequence out of order: expected #{expected_seq}, found #{seq} (reordered)"
            return ChainVerification(False, count, prev_hash, expected_seq, reason, head_seq)
        if row["prev_hash"] != prev_hash:
            reason = f"#{seq} does not follow #{seq - 1}: its prev_hash differs (reordered, or #{seq - 1} replaced)"
            return ChainVerification(False, count, prev_hash, seq, reason, head_seq)
        if event_hash(dict(row), prev_hash) != row["hash"]:
            return ChainVerification(False, count, prev_hash, seq, f"#{seq} content was altered (hash mismatch)",
                                     head_seq)
        prev_hash, expected_seq, count, head_seq = row["hash"], expected_seq + 1, count + 1, seq
    return ChainVerification(True, count, prev_hash, head_seq=head_seq)


def _stored_rows(chunk_size: int, *, seq_from: int = 1, seq_to: int | None = None) -> Iterator[dict[str, Any]]:
    queryset = AuditEvent.objects.filter(seq__gte=seq_from).order_by("seq")
    if seq_to is not None:
        queryset = queryset.filter(seq__lte=seq_to)
    for values in queryset.values_list(*EXPORT_FIELDS).iterator(chunk_size=chunk_size):
        yield dict(zip(EXPORT_FIELDS, values, strict=True))


def audit_chain_verify(*, anchor: tuple[int, str] | None = None, chunk_size: int = 5000) -> ChainVerification:
    """Verify the whole chain. `anchor` is a (seq, hash) head seen earlier (the last good verification): if that
    event is gone or different, the newest events were removed or rewritten, which the chain alone cannot show."""
    result = chain_check(_stored_rows(chunk_size))
    if not result.ok or anchor is None:
        return result
    anchor_seq, anchor_hash = anchor
    if result.count < anchor_seq:
        reason = (f"tail removed: the chain ends at #{result.count}, but #{anchor_seq} was the verified head "
                  f"earlier (#{result.count + 1}..#{anchor_seq} missing)")
        return ChainVerification(False, result.count, result.head_hash, result.count + 1, reason, result.head_seq)
    stored = AuditEvent.objects.filter(seq=anchor_seq).values_list("hash", flat=True).first()
    if stored != anchor_hash:
        reason = f"#{anchor_seq} differs from the head recorded by an earlier verification (chain rewritten)"
        return ChainVerification(False, result.count, result.head_hash, anchor_seq, reason, result.head_seq)
    return result


def audit_chain_verification_latest() -> AuditChainVerification | None:
    return AuditChainVerification.objects.order_by("-created_at", "-pk").first()


def audit_chain_anchor() -> tuple[int, str] | None:
    """The head of the newest successful verification, if any."""
    last_ok = (AuditChainVerification.objects.filter(ok=True, head_seq__isnull=False)
               .order_by("-created_at", "-pk").values_list("head_seq", "head_hash").first())
    return (last_ok[0], last_ok[1]) if last_ok else None


def audit_backup_last_seq() -> int:
    """The highest sequence number already in a backup (0 if none)."""
    last = AuditBackup.objects.order_by("-last_seq").values_list("last_seq", flat=True).first()
    return last or 0


def audit_events_to_back_up(*, first_seq: int) -> bool:
    """Whether anything but backup bookkeeping happened from `first_seq` on."""
    return AuditEvent.objects.filter(seq__gte=first_seq).exclude(action=BACKUP_ACTION).exists()


def audit_backups_recent(*, limit: int = 10) -> list[AuditBackup]:
    return list(AuditBackup.objects.order_by("-last_seq")[:limit])


@dataclass(frozen=True)
class BackupCheck:
    ok: bool
    first_seq: int
    last_seq: int
    count: int
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""


def audit_backup_verify(*, path: Path, key: str) -> BackupCheck:
    """Decrypt and authenticate a backup file, check its own chain, and compare every event with the database.
    Raises BackupError for a wrong key or a damaged file; returns a failed BackupCheck when the file is sound but
    the database no longer holds the same events."""
    manifest, rows = backup_file.read_backup(path, key=backup_file.parse_key(key))
    stored = _stored_rows(5000, seq_from=manifest.first_seq, seq_to=manifest.last_seq)
    mismatch: tuple[int, str] | None = None

    def compared() -> Iterator[dict[str, Any]]:
        nonlocal mismatch
        for row in rows:
            if mismatch is None:
                db_row = next(stored, None)
                if db_row is None or db_row["seq"] > row["seq"]:
                    mismatch = (row["seq"], f"#{row['seq']} is in the backup but missing from the database")
                elif db_row["seq"] < row["seq"]:
                    mismatch = (db_row["seq"], f"#{db_row['seq']} is in the database but not in the backup")
                elif canonical_json(db_row) != canonical_json({name: row[name] for name in EXPORT_FIELDS}):
                    mismatch = (row["seq"], f"#{row['seq']} in the database differs from the backup (altered)")
            yield row

    events = compared()
    own = chain_check(events, first_seq=manifest.first_seq, prev_hash=manifest.prev_hash)
    for _row in events:  # authenticate the rest of the file even when the chain check stopped early
        pass
    if not own.ok:
        raise backup_file.BackupError(f"{path.name}: the backup's own chain is broken: {own.reason}.",
                                      code="backup_corrupt")
    if own.count != manifest.count or own.head_hash != manifest.head_hash:
        raise backup_file.BackupError(
            f"{path.name}: holds {own.count} events ending at {own.head_hash[:12]}..., the manifest says "
            f"{manifest.count} ending at {manifest.head_hash[:12]}....", code="backup_corrupt")
    if mismatch is not None:
        return BackupCheck(False, manifest.first_seq, manifest.last_seq, own.count, own.head_hash, *mismatch)
    return BackupCheck(True, manifest.first_seq, manifest.last_seq, own.count, own.head_hash)


@dataclass(frozen=True)
class BackupStatus:
    """Whether the daily encrypted backup is on, and how recent the last one is. `state`: "on" (a backup within the
    last BACKUP_OVERDUE_AFTER, or nothing to back up yet), "overdue" (on, but the last backup is older), "off" (no
    AUDIT_BACKUP_KEY: the daily job is not scheduled)."""

    state: str
    detail: str
    last_backup_at: datetime | None
    last_seq: int


BACKUP_OVERDUE_AFTER = timedelta(hours=26)  # the job runs every 24 h; two hours of slack for a queued worker


def audit_backup_status(*, key: str, now: datetime | None = None) -> BackupStatus:
    last = AuditBackup.objects.order_by("-last_seq").values_list("created_at", "last_seq").first()
    last_at, last_seq = (last[0], last[1]) if last else (None, 0)
    if not key:
        return BackupStatus("off", "switched off: AUDIT_BACKUP_KEY is not set, so no daily encrypted backup runs "
                                   "(`manage.py backup_audit --generate-key` makes one)", last_at, last_seq)
    now = now or timezone.now()
    if last_at is not None and now - last_at > BACKUP_OVERDUE_AFTER and audit_events_to_back_up(first_seq=last_seq + 1):
        return BackupStatus("overdue", f"on, but the last backup is from {last_at:%Y-%m-%d %H:%M} UTC: check the "
                                       "Celery worker and beat", last_at, last_seq)
    if last_at is None:
        return BackupStatus("on", "on: daily, no backup written yet", None, 0)
    return BackupStatus("on", f"on: daily, last backup {last_at:%Y-%m-%d %H:%M} UTC up to event {last_seq}",
                        last_at, last_seq)
