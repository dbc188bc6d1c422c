"""Loads registered models for serving: ONNX sessions cached per (version, sha256), integrity checked on load.

No pickle in the web process: a version is served from ``model.onnx`` (probabilities) and the non-pickle explainer
file named in ``manifest["explainer"]`` (``model.xgb.ubj``, ``model.mlp.json`` or ``model.linear.json``, see
ml/serving_explain.py), both hash-verified, with the calibration constants and medians from the manifest.
``model.joblib`` is never read here, and neither scikit-learn nor joblib is imported
(tests/apps/predictions/test_no_pickle.py). A version registered before the explainer file existed is refused
(ModelNotMigrated, HTTP 503) until
``python manage.py migrate_model_artifacts`` has written its explainer; it never falls back to the pickle.

Each file is read once, its bytes are checked against the registered sha256 and only those bytes are loaded, so
the model served is exactly the file that was validated; a file that does not match is refused with a clear
error (ModelIntegrityError, HTTP 503), a critical log line and the `clinpredict_model_integrity_ok` gauge at 0.
The champion (and challenger) of a use case is looked up at most every CLINPREDICT_CHAMPION_CACHE_SECONDS per
process, so a promotion reaches every web worker within that time without a restart.

Bounded by what is registered, never by what a client sends: a use case is known when it has a registered
ModelVersion (`known_use_cases`, read from the database and kept for CLINPREDICT_CHAMPION_CACHE_SECONDS as one
set). An unknown use case gets None from `champion_model` before any cache entry or metric label is made for it,
so a client cannot grow this process's memory or /metrics by inventing names. Loaded models are kept only while
their version is live (champion or challenger): when a use case's live version changes, the version it replaced
is dropped from the cache.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings

from apps.core.exceptions import ServiceUnavailable
from ml.schema import UseCaseSpec

from . import metrics
from .artifacts import ModelIntegrityError, model_dir, read_verified, registered_artifacts
from .models import ModelVersion
from .selectors import model_version_challenger, model_version_champion, use_cases

if TYPE_CHECKING:
    import onnxruntime as ort

    from ml.serving_explain import Explainer

# onnxruntime and the explainer (libxgboost for XGBoost) are loaded with the first model, not when Django starts:
# every management command (an audit export, a backup) would otherwise pay for libraries it never uses.

__all__ = ["LoadedModel", "ModelIntegrityError", "ModelNotMigrated", "champion_model", "challenger_model",
           "clear_caches", "known_use_cases", "load_version", "model_dir", "use_case_known"]

MIGRATE_COMMAND = "python manage.py migrate_model_artifacts"


class ModelNotMigrated(ServiceUnavailable):
    """The version has no registered non-pickle explainer (registered before it existed): it is not served until
    `migrate_model_artifacts` has written one."""

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
    explainer: "Explainer" = field(repr=False)
    moderate_from: float | None = None

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Positive-class probability for float32 rows in canonical units (NaN = missing)."""
        (probabilities,) = self.session.run([self.output_name], {self.input_name: x.astype(np.float32, copy=False)})
        return np.asarray(probabilities)[:, 1]

    def explain(self, x: np.ndarray) -> np.ndarray:
        """Per-feature contributions (n, n_features) on the log-odds scale, equal to ``ml.explain.explain`` on the
        fitted model (XGBoost runs on one thread: see ml/xgb_native.py)."""
        return self.explainer.explain(x.astype(np.float32, copy=False))

    def risk_band(self, probability: float) -> str:
        """The model's own bands (manifest `risk_bands`): high from the threshold, moderate from half of it."""
        moderate_from = self.threshold / 2 if self.moderate_from is None else self.moderate_from
        if probability >= self.threshold:
            return "high"
        if probability >= moderate_from:
            return "moderate"
        return "low"


_lock = threading.Lock()
# (version id, onnx sha256) -> loaded model; only live versions stay (see _forget_replaced).
_models: dict[tuple[int, str], LoadedModel] = {}
# (use case, status) -> (monotonic time looked up, live version id or None); only known use cases get an entry.
_live: dict[tuple[str, str], tuple[float, int | None]] = {}
# (monotonic time read, registered use cases): one set, as large as the registry.
_known: tuple[float, frozenset[str]] | None = None


def known_use_cases() -> frozenset[str]:
    """The use cases with a registered model version: the only names that may become a cache key or a metric label.
    Read from the database at most every CLINPREDICT_CHAMPION_CACHE_SECONDS per process (like the champion), so a
    flood of invented names costs at most one query per interval."""
    global _known
    now = time.monotonic()
    cached = _known
    if cached is not None and now - cached[0] < settings.CLINPREDICT_CHAMPION_CACHE_SECONDS:
        return cached[1]
    known = frozenset(use_cases())
    _known = (now, known)
    return known


def use_case_known(use_case: str) -> bool:
    return use_case in known_use_cases()


def _explainer(version: ModelVersion) -> "Explainer":
    from ml.serving_explain import ExplainerError, load_explainer

    meta = version.manifest.get("explainer")
    name = meta.get("file") if isinstance(meta, dict) else None
    if not name or name not in registered_artifacts(version):
        logger.error("model version has no registered explainer file; not served until migrated",
                     extra={"model_version": version.label})
        raise ModelNotMigrated(
            f"{version.label} was registered before explanations stopped using model.joblib and has no explainer "
            f"file; run `{MIGRATE_COMMAND}` to serve it.", code="model_not_migrated")
    raw = read_verified(version, name)
    try:
        return load_explainer(meta, raw, tuple(version.manifest["feature_order"]))
    except ExplainerError as exc:
        raise ModelNotMigrated(f"The explainer of {version.label} cannot be loaded ({exc}); run "
                               f"`{MIGRATE_COMMAND} --force` to rewrite it.", code="model_not_migrated") from exc


def _build(version: ModelVersion) -> LoadedModel:
    import onnxruntime as ort

    onnx_bytes = read_verified(version, "model.onnx")
    explainer = _explainer(version)
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
        explainer=explainer,
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
        except ModelNotMigrated:
            if is_champion:
                metrics.CHAMPION_LOADED.labels(version.use_case).set(0)
            raise
        metrics.MODEL_INTEGRITY_OK.labels(version.use_case).set(1)
        if is_champion:
            metrics.CHAMPION_LOADED.labels(version.use_case).set(1)
        # Loaded outside champion_model/challenger_model (a management command, a test): keep at most this one of
        # the use case's versions that no use case serves.
        live = {version_id for _at, version_id in _live.values()}
        for other in [k for k, m in _models.items() if m.use_case == version.use_case and k[0] not in live]:
            del _models[other]
        _models[key] = loaded
        return loaded


def _forget_replaced(replaced: int | None) -> None:
    """Drop the loaded files of a version that no use case serves any more (caller holds _lock). A request still
    holding the model finishes with it; the next one loads what is live."""
    if replaced is None or any(version_id == replaced for _at, version_id in _live.values()):
        return
    for key in [key for key in _models if key[0] == replaced]:
        del _models[key]


def _set_live(use_case: str, status: str, now: float, version_id: int | None) -> None:
    with _lock:
        previous = _live.get((use_case, status))
        _live[(use_case, status)] = (now, version_id)
        if previous is not None and previous[1] != version_id:
            _forget_replaced(previous[1])


def _live_model(use_case: str, status: str) -> LoadedModel | None:
    now = time.monotonic()
    cached = _live.get((use_case, status))
    if cached is None and not use_case_known(use_case):
        return None  # unknown: no cache entry, no metric label, no lookup (the caller refuses the name)
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
    _set_live(use_case, status, now, version.pk if version else None)
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
    global _known
    with _lock:
        _models.clear()
        _live.clear()
        _known = None


def cache_sizes() -> dict[str, int]:
    """Entries held by this process's caches (for tests and the operator's curiosity)."""
    return {"models": len(_models), "live": len(_live), "known_use_cases": len(_known[1]) if _known else 0}
