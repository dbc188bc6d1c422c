"""Where registered model files and audit backups are kept: Django storages ``models`` and ``audit_backups``
(clinpredict/settings/base.py). The embedded default is a folder on local disk (MODEL_STORAGE_DIR,
AUDIT_BACKUP_DIR); with ARTIFACT_S3_BUCKET set it is an S3-compatible bucket through django-storages and boto3, so
every replica serves the same files without a shared disk.

Stored files are immutable: ``save_new`` refuses a name that exists instead of overwriting it or picking another
name. Whoever reads a file checks its sha256 on the bytes that came back (apps/registry/artifacts.py, the audit
backup's record)."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

from .exceptions import ApplicationError

__all__ = ["SettingDirStorage", "StoredFileExists", "audit_backup_storage", "model_storage", "read_stored",
           "remove_stored", "save_new"]


class StoredFileExists(ApplicationError):
    """The name is taken: stored files are never overwritten."""


class SettingDirStorage(FileSystemStorage):
    """A FileSystemStorage rooted at the folder a setting names (MODEL_STORAGE_DIR, AUDIT_BACKUP_DIR), read each time
    it is used, so changing the setting (an operator's environment, a test's override) moves the storage with it.
    Files are written to a temporary name in the same folder, synced, then linked to their final name, so a reader
    never sees half a file and an existing file is never replaced."""

    def __init__(self, setting: str = "MODEL_STORAGE_DIR", directory: str | Path | None = None,
                 **kwargs: Any) -> None:
        self.setting = setting
        self.directory = directory  # a fixed folder instead of the setting (`backup_audit --dir`)
        super().__init__(**kwargs)

    @property  # type: ignore[override]
    def base_location(self) -> str:
        return str(self.directory if self.directory is not None else getattr(settings, self.setting))

    @property  # type: ignore[override]
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    def _save(self, name: str, content: Any) -> str:
        full = Path(self.path(name))
        full.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=full.parent, prefix=f".{full.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in content.chunks():
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(tmp, self.file_permissions_mode)
            try:
                os.link(tmp, full)  # fails if the name exists: never replaces a file
            except FileExistsError as exc:
                raise StoredFileExists(f"{name} exists in storage already; stored files are never replaced.",
                                       code="stored_file_exists") from exc
            except OSError:  # a volume without hard links (some network file systems): check, then rename
                if full.exists():
                    raise StoredFileExists(f"{name} exists in storage already; stored files are never replaced.",
                                           code="stored_file_exists") from None
                os.rename(tmp, full)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return name


def model_storage() -> Storage:
    return storages["models"]


def audit_backup_storage() -> Storage:
    return storages["audit_backups"]


def save_new(storage: Storage, name: str, content: bytes | IO[bytes]) -> str:
    """Store `content` under exactly `name`; refuses (StoredFileExists) when the name is taken."""
    if storage.exists(name):
        raise StoredFileExists(f"{name} exists in storage already; stored files are never replaced.",
                               code="stored_file_exists")
    file = ContentFile(content) if isinstance(content, bytes) else File(content, name=os.path.basename(name))
    saved = storage.save(name, file)
    if saved != name:  # a backend that picks another name when the name was taken meanwhile
        storage.delete(saved)
        raise StoredFileExists(f"{name} was stored by someone else meanwhile; nothing was replaced.",
                               code="stored_file_exists")
    return saved


def read_stored(storage: Storage, name: str) -> bytes:
    """The whole file, as the storage returns it (OSError / FileNotFoundError when missing)."""
    with storage.open(name, "rb") as handle:
        data: bytes = handle.read()
    return data


def remove_stored(storage: Storage, names: list[str], folder: str = "") -> None:
    """Delete `names` (best effort), and on local disk the then empty `folder` too."""
    for name in names:
        try:
            storage.delete(name)
        except Exception:  # noqa: BLE001, S110 - cleanup after a failure that is being raised already
            pass
    if folder and isinstance(storage, FileSystemStorage):
        shutil.rmtree(storage.path(folder), ignore_errors=True)
