"""Registered artifacts in model storage (the `models` storage: local MODEL_STORAGE_DIR by default, an S3-compatible
bucket with ARTIFACT_S3_BUCKET; apps/core/storage.py): where they live and whether each is still the file that was
registered. Every check hashes the bytes the storage returned, never a local copy."""

import hashlib
import logging
from pathlib import Path, PurePosixPath

from django.conf import settings

from apps.core.exceptions import ServiceUnavailable
from apps.core.storage import model_storage, read_stored
from ml.validation import file_sha256

from .models import ModelVersion

logger = logging.getLogger(__name__)


class ModelIntegrityError(ServiceUnavailable):
    """A registered file is missing or differs from its registered sha256: it is never served."""


__all__ = ["ModelIntegrityError", "artifact_name", "artifact_problems", "file_sha256", "model_dir", "read_verified",
           "registered_artifacts"]


def model_dir(version: ModelVersion) -> Path:
    """The version's folder when model storage is the local filesystem default (tools and tests on one host; the
    application reads through `read_verified`)."""
    return Path(settings.MODEL_STORAGE_DIR) / version.storage_path


def artifact_name(version: ModelVersion, name: str) -> str:
    """The storage name of one of the version's files: `<use_case>/<uuid>/<name>`."""
    return str(PurePosixPath(Path(version.storage_path).as_posix()) / name)


def registered_artifacts(version: ModelVersion) -> dict[str, str]:
    """name -> registered sha256 (versions registered before `artifacts` existed: the two model files)."""
    if version.artifacts:
        return {name: str(meta["sha256"]) for name, meta in version.artifacts.items()}
    return {"model.onnx": version.onnx_sha256, "model.joblib": version.joblib_sha256}


def artifact_problems(version: ModelVersion) -> list[str]:
    """What is missing or altered in model storage (empty when every registered file matches)."""
    storage = model_storage()
    problems = []
    for name, expected in sorted(registered_artifacts(version).items()):
        try:
            data = read_stored(storage, artifact_name(version, name))
        except Exception:  # noqa: BLE001 - missing, or the bucket did not answer: either way not servable
            problems.append(f"{name} is missing from model storage")
            continue
        if hashlib.sha256(data).hexdigest() != expected:
            problems.append(f"{name} does not match its registered sha256")
    return problems


def read_verified(version: ModelVersion, name: str) -> bytes:
    """The bytes of one registered artifact, read once and checked against its registered sha256, so what the
    caller uses is exactly what was verified. Raises ModelIntegrityError (503) when missing or altered."""
    expected = registered_artifacts(version).get(name)
    if expected is None or PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
        raise ModelIntegrityError(f"{version.label} has no registered artifact '{name}'.", code="artifact_unknown",
                                  status_code=404)
    try:
        data = read_stored(model_storage(), artifact_name(version, name))
    except OSError as exc:
        logger.critical("registered model artifact missing; refusing to serve",
                        extra={"model_version": version.label, "artifact": name})
        raise ModelIntegrityError(f"Model file {name} of {version.label} is missing; it will not be served.",
                                  code="model_integrity") from exc
    except Exception as exc:  # the bucket did not answer (network, credentials): nothing to verify, nothing served
        logger.critical("model storage unreadable; refusing to serve",
                        extra={"model_version": version.label, "artifact": name, "error_type": type(exc).__name__})
        raise ModelIntegrityError(f"Model file {name} of {version.label} could not be read from model storage; it "
                                  "will not be served.", code="model_integrity") from exc
    if hashlib.sha256(data).hexdigest() != expected:
        logger.critical("model artifact sha256 mismatch; refusing to serve",
                        extra={"model_version": version.label, "artifact": name, "alert": "model_integrity"})
        raise ModelIntegrityError(
            f"Model file {name} of {version.label} does not match its registered sha256; it will not be served.",
            code="model_integrity",
        )
    return data
