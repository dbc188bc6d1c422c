"""Loads registered models for serving: ONNX sessions cached per (version, sha256), integrity checked on load.

A file whose sha256 differs from the registered one is refused and never served. The champion of a use case
is looked up at most every CLINPREDICT_CHAMPION_CACHE_SECONDS per process, so a promotion reaches every web
worker within that time without a restart.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from django.conf import settings

from apps.core.exceptions import ServiceUnavailable
from ml.schema import UseCaseSpec

from .models import ModelVersion
from .selectors import model_version_champion
from .services import file_sha256

logger = logging.getLogger(__name__)


class ModelIntegrityError(ServiceUnavailable):
    pass


@dataclass(frozen=True)
class LoadedModel:
    version_id: int
    label: str
    use_case: str
    model_type: str
    sha256: str
    threshold: float
    spec: UseCaseSpec
    feature_order: tuple[str, ...]
    input_name: str
    output_name: str
    session: ort.InferenceSession = field(repr=False)
    fitted: Any = field(repr=False)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Positive-class probability for float32 rows in canonical units (NaN = missing)."""
        (probabilities,) = self.session.run([self.output_name], {self.input_name: x.astype(np.float32, copy=False)})
        return np.asarray(probabilities)[:, 1]

    def explain(self, x: np.ndarray) -> np.ndarray:
        from ml.explain import explain

        return explain(self.fitted, x.astype(np.float32, copy=False))


_lock = threading.Lock()
_models: dict[tuple[int, str], LoadedModel] = {}
_champions: dict[str, tuple[float, int | None]] = {}


def model_dir(version: ModelVersion) -> Path:
    return Path(settings.MODEL_STORAGE_DIR) / version.storage_path


def _check_file(path: Path, expected: str, label: str) -> None:
    if not path.is_file():
        raise ModelIntegrityError(f"Model file {path.name} of {label} is missing; it will not be served.",
                                  code="model_integrity")
    if file_sha256(path) != expected:
        logger.critical("model artifact sha256 mismatch; refusing to serve",
                        extra={"model_version": label, "artifact": path.name})
        raise ModelIntegrityError(
            f"Model file {path.name} of {label} does not match its registered sha256; it will not be served.",
            code="model_integrity",
        )


def load_version(version: ModelVersion) -> LoadedModel:
    key = (version.pk, version.onnx_sha256)
    cached = _models.get(key)
    if cached is not None:
        return cached
    with _lock:
        cached = _models.get(key)
        if cached is not None:
            return cached
        folder = model_dir(version)
        _check_file(folder / "model.onnx", version.onnx_sha256, version.label)
        _check_file(folder / "model.joblib", version.joblib_sha256, version.label)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.ONNX_INTRA_OP_THREADS
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        from ml.export import load_joblib

        manifest = version.manifest
        loaded = LoadedModel(
            version_id=version.pk,
            label=version.label,
            use_case=version.use_case,
            model_type=version.model_type,
            sha256=version.onnx_sha256,
            threshold=version.threshold,
            spec=UseCaseSpec.from_dict(manifest["spec"]),
            feature_order=tuple(manifest["feature_order"]),
            input_name=manifest["input_name"],
            output_name=manifest["output_name"],
            session=session,
            fitted=load_joblib(folder / "model.joblib"),
        )
        _models[key] = loaded
        return loaded


def champion_model(use_case: str) -> LoadedModel | None:
    """The live model of a use case, or None when it has no champion."""
    now = time.monotonic()
    cached = _champions.get(use_case)
    version_id: int | None
    if cached is not None and now - cached[0] < settings.CLINPREDICT_CHAMPION_CACHE_SECONDS:
        version_id = cached[1]
        if version_id is None:
            return None
        for (pk, _sha), model in list(_models.items()):
            if pk == version_id:
                return model
    version = model_version_champion(use_case=use_case)
    _champions[use_case] = (now, version.pk if version else None)
    return load_version(version) if version else None


def clear_caches() -> None:
    with _lock:
        _models.clear()
        _champions.clear()
