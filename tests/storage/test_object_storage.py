"""Registered model files and audit backups in an S3-compatible bucket (apps/core/storage.py), against a real S3-API
server process (moto's standalone server, tests/storage/conftest.py): registration uploads every file and keeps
nothing on local disk, a file altered in the bucket is refused on the bytes read back, a replica with an empty disk
serves the model registered by another, and an audit backup goes to the bucket and verifies from there."""

import base64
import hashlib
import io
import json
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from storages.backends.s3 import S3Storage

from apps.audit.actors import Actor

ACTOR = Actor(type="system", id="object-storage tests")
BUCKET = "clinpredict-artifacts-test"


def _local_files(folder: Path) -> list[Path]:
    return sorted(path for path in Path(folder).rglob("*") if path.is_file()) if Path(folder).exists() else []


def _run_files(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in _local_files(folder))


@pytest.mark.django_db
def test_registration_puts_every_artifact_in_the_bucket_and_nothing_on_local_disk(
        s3_server: Any, s3_prefix: str, trained_dir: Path, settings: Any) -> None:
    from django.core.files.storage import storages

    from apps.registry.services import model_version_register

    assert isinstance(storages["models"], S3Storage)

    version = model_version_register(source_dir=trained_dir, actor=ACTOR).version

    folder = f"{s3_prefix}/models/{version.storage_path}/"
    stored = [key.removeprefix(folder) for key in s3_server.keys(folder)]
    assert stored == _run_files(trained_dir)
    assert set(version.artifacts) <= set(stored)
    body = s3_server.client().get_object(Bucket=BUCKET, Key=f"{folder}model.onnx")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == version.onnx_sha256
    assert _local_files(settings.MODEL_STORAGE_DIR) == []


@pytest.mark.django_db
def test_an_object_altered_in_the_bucket_is_refused_on_the_bytes_read_back(
        s3_server: Any, s3_prefix: str, trained_dir: Path) -> None:
    from apps.registry.artifacts import ModelIntegrityError, artifact_problems, read_verified
    from apps.registry.services import model_version_register

    version = model_version_register(source_dir=trained_dir, actor=ACTOR).version
    assert read_verified(version, "model.onnx")  # intact: served
    key = f"{s3_prefix}/models/{version.storage_path}/model.onnx"

    s3_server.client().put_object(Bucket=BUCKET, Key=key, Body=b"not the registered model")

    with pytest.raises(ModelIntegrityError, match="does not match its registered sha256; it will not be served"):
        read_verified(version, "model.onnx")
    assert artifact_problems(version) == ["model.onnx does not match its registered sha256"]

    s3_server.client().delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(ModelIntegrityError, match="model.onnx of .* is missing; it will not be served"):
        read_verified(version, "model.onnx")


@pytest.mark.django_db
def test_stored_files_are_never_replaced(s3_server: Any, s3_prefix: str) -> None:
    from apps.core.storage import StoredFileExists, model_storage, read_stored, save_new

    storage = model_storage()
    save_new(storage, "diabetes/fixed/model.onnx", b"first")

    with pytest.raises(StoredFileExists):
        save_new(storage, "diabetes/fixed/model.onnx", b"second")
    assert read_stored(storage, "diabetes/fixed/model.onnx") == b"first"
    assert s3_server.keys(f"{s3_prefix}/models/") == [f"{s3_prefix}/models/diabetes/fixed/model.onnx"]


@pytest.mark.django_db
def test_a_failed_registration_leaves_nothing_in_the_bucket(
        s3_server: Any, s3_prefix: str, model_dir_copy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.core.exceptions import ApplicationError
    from apps.registry import services

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ApplicationError("the database refused", code="test")

    monkeypatch.setattr(services, "_create_version", fail)

    with pytest.raises(ApplicationError, match="the database refused"):
        services.model_version_register(source_dir=model_dir_copy(), actor=ACTOR)
    assert s3_server.keys(f"{s3_prefix}/") == []


@pytest.mark.django_db
def test_an_audit_backup_goes_to_the_bucket_and_verifies_from_there(
        s3_server: Any, s3_prefix: str, settings: Any, tmp_path: Path) -> None:
    from apps.audit.models import AuditBackup
    from apps.audit.services import audit_backup_create, audit_event_record_standalone

    settings.AUDIT_BACKUP_KEY = base64.b64encode(bytes(range(32))).decode()
    settings.AUDIT_BACKUP_DIR = tmp_path / "audit-backups"
    for i in range(3):
        audit_event_record_standalone(actor=ACTOR, action="test.event", inputs={"i": i})

    backup = audit_backup_create(actor=ACTOR, key=settings.AUDIT_BACKUP_KEY)

    assert backup is not None and AuditBackup.objects.get().file_name == backup.file_name
    folder = f"{s3_prefix}/audit-backups/"
    assert s3_server.keys(folder) == [f"{folder}{backup.file_name}", f"{folder}{backup.file_name}.manifest.json"]
    body = s3_server.client().get_object(Bucket=BUCKET, Key=f"{folder}{backup.file_name}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == backup.file_sha256
    assert _local_files(settings.AUDIT_BACKUP_DIR) == []

    out = io.StringIO()
    call_command("restore_audit_backup", backup.file_name, "--verify", stdout=out)
    assert f"OK {backup.file_name}: 3 events #1..#3 match the database" in out.getvalue()

    # The command still takes a local file, e.g. one copied out of the bucket by hand.
    local = tmp_path / backup.file_name
    local.write_bytes(body)
    out = io.StringIO()
    call_command("restore_audit_backup", str(local), "--verify", stdout=out)
    assert f"OK {backup.file_name}: 3 events" in out.getvalue()


# --- acceptance: register on replica A, predict on replica B with an empty disk ----------------------------------

TOKEN = "object-storage-test-token-0123456789"  # noqa: S105 - a test credential in a throwaway database
BODY = json.dumps({"use_case": "diabetes", "features": {
    "pregnancies": 2, "glucose": {"value": 7.9, "unit": "mmol/L"}, "blood_pressure": 72, "skin_thickness": 29,
    "insulin": None, "bmi": 33.6, "pedigree": 0.627, "age": 50}}).encode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_replica_b_with_an_empty_disk_serves_the_model_replica_a_registered(
        s3_server: Any, s3_prefix: str, trained_dir: Path, settings: Any, tmp_path: Path, servers: Any,
        app_role_database_url: str) -> None:
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application

    from apps.predictions.models import Prediction
    from apps.registry.services import model_version_promote, model_version_register

    # Replica A: this process, with a local model folder of its own that must stay empty.
    version = model_version_register(source_dir=trained_dir, actor=ACTOR).version
    model_version_promote(version_id=version.pk, actor=ACTOR, reason="object storage acceptance")
    assert _local_files(settings.MODEL_STORAGE_DIR) == []
    app = Application.objects.create(name="object storage", client_type=Application.CLIENT_CONFIDENTIAL,
                                     authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    AccessToken.objects.create(application=app, token=TOKEN, scope="predictions:write",
                               expires=timezone.now() + timedelta(hours=1))

    # Replica B: production gunicorn on a fresh, empty var dir, pointed at the same bucket and prefix.
    var_b = tmp_path / "replica-b" / "var"
    var_b.mkdir(parents=True)
    with servers.production_gunicorn(tmp_path / "replica-b", workers=1, env={
            "DATABASE_URL": app_role_database_url, "CLINPREDICT_VAR_DIR": str(var_b),
            "MODEL_STORAGE_DIR": str(var_b / "models"), "AUDIT_BACKUP_DIR": str(var_b / "audit-backups"),
            "CACHE_URL": "redis://127.0.0.1:6379/14", "CACHE_KEY_PREFIX": f"object-storage-{uuid.uuid4().hex}",
            **s3_server.env(s3_prefix)}) as replica_b:
        request = urllib.request.Request(  # noqa: S310 - 127.0.0.1 only
            f"{replica_b.base}/api/v1/predictions", data=BODY, method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                status, answer = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            pytest.fail(f"replica B answered {exc.code}: {exc.read()[:500]!r}; gunicorn: {replica_b.log_tail()}")

    assert status == 201, answer
    assert answer["model_version"] == version.label
    assert answer["model_sha256"] == version.onnx_sha256
    assert Prediction.objects.get(pk=answer["id"]).model_sha256 == version.onnx_sha256
    model_files = [path for path in _local_files(var_b) if path.suffix in {".onnx", ".joblib", ".ubj", ".json"}
                   and "models" in path.parts]
    assert model_files == [] and not (var_b / "models").exists()
