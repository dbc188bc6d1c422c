"""Registered artifacts on disk: where they live and whether each is still the file that was registered."""

import hashlib
import logging
from pathlib import Path, PurePosixPath

from django.conf import settings

from apps.core.exceptions import ServiceUnavailable
from ml.validation import file_sha256

from .models import ModelVersion

logger = logging.getLogger(__name__)


class ModelIntegrityError(ServiceUnavailable):
    """A registered file is missing or differs from its registered sha256: it is never served."""


def model_dir(version: ModelVersion) -> Path:
    return Path(settings.MODEL_STORAGE_DIR) / version.storage_path


def registered_artifacts(version: ModelVersion) -> dict[str, str]:
    """name -> registered sha256 (versions registered before `artifacts` existed: the two model files)."""
    if version.artifacts:
        return {name: str(meta["sha256"]) for name, meta in version.artifacts.items()}
    return {"model.onnx": version.onnx_sha256, "model.joblib": version.joblib_sha256}


def artifact_problems(version: ModelVersion) -> list[str]:
    """What is missing or altered in model storage (empty when every registered file matches)."""
    folder = model_dir(version)
    problems = []
    for name, expected in sorted(registered_artifacts(version).items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing from model storage")
        elif file_sha256(path) != expected:
            problems.append(f"{name} does not match its registered sha256")
    return problems


def read_verified(version: ModelVersion, name: str) -> bytes:
    """The bytes of one registered artifact, read once and checked against its registered sha256, so what the
    caller uses is exactly what was verified. Raises ModelIntegrityError (503) when missing or altered."""
    expected = registered_artifacts(version).get(name)
    if expected is None or PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
        raise ModelIntegrityError(f"{version.label} has no registered artifact '{name}'.", code="artifact_unknown",
                                  status_code=404)
    path = model_dir(version) / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        logger.critical("registered model artifact missing; refusing to serve",
                        extra={"model_version": version.label, "artifact": name})
        raise ModelIntegrityError(f"Model file {name} of {version.label} is missing; it will not be served.",
                                  code="model_integrity") from exc
    if hashlib.sha256(data).hexdigest() != expected:
        logger.critical("model artifact sha256 mismatch; refusing to serve",
                        extra={"model_version": version.label, "artifact": name, "alert": "model_integrity"})
        raise ModelIntegrityError(
            f"Model file {name} of {version.label} does not match its registered sha256; it will not be served.",
            code="model_integrity",
        )
    return data
