import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.backup import read_manifest
from apps.audit.selectors import audit_backup_verify
from apps.audit.services import audit_backup_restore
from apps.core.exceptions import ApplicationError
from apps.core.storage import audit_backup_storage, read_stored


class Command(BaseCommand):
    help = ("Decrypt audit backup files made by backup_audit (key: AUDIT_BACKUP_KEY). With --verify, authenticate "
            "each file, check its chain and compare every event with the database, changing nothing. Without it, "
            "append the file's events to a database whose chain ends where the file begins (restore files in "
            "order); a wrong key or a damaged file fails and restores nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=str,
                            help="Local backup files, or names of backups in the audit_backups storage "
                                 "(AUDIT_BACKUP_DIR or the bucket), e.g. audit-<first>-<last>-<time>.jsonl.aesgcm")
        parser.add_argument("--verify", action="store_true", help="Only verify against the database")

    def handle(self, *args: Any, **options: Any) -> None:
        key = settings.AUDIT_BACKUP_KEY
        failed = False
        with tempfile.TemporaryDirectory(prefix="clinpredict-restore-") as tmp:
            for given in options["files"]:
                failed = self._one(self._local(given, Path(tmp)), key, verify=options["verify"]) or failed
        if failed:
            raise CommandError("the database does not match the backup", returncode=1)

    @staticmethod
    def _local(given: str, tmp: Path) -> Path:
        """A local file as given; otherwise the stored backup of that name, downloaded into `tmp` under its own name
        (the backup authenticates every chunk with AES-GCM, so a download altered in transit or in the bucket fails)."""
        path = Path(given)
        if path.is_file():
            return path
        storage = audit_backup_storage()
        if Path(given).name != given or not storage.exists(given):
            raise CommandError(f"{given}: no such file, and no backup of that name in the audit_backups storage")
        local = tmp / given
        local.write_bytes(read_stored(storage, given))
        return local

    def _one(self, path: Path, key: str, *, verify: bool) -> bool:
        """Verify or restore one file; True when verification found a mismatch."""
        failed = False
        try:
            manifest = read_manifest(path)
            span = f"#{manifest.first_seq}..#{manifest.last_seq} ({manifest.count} events)"
            if verify:
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
        return failed
