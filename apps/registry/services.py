"""Writes to the model registry: registration (with artifact verification) and promotion. Each is audited."""

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import audit_event_record
from apps.core.exceptions import ApplicationError

from .models import ModelVersion

REQUIRED_MANIFEST_KEYS = (
    "use_case",
    "model_type",
    "created_at",
    "dataset_sha256",
    "split_sha256",
    "seed",
    "threshold",
    "features",
    "metrics",
    "onnx_parity_max_abs_diff",
    "artifacts",
    "versions",
    "spec",
    "feature_order",
    "input_name",
    "output_name",
)
REQUIRED_ARTIFACTS = ("model.onnx", "model.joblib")
PARITY_LIMIT = 1e-5


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Registration:
    version: ModelVersion
    created: bool


def _read_manifest(source_dir: Path) -> dict[str, Any]:
    path = source_dir / "manifest.json"
    if not path.is_file():
        raise ApplicationError(f"{source_dir} has no manifest.json; pass the output folder of `ml train`.",
                               code="manifest_missing")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ApplicationError(f"manifest.json is not valid JSON: {exc}", code="manifest_invalid") from exc
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ApplicationError(f"manifest.json is incomplete; missing keys: {', '.join(missing)}",
                               code="manifest_incomplete")
    return manifest


def _verify_artifacts(source_dir: Path, manifest: dict[str, Any]) -> None:
    artifacts = manifest["artifacts"]
    for name in REQUIRED_ARTIFACTS:
        if name not in artifacts:
            raise ApplicationError(f"manifest.json lists no {name}", code="manifest_incomplete")
    for name, meta in artifacts.items():
        path = source_dir / name
        if not path.is_file():
            raise ApplicationError(f"artifact {name} is listed in the manifest but missing", code="artifact_missing")
        if file_sha256(path) != meta["sha256"]:
            raise ApplicationError(f"artifact {name} does not match its sha256 in the manifest (altered?)",
                                   code="artifact_altered")
    parity = float(manifest["onnx_parity_max_abs_diff"])
    if not parity <= PARITY_LIMIT:
        raise ApplicationError(f"ONNX parity check failed ({parity:.2e} > {PARITY_LIMIT:.0e}); refusing to register",
                               code="parity_failed")


def model_version_register(*, source_dir: Path, actor: Actor, registered_by_id: int | None = None) -> Registration:
    """Verify an `ml train` output folder, copy it to model storage and record a candidate version.
    Registering the same ONNX file twice returns the existing version (safe to rerun)."""
    source_dir = Path(source_dir)
    manifest = _read_manifest(source_dir)
    _verify_artifacts(source_dir, manifest)
    use_case = str(manifest["use_case"])
    onnx_sha = manifest["artifacts"]["model.onnx"]["sha256"]
    existing = ModelVersion.objects.filter(use_case=use_case, onnx_sha256=onnx_sha).first()
    if existing is not None:
        return Registration(existing, created=False)

    storage_root = Path(settings.MODEL_STORAGE_DIR)
    relative = Path(use_case) / uuid.uuid4().hex
    target = storage_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source_dir, target)
    try:
        _verify_artifacts(target, manifest)
        with transaction.atomic():
            version = _create_version(manifest, relative, registered_by_id)
            audit_event_record(
                actor=actor,
                action="model.register",
                object_type="model_version",
                object_id=str(version.pk),
                model_version=version.label,
                model_sha256=onnx_sha,
                inputs={"source": str(source_dir)},
                output={"status": version.status, "test_auroc": version.test_auroc},
            )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return Registration(version, created=True)


def _create_version(manifest: dict[str, Any], relative: Path, registered_by_id: int | None) -> ModelVersion:
    use_case = str(manifest["use_case"])
    # Lock the use case's rows so two registrations cannot take the same version number.
    list(ModelVersion.objects.select_for_update().filter(use_case=use_case).values_list("pk", flat=True))
    latest = ModelVersion.objects.filter(use_case=use_case).aggregate(m=Max("version"))["m"] or 0
    test_metrics = manifest.get("metrics", {}).get("test", {})
    return ModelVersion.objects.create(
        use_case=use_case,
        version=latest + 1,
        model_type=str(manifest["model_type"]),
        manifest=manifest,
        storage_path=str(relative),
        onnx_sha256=manifest["artifacts"]["model.onnx"]["sha256"],
        joblib_sha256=manifest["artifacts"]["model.joblib"]["sha256"],
        threshold=float(manifest["threshold"]),
        test_auroc=test_metrics.get("auroc"),
        onnx_parity_max_abs_diff=float(manifest["onnx_parity_max_abs_diff"]),
        dataset_sha256=str(manifest.get("dataset_sha256", "")),
        mlflow_run_id=str(manifest.get("mlflow_run_id") or ""),
        mlflow_model_version=str(manifest.get("mlflow_model_version") or ""),
        registered_by_id=registered_by_id,
    )


@transaction.atomic
def model_version_promote(*, version_id: int, actor: Actor, reason: str) -> ModelVersion:
    """Make a version the champion of its use case; the previous champion is archived. Audited."""
    reason = reason.strip()
    if not reason:
        raise ApplicationError("A reason is required to promote a model version.", code="reason_required",
                               fields={"reason": ["This field is required."]})
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    if version.onnx_parity_max_abs_diff > PARITY_LIMIT:
        raise ApplicationError(f"{version.label} failed its ONNX parity check; it cannot be promoted.",
                               code="gate_blocked")
    if version.status == ModelVersion.Status.CHAMPION:
        return version
    now = timezone.now()
    previous = (
        ModelVersion.objects.select_for_update()
        .filter(use_case=version.use_case, status=ModelVersion.Status.CHAMPION)
        .first()
    )
    if previous is not None:
        previous.status = ModelVersion.Status.ARCHIVED
        previous.status_changed_at = now
        previous.save(update_fields=["status", "status_changed_at"])
    version.status = ModelVersion.Status.CHAMPION
    version.status_changed_at = now
    version.save(update_fields=["status", "status_changed_at"])
    audit_event_record(
        actor=actor,
        action="model.promote",
        object_type="model_version",
        object_id=str(version.pk),
        model_version=version.label,
        model_sha256=version.onnx_sha256,
        inputs={"reason": reason, "from": previous.label if previous else None},
        output={"champion": version.label},
    )
    return version
