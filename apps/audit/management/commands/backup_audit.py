from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.audit.backup import generate_key
from apps.audit.selectors import audit_backup_last_seq, audit_events_to_back_up, audit_head
from apps.audit.services import audit_backup_create
from apps.core.exceptions import ApplicationError


class Command(BaseCommand):
    help = ("Write the audit events not yet backed up to one file, JSONL encrypted with AES-256-GCM under "
            "AUDIT_BACKUP_KEY (base64 of 32 random bytes), with the chain head in its manifest. Safe to rerun: "
            "nothing new, nothing written. Use --generate-key to print a new key.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dir", default="", help="A local folder to write to (default: the audit_backups storage: "
                                 "AUDIT_BACKUP_DIR, or the bucket when ARTIFACT_S3_BUCKET is set)")
        parser.add_argument("--full", action="store_true", help="Back up every event from #1, not only new ones")
        parser.add_argument("--generate-key", action="store_true",
                            help="Print a new random key for AUDIT_BACKUP_KEY and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["generate_key"]:
            self.stdout.write(generate_key())
            return
        directory = Path(options["dir"]) if options["dir"] else None
        where = str(directory) if directory is not None else "the audit_backups storage"
        head_seq, _ = audit_head()
        first = 1 if options["full"] else audit_backup_last_seq() + 1
        if head_seq < first or not (options["full"] or audit_events_to_back_up(first_seq=first)):
            self.stdout.write(f"Nothing to back up: every event up to #{head_seq} is in a backup already "
                              "(or is the last backup's own record, which goes into the next one).")
            return
        self.stdout.write(f"Backing up events #{first}..#{head_seq} (or more, if new ones commit meanwhile) "
                          f"to {where} ...")
        try:
            backup = audit_backup_create(actor=Actor(type="system", id="backup_audit"), key=settings.AUDIT_BACKUP_KEY,
                                         directory=directory, full=options["full"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if backup is None:
            self.stdout.write("Nothing to back up.")
            return
        self.stdout.write(self.style.SUCCESS(
            f"Wrote {backup.file_name} to {where}: {backup.event_count} events "
            f"#{backup.first_seq}..#{backup.last_seq}, head {backup.head_hash}, key id {backup.key_id}, "
            f"sha256 {backup.file_sha256}"))
