import getpass
import logging
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.actors import Actor
from apps.audit.backup import read_manifest
from apps.audit.selectors import audit_backup_verify
from apps.audit.services import audit_backups_restore
from apps.core.exceptions import ApplicationError
from apps.core.storage import audit_backup_storage, read_stored

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = ("Decrypt audit backup files made by backup_audit (key: AUDIT_BACKUP_KEY). With --verify, authenticate "
            "each file, check its chain and compare every event with the database, changing nothing. Without it, "
            "append the files' events to a database whose chain ends where the first file begins (give every file, "
            "in order, in one run): all files or none are restored (a wrong key, a damaged file or a gap restores "
            "nothing), and the restore is recorded as one audit.restore event after the last restored event.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=str,
                            help="Local backup files, or names of backups in the audit_backups storage "
                                 "(AUDIT_BACKUP_DIR or the bucket), e.g. audit-<first>-<last>-<time>.jsonl.aesgcm")
        parser.add_argument("--verify", action="store_true", help="Only verify against the database")
        parser.add_argument("--actor-name", default="", help="Who runs the restore (recorded; default: OS user)")

    def handle(self, *args: Any, **options: Any) -> None:
        key = settings.AUDIT_BACKUP_KEY
        failed = False
        with tempfile.TemporaryDirectory(prefix="clinpredict-restore-") as tmp:
            paths = [self._local(given, Path(tmp)) for given in options["files"]]
            if not options["verify"]:
                who = options["actor_name"] or getpass.getuser()
                self._restore(paths, key, Actor(type="system", id=f"restore_audit_backup:{who}"[:150]))
                return
            for path in paths:
                failed = self._verify(path, key) or failed
        if failed:
            raise CommandError("the database does not match the backup", returncode=1)

    def _restore(self, paths: list[Path], key: str, actor: Actor) -> None:
        try:
            for path in paths:
                manifest = read_manifest(path)
                self.stdout.write(f"Restoring {path.name}: #{manifest.first_seq}..#{manifest.last_seq} "
                                  f"({manifest.count} events) ...")
            run = audit_backups_restore(paths=paths, key=key, actor=actor)
        except ApplicationError as exc:
            # Not an audit event: it would take the sequence number the backup must fill. Logged instead.
            logger.warning("audit restore failed; nothing was restored", extra={"code": exc.code})
            raise CommandError(exc.message) from exc
        for path, result in zip(paths, run.files, strict=True):
            if result.already_present:
                self.stdout.write(f"Already present and identical: #{result.first_seq}..#{result.last_seq}")
            else:
                self.stdout.write(self.style.SUCCESS(
                    f"Restored {result.restored} events #{result.first_seq}..#{result.last_seq} from {path.name}, "
                    f"head {result.head_hash}"))
        if run.event_seq is not None:
            self.stdout.write(f"Recorded the restore as audit event #{run.event_seq} (audit.restore).")

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

    def _verify(self, path: Path, key: str) -> bool:
        """Verify one file; True when verification found a mismatch."""
        try:
            manifest = read_manifest(path)
            span = f"#{manifest.first_seq}..#{manifest.last_seq} ({manifest.count} events)"
            self.stdout.write(f"Verifying {path.name}: {span} against the database ...")
            check = audit_backup_verify(path=path, key=key)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if check.ok:
            self.stdout.write(self.style.SUCCESS(
                f"OK {path.name}: {check.count} events #{check.first_seq}..#{check.last_seq} match the "
                f"database, head {check.head_hash}"))
            return False
        self.stdout.write(self.style.ERROR(f"MISMATCH {path.name} at #{check.broken_seq}: {check.reason}"))
        return True
