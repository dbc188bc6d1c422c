"""The embedded default: registered files and audit backups on local disk (apps/core/storage.py)."""

from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile


def test_the_local_storages_follow_their_settings(settings: Any, tmp_path: Path) -> None:
    from apps.core.storage import SettingDirStorage, audit_backup_storage, model_storage, save_new

    assert isinstance(model_storage(), SettingDirStorage) and isinstance(audit_backup_storage(), SettingDirStorage)
    settings.MODEL_STORAGE_DIR = tmp_path / "operator-models"
    settings.AUDIT_BACKUP_DIR = tmp_path / "operator-backups"

    save_new(model_storage(), "diabetes/abc/model.onnx", b"onnx")
    save_new(audit_backup_storage(), "audit-1.jsonl.aesgcm", b"backup")

    assert (tmp_path / "operator-models" / "diabetes" / "abc" / "model.onnx").read_bytes() == b"onnx"
    assert (tmp_path / "operator-backups" / "audit-1.jsonl.aesgcm").read_bytes() == b"backup"


def test_a_stored_file_is_never_replaced_and_no_partial_file_is_left(settings: Any, tmp_path: Path) -> None:
    from apps.core.storage import StoredFileExists, model_storage, read_stored, save_new

    settings.MODEL_STORAGE_DIR = tmp_path
    save_new(model_storage(), "diabetes/abc/model.onnx", b"first")

    with pytest.raises(StoredFileExists):
        save_new(model_storage(), "diabetes/abc/model.onnx", b"second")
    with pytest.raises(StoredFileExists):  # past the exists() check too: the link refuses an existing name
        model_storage()._save("diabetes/abc/model.onnx", ContentFile(b"third"))

    assert read_stored(model_storage(), "diabetes/abc/model.onnx") == b"first"
    assert sorted(p.name for p in (tmp_path / "diabetes" / "abc").iterdir()) == ["model.onnx"]
