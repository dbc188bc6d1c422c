"""Loads registered models for serving: ONNX sessions cached per (version, sha256), integrity checked on load.

Each file is read once, its bytes are checked against the registered sha256 and only those bytes are loaded, so
the model served is exactly the file that was validated; a file that does not match is refused with a clear
error (ModelIntegrityError, HTTP 503), a critical log line and the `clinpredict_model_integrity_ok` gauge at 0.
The champion (and challenger) of a use case is looked up at most every CLINPREDICT_CHAMPION_CACHE_SECONDS per
process, so a promotion reaches every web worker within that time without a restart.
"""

import io
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings

from ml.schema import UseCaseSpec

from . import metrics
from .artifacts import ModelIntegrityError, model_dir, read_verified
from .models import ModelVersion
from .selectors import model_version_challenger, model_version_champion

if TYPE_CHECKING:
    import onnxruntime as ort

# onnxruntime, joblib and xgboost (which pulls in scikit-learn and SciPy) are imported when a model is first loaded,
# not when Django starts: every management command (an audit export, a backup) would otherwise pay ~2 s and
# ~150 MB for libraries it never uses.

__all__ = ["LoadedModel", "ModelIntegrityError", "champion_model", "challenger_model", "clear_caches",
           "load_version", "model_dir"]

logger = logging.getLogger(__name__)


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
    session: "ort.InferenceSession" = field(repr=False)
    fitted: Any = field(repr=False)
    moderate_from: float | None = None

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Positive-class probability for float32 rows in canonical units (NaN = missing)."""
        (probabilities,) = self.session.run([self.output_name], {self.input_name: x.astype(np.float32, copy=False)})
        return np.asarray(probabilities)[:, 1]

    def explain(self, x: np.ndarray) -> np.ndarray:
        import xgboost

        from ml.explain import explain

        # XGBoost builds each DMatrix with one OpenMP thread per core by default: for the few rows of a request
        # that costs ~13 ms of thread start-up and spinning on a busy 2-core host, against ~0.1 ms on one thread
        # (benchmarks/results/profile_request.json). One thread gives the very same contributions.
        with xgboost.config_context(nthread=1):
            return explain(self.fitted, x.astype(np.float32, copy=False))

    def risk_band(self, probability: float) -> str:
        """The model's own bands (manifest `risk_bands`): high from the threshold, moderate from half of it."""
        moderate_from = self.threshold / 2 if self.moderate_from is None else self.moderate_from
        if probability >= self.threshold:
            return "high"
        if probability >= moderate_from:
            return "moderate"
        return "low"


_lock = threading.Lock()
_models: dict[tuple[int, str], LoadedModel] = {}
_live: dict[tuple[str, str], tuple[float, int | None]] = {}


def _build(version: ModelVersion) -> LoadedModel:
    import joblib
    import onnxruntime as ort

    onnx_bytes = read_verified(version, "model.onnx")
    joblib_bytes = read_verified(version, "model.joblib")
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.ONNX_INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    manifest = version.manifest
    bands = manifest.get("risk_bands") or {}
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
        # Same as ml.export.load_joblib, but from the verified bytes rather than reopening the path.
        fitted=joblib.load(io.BytesIO(joblib_bytes)),
        moderate_from=bands.get("moderate_from"),
    )
    # Warm: the first request should not pay for the session's and the explainer's first-call set-up.
    warm = np.zeros((1, len(loaded.feature_order)), dtype=np.float32)
    loaded.predict_proba(warm)
    loaded.explain(warm)
    return loaded


def load_version(version: ModelVersion) -> LoadedModel:
    key = (version.pk, version.onnx_sha256)
    cached = _models.get(key)
    if cached is not None:
        return cached
    is_champion = version.status == ModelVersion.Status.CHAMPION
    with _lock:
        cached = _models.get(key)
        if cached is not None:
            return cached
        try:
            loaded = _build(version)
        except ModelIntegrityError:
            metrics.MODEL_INTEGRITY_OK.labels(version.use_case).set(0)
            if is_champion:
                metrics.CHAMPION_LOADED.labels(version.use_case).set(0)
            raise
        metrics.MODEL_INTEGRITY_OK.labels(version.use_case).set(1)
        if is_champion:
            metrics.CHAMPION_LOADED.labels(version.use_case).set(1)
        _models[key] = loaded
        return loaded


def _live_model(use_case: str, status: str) -> LoadedModel | None:
    now = time.monotonic()
    cached = _live.get((use_case, status))
    if cached is not None and now - cached[0] < settings.CLINPREDICT_CHAMPION_CACHE_SECONDS:
        version_id = cached[1]
        if version_id is None:
            return None
        for (pk, _sha), model in list(_models.items()):
            if pk == version_id:
                return model
    if status == ModelVersion.Status.CHAMPION:
        version = model_version_champion(use_case=use_case)
    else:
        version = model_version_challenger(use_case=use_case)
    _live[(use_case, status)] = (now, version.pk if version else None)
    if version is None:
        if status == ModelVersion.Status.CHAMPION:
            metrics.CHAMPION_LOADED.labels(use_case).set(0)
        return None
    return load_version(version)


def champion_model(use_case: str) -> LoadedModel | None:
    """The live model of a use case, or None when it has no champion. Raises ModelIntegrityError (503) when the
    champion's files do not match their registered sha256."""
    return _live_model(use_case, ModelVersion.Status.CHAMPION)


def challenger_model(use_case: str) -> LoadedModel | None:
    """The shadow model of a use case, or None when it has no challenger."""
    return _live_model(use_case, ModelVersion.Status.CHALLENGER)


def clear_caches() -> None:
    with _lock:
        _models.clear()
        _live.clear()
