"""Writes to the model registry: registration (with artifact verification), gated promotion and rollback, the
challenger, other status changes, shadow scores and the MLflow sync record. Each writes its audit event and its
status-history rows in the same transaction as the change."""

import hashlib
import json
import logging
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from django.core.files.storage import Storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import audit_event_record
from apps.core.exceptions import ApplicationError
from apps.core.storage import model_storage, read_stored, remove_stored, save_new
from ml.serving_explain import KIND_FILES

from . import metrics
from .artifacts import file_sha256
from .gate import challenger_gate_evaluate, gate_limits, promotion_gate_evaluate
from .models import ModelVersion, ModelVersionStatusChange, ShadowPrediction
from .selectors import model_version_previous_champion, model_version_was_champion

__all__ = [
    "PARITY_LIMIT", "REQUIRED_ARTIFACTS", "REQUIRED_MANIFEST_KEYS", "Registration", "file_sha256",
    "model_version_mlflow_sync_record", "model_version_promote", "model_version_register",
    "model_version_register_from_mlflow", "model_version_rollback", "model_version_set_challenger",
    "model_version_status_set", "shadow_predictions_create",
]

logger = logging.getLogger(__name__)

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
    "explainer",
)
# Plus the explainer file the manifest names (model.xgb.ubj, model.mlp.json or model.linear.json): what the web
# process explains with.
# model.joblib stays required: training tools, the retraining worker, MLflow and `migrate_model_artifacts` read it.
REQUIRED_ARTIFACTS = ("model.onnx", "model.joblib")
PARITY_LIMIT = 1e-5  # registration refuses anything worse; the promotion gate's limit is configurable


@dataclass(frozen=True)
class Registration:
    version: ModelVersion
    created: bool


# --- registration ---------------------------------------------------------------------------------------------


def _read_manifest(source_dir: Path) -> dict[str, Any]:
    path = source_dir / "manifest.json"
    if not path.is_file():
        raise ApplicationError(f"{source_dir} has no manifest.json; pass the output folder of `ml train`.",
                               code="manifest_missing")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ApplicationError(f"manifest.json is not valid JSON: {exc}", code="manifest_invalid") from exc
    if not isinstance(manifest, dict):
        raise ApplicationError("manifest.json must hold a JSON object.", code="manifest_invalid")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if manifest.get(key) is None]
    if missing:
        hint = ("; it was written before `ml train` saved a non-pickle explainer: train again"
                if missing == ["explainer"] else "")
        raise ApplicationError(f"manifest.json is incomplete; missing keys: {', '.join(missing)}{hint}",
                               code="manifest_incomplete")
    return manifest


def _required_artifacts(manifest: dict[str, Any]) -> tuple[str, ...]:
    explainer = manifest.get("explainer")
    kind = explainer.get("kind") if isinstance(explainer, dict) else None
    if kind not in KIND_FILES or explainer.get("file") != KIND_FILES[kind]:
        raise ApplicationError(f"manifest.json 'explainer' names an unknown kind or file ({kind!r})",
                               code="manifest_invalid")
    return (*REQUIRED_ARTIFACTS, KIND_FILES[kind])


def _verify_artifacts(source_dir: Path, manifest: dict[str, Any]) -> None:
    artifacts = manifest["artifacts"]
    if not isinstance(artifacts, dict):
        raise ApplicationError("manifest.json 'artifacts' must map file names to {sha256}", code="manifest_invalid")
    for name in _required_artifacts(manifest):
        if name not in artifacts:
            raise ApplicationError(f"manifest.json lists no {name}", code="manifest_incomplete")
    root = source_dir.resolve()
    for name, meta in artifacts.items():
        path = (source_dir / name).resolve()
        if not path.is_relative_to(root):
            raise ApplicationError(f"artifact {name} points outside the run folder", code="manifest_invalid")
        if not path.is_file():
            raise ApplicationError(f"artifact {name} is listed in the manifest but missing", code="artifact_missing")
        if not isinstance(meta, dict) or file_sha256(path) != meta.get("sha256"):
            raise ApplicationError(f"artifact {name} does not match its sha256 in the manifest (altered?)",
                                   code="artifact_altered")
    parity = float(manifest["onnx_parity_max_abs_diff"])
    if not parity <= PARITY_LIMIT:
        raise ApplicationError(f"ONNX parity check failed ({parity:.2e} > {PARITY_LIMIT:.0e}); refusing to register",
                               code="parity_failed")


def model_version_register(*, source_dir: Path, actor: Actor, registered_by_id: int | None = None,
                           source: str = "") -> Registration:
    """Verify an `ml train` output folder, upload it to model storage and record a candidate version.
    Registering the same ONNX file twice returns the existing version (safe to rerun). On any failure nothing is
    left behind: no row, no audit event, no stored file."""
    source_dir = Path(source_dir)
    manifest = _read_manifest(source_dir)
    _verify_artifacts(source_dir, manifest)
    use_case = str(manifest["use_case"])
    onnx_sha = manifest["artifacts"]["model.onnx"]["sha256"]
    existing = ModelVersion.objects.filter(use_case=use_case, onnx_sha256=onnx_sha).first()
    if existing is not None:
        return Registration(existing, created=False)

    storage = model_storage()
    relative = PurePosixPath(use_case) / uuid.uuid4().hex
    saved: list[str] = []
    try:
        _upload_run_folder(source_dir, manifest, storage, relative, saved)
        _verify_stored(storage, relative, manifest)  # what will be served is what the storage gives back: verify it
        with transaction.atomic():
            version = _create_version(manifest, relative, registered_by_id or actor.user_id, actor,
                                      source or str(source_dir))
            event = audit_event_record(
                actor=actor,
                action="model.register",
                object_type="model_version",
                object_id=str(version.pk),
                model_version=version.label,
                model_sha256=onnx_sha,
                inputs={"source": version.source},
                output={"status": version.status, "test_auroc": version.test_auroc,
                        "mlflow_run_id": version.mlflow_run_id or None,
                        "mlflow_model_version": version.mlflow_model_version or None},
            )
            _history(version, "", ModelVersion.Status.CANDIDATE, ModelVersionStatusChange.Kind.REGISTER,
                     reason="", actor=actor, at=event.created_at, audit_seq=event.seq)
    except BaseException:
        remove_stored(storage, saved, str(relative))
        raise
    return Registration(version, created=True)


def _upload_run_folder(source_dir: Path, manifest: dict[str, Any], storage: Storage, relative: PurePosixPath,
                       saved: list[str]) -> None:
    """Store every file of the run folder under `relative` (versions are immutable: an existing name is refused).
    Each file is read once; a listed artifact's bytes are hashed and compared with the manifest before they are
    uploaded, so the sha256 the version records is that of the bytes that went into storage."""
    root = source_dir.resolve()
    listed = manifest["artifacts"]
    for path in sorted(source_dir.rglob("*")):
        if not path.is_file() or not path.resolve().is_relative_to(root):
            continue
        name = path.relative_to(source_dir).as_posix()
        data = path.read_bytes()
        if name in listed and hashlib.sha256(data).hexdigest() != listed[name].get("sha256"):
            raise ApplicationError(f"artifact {name} does not match its sha256 in the manifest (altered?)",
                                   code="artifact_altered")
        saved.append(save_new(storage, f"{relative}/{name}", data))


def _verify_stored(storage: Storage, relative: PurePosixPath, manifest: dict[str, Any]) -> None:
    for name, meta in manifest["artifacts"].items():
        try:
            data = read_stored(storage, f"{relative}/{name}")
        except Exception as exc:
            raise ApplicationError(f"artifact {name} could not be read back from model storage ({type(exc).__name__})",
                                   code="artifact_missing") from exc
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise ApplicationError(f"artifact {name} read back from model storage does not match its sha256",
                                   code="artifact_altered")


def _create_version(manifest: dict[str, Any], relative: PurePosixPath, registered_by_id: int | None, actor: Actor,
                    source: str) -> ModelVersion:
    use_case = str(manifest["use_case"])
    # Lock the use case's rows so two registrations cannot take the same version number (NO KEY: see _lock_use_case).
    list(ModelVersion.objects.select_for_update(no_key=True).filter(use_case=use_case).values_list("pk", flat=True))
    latest = ModelVersion.objects.filter(use_case=use_case).aggregate(m=Max("version"))["m"] or 0
    test_metrics = manifest.get("metrics", {}).get("test", {}) or {}
    ci = test_metrics.get("auroc_ci") or [None, None]
    return ModelVersion.objects.create(
        use_case=use_case,
        version=latest + 1,
        model_type=str(manifest["model_type"]),
        manifest=manifest,
        storage_path=str(relative),
        artifacts={name: {"sha256": meta["sha256"], "bytes": meta.get("bytes")}
                   for name, meta in manifest["artifacts"].items()},
        onnx_sha256=manifest["artifacts"]["model.onnx"]["sha256"],
        joblib_sha256=manifest["artifacts"]["model.joblib"]["sha256"],
        threshold=float(manifest["threshold"]),
        test_auroc=test_metrics.get("auroc"),
        test_auroc_ci_low=ci[0],
        test_auroc_ci_high=ci[1],
        calibration_slope=test_metrics.get("calibration_slope"),
        onnx_parity_max_abs_diff=float(manifest["onnx_parity_max_abs_diff"]),
        dataset_sha256=str(manifest.get("dataset_sha256", "")),
        split_sha256=str(manifest.get("split_sha256", "")),
        source=source[:1000],
        mlflow_run_id=str(manifest.get("mlflow_run_id") or ""),
        mlflow_model_name=str(manifest.get("mlflow_model_name") or ""),
        mlflow_model_version=str(manifest.get("mlflow_model_version") or ""),
        registered_by_id=registered_by_id,
        registered_by_actor=actor.label,
    )


def model_version_register_from_mlflow(*, run_id: str, actor: Actor, registered_by_id: int | None = None,
                                       tracking_uri: str | None = None) -> Registration:
    """Register the run folder that `ml train` logged to MLflow (artifacts `run/` and `plots/` of the run): the
    files are downloaded, then verified and registered exactly like a local folder."""
    from .mlflow_sync import download_run_folder

    with tempfile.TemporaryDirectory(prefix="clinpredict-mlflow-") as tmp:
        folder = download_run_folder(run_id=run_id, dst=Path(tmp), tracking_uri=tracking_uri)
        return model_version_register(source_dir=folder, actor=actor, registered_by_id=registered_by_id,
                                      source=f"mlflow:runs:/{run_id}")


# --- status changes -------------------------------------------------------------------------------------------


def _history(version: ModelVersion, from_status: str, to_status: str, kind: str, *, reason: str, actor: Actor,
             at: Any, audit_seq: int | None) -> ModelVersionStatusChange:
    return ModelVersionStatusChange.objects.create(
        version=version, use_case=version.use_case, from_status=from_status, to_status=to_status, kind=kind,
        reason=reason, actor=actor.label, actor_user_id=actor.user_id, changed_at=at, audit_seq=audit_seq,
    )


def _set_status(version: ModelVersion, status: str, at: Any) -> str:
    previous = version.status
    version.status = status
    version.status_changed_at = at
    version.save(update_fields=["status", "status_changed_at"])
    return previous


def _require_reason(reason: str, action: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(f"A reason is required to {action}; it is kept in the audit log.",
                               code="reason_required", fields={"reason": ["This field is required."]})
    return reason


def _lock_use_case(use_case: str) -> None:
    """Promotions, rollbacks and challenger changes of one use case run one at a time.

    FOR NO KEY UPDATE, not FOR UPDATE: a prediction takes the audit chain lock and then inserts rows whose foreign
    key to this version takes FOR KEY SHARE. A plain FOR UPDATE here, followed by our own audit append, deadlocked
    against those predictions under load (measured in tests/e2e/test_hot_swap.py); NO KEY UPDATE does not block
    foreign-key checks, and status updates never change a key."""
    rows = ModelVersion.objects.select_for_update(no_key=True).filter(use_case=use_case).order_by("pk")
    list(rows.values_list("pk", flat=True))


def _locked(version_id: int) -> tuple[ModelVersion, ModelVersion | None]:
    try:
        use_case = ModelVersion.objects.values_list("use_case", flat=True).get(pk=version_id)
    except ModelVersion.DoesNotExist as exc:
        raise ApplicationError(f"No model version with id {version_id}.", code="not_found", status_code=404) from exc
    _lock_use_case(use_case)
    version = ModelVersion.objects.get(pk=version_id)
    champion = ModelVersion.objects.filter(use_case=use_case, status=ModelVersion.Status.CHAMPION).first()
    return version, champion


def _enqueue_mlflow_sync(version_id: int) -> None:
    """Runs after the promotion commits. Never raises: the promotion stands whatever happens to MLflow."""
    try:
        from .tasks import model_version_mlflow_sync

        model_version_mlflow_sync.delay(version_id)
    except Exception as exc:
        logger.error("could not enqueue the MLflow champion alias sync",
                     extra={"model_version_id": version_id, "error_type": type(exc).__name__})
        try:
            model_version_mlflow_sync_record(version_id=version_id, outcome=ModelVersion.MlflowSync.FAILED,
                                             detail=f"could not enqueue the sync task: {type(exc).__name__}")
        except Exception:
            logger.exception("could not record the MLflow sync failure", extra={"model_version_id": version_id})


def _refuse_if_blocked(verdict: Any) -> None:
    if not verdict.ok:
        raise ApplicationError(verdict.summary(), code="gate_blocked",
                               fields={"version": [check.detail for check in verdict.failures]},
                               extra={"gate": verdict.as_dict()})


@transaction.atomic
def model_version_promote(*, version_id: int, actor: Actor, reason: str) -> ModelVersion:
    """Make a version the champion of its use case, if the promotion gate passes; the previous champion is
    archived. Promoting a version that was champion before is a rollback (audited as `model.rollback`).
    Promoting the current champion again changes nothing. After commit, MLflow's `champion` alias follows."""
    reason = _require_reason(reason, "promote a model version")
    version, champion = _locked(version_id)
    if version.status == ModelVersion.Status.CHAMPION:
        return version
    verdict = promotion_gate_evaluate(version=version, live=champion)
    _refuse_if_blocked(verdict)
    rollback = model_version_was_champion(version=version)
    kind = ModelVersionStatusChange.Kind.ROLLBACK if rollback else ModelVersionStatusChange.Kind.PROMOTE
    event = audit_event_record(
        actor=actor,
        action="model.rollback" if rollback else "model.promote",
        object_type="model_version",
        object_id=str(version.pk),
        model_version=version.label,
        model_sha256=version.onnx_sha256,
        inputs={"reason": reason, "from": champion.label if champion else None, "to": version.label},
        output={"champion": version.label, "previous_status": version.status, "gate": verdict.as_dict(),
                "gate_limits": gate_limits()},
    )
    now = event.created_at
    if champion is not None:
        _set_status(champion, ModelVersion.Status.ARCHIVED, now)
        _history(champion, ModelVersion.Status.CHAMPION, ModelVersion.Status.ARCHIVED,
                 ModelVersionStatusChange.Kind.REPLACED, reason=reason, actor=actor, at=now, audit_seq=event.seq)
    previous = _set_status(version, ModelVersion.Status.CHAMPION, now)
    _history(version, previous, ModelVersion.Status.CHAMPION, kind, reason=reason, actor=actor, at=now,
             audit_seq=event.seq)
    transaction.on_commit(partial(_enqueue_mlflow_sync, version.pk))
    return version


@transaction.atomic
def model_version_rollback(*, use_case: str, actor: Actor, reason: str) -> ModelVersion:
    """Promote the version that was champion before the current one (same gate, audited as a rollback)."""
    reason = _require_reason(reason, "roll back")
    _lock_use_case(use_case)
    previous = model_version_previous_champion(use_case=use_case)
    if previous is None:
        raise ApplicationError(f"{use_case} has no earlier champion to roll back to.", code="no_previous_champion",
                               fields={"use_case": ["No version was champion before the current one."]})
    return model_version_promote(version_id=previous.pk, actor=actor, reason=reason)


@transaction.atomic
def model_version_set_challenger(*, version_id: int, actor: Actor, reason: str) -> ModelVersion:
    """Run a version in the shadow of the champion: each prediction is also scored by it, stored, never shown.
    At most one challenger per use case: the previous one goes back to candidate."""
    reason = _require_reason(reason, "set a challenger")
    version, champion = _locked(version_id)
    if version.status == ModelVersion.Status.CHALLENGER:
        return version
    verdict = challenger_gate_evaluate(version=version, live=champion)
    _refuse_if_blocked(verdict)
    current = ModelVersion.objects.filter(use_case=version.use_case, status=ModelVersion.Status.CHALLENGER).first()
    event = audit_event_record(
        actor=actor,
        action="model.challenger",
        object_type="model_version",
        object_id=str(version.pk),
        model_version=version.label,
        model_sha256=version.onnx_sha256,
        inputs={"reason": reason, "from": current.label if current else None, "to": version.label},
        output={"challenger": version.label, "champion": champion.label if champion else None,
                "previous_status": version.status, "gate": verdict.as_dict()},
    )
    if current is not None:
        _set_status(current, ModelVersion.Status.CANDIDATE, event.created_at)
        _history(current, ModelVersion.Status.CHALLENGER, ModelVersion.Status.CANDIDATE,
                 ModelVersionStatusChange.Kind.STATUS, reason=reason, actor=actor, at=event.created_at,
                 audit_seq=event.seq)
    previous = _set_status(version, ModelVersion.Status.CHALLENGER, event.created_at)
    _history(version, previous, ModelVersion.Status.CHALLENGER, ModelVersionStatusChange.Kind.CHALLENGER,
             reason=reason, actor=actor, at=event.created_at, audit_seq=event.seq)
    return version


_ALLOWED_BY_STATUS_SET = {ModelVersion.Status.CANDIDATE, ModelVersion.Status.ARCHIVED}


@transaction.atomic
def model_version_status_set(*, version_id: int, to_status: str, actor: Actor, reason: str) -> ModelVersion:
    """Any other status change: end a challenger (-> candidate or archived), archive or reinstate a candidate.
    The champion changes only through promotion or rollback, so a use case never loses its live model here."""
    reason = _require_reason(reason, "change a model version's status")
    if to_status not in _ALLOWED_BY_STATUS_SET:
        raise ApplicationError(
            f"Status '{to_status}' is set by promotion or by setting a challenger, not here.", code="invalid",
            fields={"to_status": [f"Accepted: {', '.join(sorted(_ALLOWED_BY_STATUS_SET))}."]})
    version, _champion = _locked(version_id)
    if version.status == ModelVersion.Status.CHAMPION:
        raise ApplicationError(f"{version.label} is the champion; promote another version or roll back instead.",
                               code="champion_locked", fields={"to_status": ["The champion cannot be demoted."]})
    if version.status == to_status:
        return version
    event = audit_event_record(
        actor=actor,
        action="model.status_change",
        object_type="model_version",
        object_id=str(version.pk),
        model_version=version.label,
        model_sha256=version.onnx_sha256,
        inputs={"reason": reason, "from_status": version.status, "to_status": to_status},
        output={"status": to_status},
    )
    previous = _set_status(version, to_status, event.created_at)
    _history(version, previous, to_status, ModelVersionStatusChange.Kind.STATUS, reason=reason, actor=actor,
             at=event.created_at, audit_seq=event.seq)
    return version


@transaction.atomic
def model_version_mlflow_sync_record(*, version_id: int, outcome: str, detail: str = "") -> ModelVersion:
    """Record what happened when MLflow's `champion` alias was moved to this version (audited)."""
    version = ModelVersion.objects.select_for_update(no_key=True).get(pk=version_id)
    version.mlflow_sync_status = outcome
    version.mlflow_sync_detail = detail[:500]
    version.mlflow_synced_at = timezone.now()
    version.save(update_fields=["mlflow_sync_status", "mlflow_sync_detail", "mlflow_synced_at"])
    audit_event_record(
        actor=Actor(type="system", id="mlflow_sync"),
        action="model.mlflow_sync",
        object_type="model_version",
        object_id=str(version.pk),
        model_version=version.label,
        model_sha256=version.onnx_sha256,
        inputs={"mlflow_model_name": version.mlflow_model_name or None,
                "mlflow_model_version": version.mlflow_model_version or None, "alias": "champion"},
        output={"outcome": outcome, "detail": detail[:500]},
    )
    metrics.MLFLOW_SYNC.labels(version.use_case, outcome or "never").inc()
    return version


# --- shadow (challenger) scoring ------------------------------------------------------------------------------


class ServedPrediction(Protocol):
    """What the shadow needs of a stored prediction (apps.predictions.models.Prediction)."""

    id: Any
    use_case: str
    patient_ref: str
    features: dict[str, float | None]
    probability: float
    positive: bool


def shadow_predictions_create(*, predictions: Sequence[ServedPrediction], actor: Actor,
                              source_ip: str | None = None) -> list[ShadowPrediction]:
    """Score already-stored predictions with their use case's challenger (if any) and store each shadow result
    with its `prediction.shadow` audit event, inside the caller's transaction (a savepoint per use case).

    Never raises and never touches the champion's rows: a failure of the challenger rolls back only its own
    savepoint, is logged (no patient values) and counted in `clinpredict_shadow_failures_total`."""
    from .loader import challenger_model

    stored: list[ShadowPrediction] = []
    by_use_case: dict[str, list[ServedPrediction]] = {}
    for prediction in predictions:
        by_use_case.setdefault(prediction.use_case, []).append(prediction)
    for use_case, group in by_use_case.items():
        try:
            # A savepoint around everything the shadow does, its lookups included: whatever fails in here, the
            # caller's transaction (the champion's predictions and their audit events) stays usable.
            with transaction.atomic():
                challenger = challenger_model(use_case)
                if challenger is None:
                    continue
                # The rows the champion was given, already validated and in canonical units; NaN marks missing.
                x = np.asarray([[np.nan if p.features[name] is None else p.features[name]
                                 for name in challenger.feature_order] for p in group], dtype=np.float32)
                probabilities = challenger.predict_proba(x)
                for prediction, raw in zip(group, probabilities, strict=True):
                    probability = float(raw)
                    band = challenger.risk_band(probability)
                    positive = probability >= challenger.threshold
                    shadow_id = uuid.uuid4()
                    event = audit_event_record(
                        actor=actor,
                        action="prediction.shadow",
                        object_type="shadow_prediction",
                        object_id=str(shadow_id),
                        patient_ref=prediction.patient_ref,
                        model_version=challenger.label,
                        model_sha256=challenger.sha256,
                        inputs={"prediction_id": str(prediction.id)},
                        output={"probability": probability, "threshold": challenger.threshold,
                                "risk_band": band, "positive": positive},
                        source_ip=source_ip,
                    )
                    stored.append(ShadowPrediction.objects.create(
                        id=shadow_id, created_at=event.created_at, prediction_id=prediction.id,
                        model_version_id=challenger.version_id, model_label=challenger.label,
                        model_sha256=challenger.sha256, probability=probability, threshold=challenger.threshold,
                        risk_band=band, positive=positive, audit_seq=event.seq,
                    ))
        except Exception as exc:
            stored = [s for s in stored if s.prediction_id not in {p.id for p in group}]
            metrics.SHADOW_FAILURES.labels(use_case).inc()
            logger.error("challenger (shadow) scoring failed; the champion's answer is unaffected",
                         extra={"use_case": use_case, "error_type": type(exc).__name__})
    return stored

