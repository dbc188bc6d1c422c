import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from apps.audit import backup as backup_file
from apps.audit.actors import Actor
from apps.audit.models import AuditBackup, AuditEvent
from apps.audit.selectors import audit_backup_verify, audit_chain_verify
from apps.audit.services import audit_backup_create, audit_backup_restore
from apps.audit.testing import audit_triggers_disabled
from apps.core.exceptions import ApplicationError

ACTOR = Actor(type="system", id="tests")


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl.aesgcm"))


def _wipe_ledger() -> None:
    """Lose the whole audit table, as after a disaster (only possible with the triggers off)."""
    with audit_triggers_disabled(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent")


def test_backup_then_restore_verify_round_trip(record_events: Callable[..., list[AuditEvent]],
                                              backup_key: str) -> None:
    events = record_events(7)

    out = _run("backup_audit")

    (path,) = _files(settings.AUDIT_BACKUP_DIR)
    assert f"7 events #1..#7, head {events[-1].hash}" in out
    manifest = json.loads(path.with_name(path.name + ".manifest.json").read_text())
    assert (manifest["first_seq"], manifest["last_seq"], manifest["head_hash"]) == (1, 7, events[-1].hash)
    assert b"p-3" not in path.read_bytes()  # the content is encrypted
    backup_event = AuditEvent.objects.get(action="audit.backup")
    assert backup_event.seq == 8 and backup_event.output["file"] == path.name

    verified = _run("restore_audit_backup", "--verify", str(path))

    assert f"OK {path.name}: 7 events #1..#7 match the database, head {events[-1].hash}" in verified


def test_backups_are_incremental_and_safe_to_rerun(record_events: Callable[..., list[AuditEvent]],
                                                   backup_key: str) -> None:
    record_events(3)
    _run("backup_audit")  # #1..#3, then its own event #4
    record_events(2)      # #5, #6

    _run("backup_audit")

    first, second = _files(settings.AUDIT_BACKUP_DIR)
    assert (backup_file.read_manifest(second).first_seq, backup_file.read_manifest(second).last_seq) == (4, 6)
    assert backup_file.read_manifest(second).prev_hash == backup_file.read_manifest(first).head_hash
    assert list(AuditBackup.objects.order_by("first_seq").values_list("first_seq", "last_seq")) == [(1, 3), (4, 6)]
    # Only the second backup's own event (#7) is new now: it waits for the next real backup.
    assert "Nothing to back up" in _run("backup_audit")
    record_events(1)  # #8
    _run("backup_audit")
    assert backup_file.read_manifest(_files(settings.AUDIT_BACKUP_DIR)[-1]).first_seq == 7


def test_wrong_key_fails_loudly_and_restores_nothing(record_events: Callable[..., list[AuditEvent]],
                                                     backup_key: str, other_key: str, settings: Any) -> None:
    record_events(4)
    _run("backup_audit")
    (path,) = _files(settings.AUDIT_BACKUP_DIR)
    _wipe_ledger()
    settings.AUDIT_BACKUP_KEY = other_key

    with pytest.raises(CommandError, match="wrong key; nothing was restored"):
        _run("restore_audit_backup", str(path))
    with pytest.raises(CommandError, match="wrong key"):
        _run("restore_audit_backup", "--verify", str(path))

    assert AuditEvent.objects.count() == 0


def test_a_key_with_the_right_id_but_wrong_bytes_still_fails_authentication(
        record_events: Callable[..., list[AuditEvent]], backup_key: str, other_key: str) -> None:
    record_events(2)
    backup = audit_backup_create(actor=ACTOR, key=backup_key, directory=settings.AUDIT_BACKUP_DIR)
    assert backup is not None
    path = settings.AUDIT_BACKUP_DIR / backup.file_name
    # Forge the manifest's key id to the other key's: the header is authenticated, so every chunk now fails.
    data = path.read_bytes()
    real_id = backup_file.key_id(backup_file.parse_key(backup_key))
    forged_id = backup_file.key_id(backup_file.parse_key(other_key))
    path.write_bytes(data.replace(real_id.encode(), forged_id.encode(), 1))

    with pytest.raises(ApplicationError, match="chunk 1 of 1 failed authentication"):
        audit_backup_verify(path=path, key=other_key)


def test_a_corrupted_file_fails_loudly_and_restores_nothing(record_events: Callable[..., list[AuditEvent]],
                                                            backup_key: str) -> None:
    record_events(12)
    _run("backup_audit")
    (path,) = _files(settings.AUDIT_BACKUP_DIR)
    _wipe_ledger()
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01  # one bit inside the last chunk's ciphertext
    path.write_bytes(bytes(data))

    with pytest.raises(CommandError, match="failed authentication: the key is wrong or the file was corrupted"):
        _run("restore_audit_backup", str(path))

    assert AuditEvent.objects.count() == 0


def test_a_truncated_file_fails_and_restores_nothing(record_events: Callable[..., list[AuditEvent]],
                                                     backup_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_file, "CHUNK_EVENTS", 3)
    record_events(10)
    backup = audit_backup_create(actor=ACTOR, key=backup_key, directory=settings.AUDIT_BACKUP_DIR)
    assert backup is not None and backup_file.read_manifest(settings.AUDIT_BACKUP_DIR / backup.file_name).chunks == 4
    path = settings.AUDIT_BACKUP_DIR / backup.file_name
    _wipe_ledger()
    data = path.read_bytes()
    # Drop the whole last chunk: every remaining chunk authenticates, but the file is short.
    cut = _chunk_offsets(data)[-1]
    path.write_bytes(data[:cut])

    with pytest.raises(ApplicationError, match=r"ends inside chunk 4 \(truncated or corrupted\); nothing was restored"):
        audit_backup_restore(path=path, key=backup_key)

    assert AuditEvent.objects.count() == 0


def _chunk_offsets(data: bytes) -> list[int]:
    import struct

    offset = data.index(b"\n", len(backup_file.MAGIC)) + 1
    offsets = []
    while offset < len(data):
        offsets.append(offset)
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        offset += 4 + 12 + length
    return offsets


def test_restore_rebuilds_a_lost_ledger_in_order(record_events: Callable[..., list[AuditEvent]],
                                                 backup_key: str) -> None:
    record_events(3)
    _run("backup_audit")
    record_events(2)
    _run("backup_audit")
    first, second = _files(settings.AUDIT_BACKUP_DIR)
    original = list(AuditEvent.objects.order_by("seq").values_list("seq", "hash"))[:6]
    _wipe_ledger()

    with pytest.raises(CommandError, match="does not continue it; restore the backups in order"):
        _run("restore_audit_backup", str(second))
    assert AuditEvent.objects.count() == 0  # a refused restore records nothing: #1 stays free for the backup
    out = _run("restore_audit_backup", "--actor-name", "ops", str(first), str(second))

    assert "Restored 3 events #1..#3" in out and "Restored 3 events #4..#6" in out
    assert "Recorded the restore as audit event #7 (audit.restore)" in out
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "hash"))[:6] == original
    restore = AuditEvent.objects.get(seq=7)
    assert (restore.action, restore.actor_type, restore.actor_id) == ("audit.restore", "system",
                                                                      "restore_audit_backup:ops")
    assert restore.prev_hash == original[-1][1] and restore.object_id == "1-6"
    assert restore.inputs == {"files": [first.name, second.name]}
    assert [(r["file"], r["first_seq"], r["last_seq"], r["events"]) for r in restore.output["restored"]] == [
        (first.name, 1, 3, 3), (second.name, 4, 6, 3)]
    assert audit_chain_verify().ok
    again = _run("restore_audit_backup", str(first))
    assert "Already present and identical" in again and "Recorded" not in again
    assert AuditEvent.objects.count() == 7  # nothing restored, nothing recorded


def test_a_restore_run_is_all_or_nothing_and_a_corrected_run_then_succeeds(
        record_events: Callable[..., list[AuditEvent]], backup_key: str) -> None:
    record_events(3)
    _run("backup_audit")
    record_events(2)
    _run("backup_audit")
    first, second = _files(settings.AUDIT_BACKUP_DIR)
    good_second = second.read_bytes()
    _wipe_ledger()
    damaged = bytearray(good_second)
    damaged[-40] ^= 0x01
    second.write_bytes(bytes(damaged))

    with pytest.raises(CommandError, match="failed authentication"):
        _run("restore_audit_backup", str(first), str(second))
    assert AuditEvent.objects.count() == 0  # the first file's events rolled back with the run

    second.write_bytes(good_second)
    out = _run("restore_audit_backup", str(first), str(second))

    assert "Recorded the restore as audit event #7" in out
    assert AuditEvent.objects.filter(action="audit.restore").count() == 1 and audit_chain_verify().ok


def test_verify_names_an_event_altered_in_the_database_after_the_backup(
        record_events: Callable[..., list[AuditEvent]], backup_key: str) -> None:
    record_events(5)
    _run("backup_audit")
    (path,) = _files(settings.AUDIT_BACKUP_DIR)
    with audit_triggers_disabled(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET patient_ref = 'p-x' WHERE seq = 2")

    out = io.StringIO()
    with pytest.raises(CommandError, match="does not match"):
        call_command("restore_audit_backup", "--verify", str(path), stdout=out)

    assert f"MISMATCH {path.name} at #2: #2 in the database differs from the backup (altered)" in out.getvalue()


def test_backup_without_a_key_says_how_to_make_one(record_events: Callable[..., list[AuditEvent]],
                                                   settings: Any, tmp_path: Path) -> None:
    record_events(1)
    settings.AUDIT_BACKUP_KEY = ""
    settings.AUDIT_BACKUP_DIR = tmp_path

    with pytest.raises(CommandError, match="AUDIT_BACKUP_KEY is not set.*--generate-key"):
        _run("backup_audit")
    settings.AUDIT_BACKUP_KEY = "c2hvcnQ="  # "short": 5 bytes
    with pytest.raises(CommandError, match="decodes to 5 bytes; AES-256 needs exactly 32"):
        _run("backup_audit")

    assert list(tmp_path.iterdir()) == [] and not AuditBackup.objects.exists()


def test_generated_keys_are_usable(db: None) -> None:
    key = _run("backup_audit", "--generate-key").strip()

    assert len(backup_file.parse_key(key)) == 32


def test_the_daily_task_backs_up_new_events(record_events: Callable[..., list[AuditEvent]], backup_key: str) -> None:
    from apps.audit.tasks import audit_backup_task

    record_events(2)

    result = audit_backup_task.apply().get()

    assert result["backed_up"] == 2 and (settings.AUDIT_BACKUP_DIR / result["file"]).is_file()
    assert AuditEvent.objects.get(action="audit.backup").actor_id == "audit.backup task"
