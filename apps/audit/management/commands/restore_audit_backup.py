from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.backup import read_manifest
from apps.audit.selectors import audit_backup_verify
from apps.audit.services import audit_backup_restore
from apps.core.exceptions import ApplicationError


class Command(BaseCommand):
    help = ("Decrypt audit backup files made by backup_audit (key: AUDIT_BACKUP_KEY). With --verify, authenticate "
            "each file, check its chain and compare every event with the database, changing nothing. Without it, "
            "append the file's events to a database whose chain ends where the file begins (restore files in "
            "order); a wrong key or a damaged file fails and restores nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument("--verify", action="store_true", help="Only verify against the database")

    def handle(self, *args: Any, **options: Any) -> None:
        key = settings.AUDIT_BACKUP_KEY
        failed = False
        for path in options["files"]:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
            try:
                manifest = read_manifest(path)
                span = f"#{manifest.first_seq}..#{manifest.last_seq} ({manifest.count} events)"
                if options["verify"]:
                    self.stdout.write(f"Verifying {path.name}: {span} against the database ...")
                    check = audit_backup_verify(path=path, key=key)
                    if check.ok:
                        self.stdout.write(self.style.SUCCESS(
                            f"OK {path.name}: {check.count} events #{check.first_seq}..#{check.last_seq} match the "
                            f"database, head {check.head_hash}"))
                    else:
                        failed = True
                        self.stdout.write(self.style.ERROR(f"MISMATCH {path.name} at #{check.broken_seq}: "
                                                           f"{check.reason}"))
                else:
                    self.stdout.write(f"Restoring {path.name}: {span} ...")
                    result = audit_backup_restore(path=path, key=key)
                    if result.already_present:
                        self.stdout.write(f"Already present and identical: #{result.first_seq}..#{result.last_seq}")
                    else:
                        self.stdout.write(self.style.SUCCESS(
                            f"Restored {result.restored} events #{result.first_seq}..#{result.last_seq}, "
                            f"head {result.head_hash}"))
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
        if failed:
            raise CommandError("the database does not match the backup", returncode=1)
