"""Write service for `python manage.py migrate_model_artifacts`: gives versions registered before ``ml train`` wrote a
non-pickle explainer their explainer file. Kept out of apps/registry/services.py because it unpickles model.joblib
(joblib, scikit-learn, xgboost): the web process never imports this module (import-linter contract in
pyproject.toml)."""

import hashlib
import json
from dataclasses import dataclass

from django.core.files.storage import Storage
from django.db import transaction
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import audit_event_record
from apps.core.exceptions import ApplicationError
from apps.core.storage import model_storage, read_stored, save_new
from ml import export

from .artifacts import artifact_name, read_verified, registered_artifacts
from .fitted import load_fitted_model_for_tools
from .models import ModelVersion

__all__ = ["ExplainerMigration", "model_version_explainer_migrate"]


@dataclass(frozen=True)
class ExplainerMigration:
    version: ModelVersion
    migrated: bool  # False: it already had a registered, loadable explainer file
    file: str
    sha256: str
    parity_max_abs_diff: float | None


def _replace(storage: Storage, name: str, data: bytes) -> None:
    """Put `data` under `name` in model storage. The only in-place change registered storage ever sees: this
    command adds the explainer file and its entry in manifest.json to a version registered before they existed."""
    if storage.exists(name):
        storage.delete(name)
    save_new(storage, name, data)


def _stored_or_none(storage: Storage, name: str) -> bytes | None:
    return read_stored(storage, name) if storage.exists(name) else None


def model_version_explainer_migrate(*, version_id: int, actor: Actor, force: bool = False) -> ExplainerMigration:
    """Give a version registered before ``ml train`` wrote a non-pickle explainer its explainer file, so the web
    process can serve it without model.joblib (`python manage.py migrate_model_artifacts`).

    Runs in a management command, never in the web process: it unpickles the version's hash-verified model.joblib,
    writes ``model.xgb.ubj`` / ``model.mlp.json`` / ``model.linear.json`` into the version's folder in model storage,
    checks that the explainer reproduces the fitted model's explanations within 1e-6 on rows drawn from the spec's
    plausible ranges, and records the file's sha256 in ``artifacts`` and the calibration constants and medians in
    ``manifest["explainer"]`` (database row and manifest.json), with a `model.migrate_artifacts` audit event, in one
    transaction. Idempotent: a version whose explainer is registered and intact is left alone unless ``force``."""
    storage = model_storage()
    saved: dict[str, bytes | None] = {}
    try:
        with transaction.atomic():
            version = ModelVersion.objects.select_for_update(no_key=True).get(pk=version_id)
            current = version.manifest.get("explainer")
            name = current.get("file") if isinstance(current, dict) else None
            if name and name in registered_artifacts(version) and not force:
                read_verified(version, name)  # raises ModelIntegrityError when the file was altered
                return ExplainerMigration(version, False, name, registered_artifacts(version)[name],
                                          (current.get("parity") or {}).get("max_abs_diff"))
            model = load_fitted_model_for_tools(version)
            name, raw, meta = export.explainer_artifact(model)
            spec_features = {f["name"]: f for f in version.manifest.get("spec", {}).get("features", [])}
            ranges = [(spec_features.get(n, {}).get("min"), spec_features.get(n, {}).get("max"))
                      for n in model.feature_names]
            medians = [meta["medians"][n] for n in model.feature_names]
            rows = export.explainer_check_rows(medians, ranges, seed=int(version.manifest.get("seed", 0)))
            try:
                meta["parity"] = {**export.explainer_parity(model, meta, raw, rows),
                                  "rows": "uniform within each feature's plausible range, plus a copy with ~30% NaN"}
            except export.ExportError as exc:
                raise ApplicationError(f"{version.label}: {exc}; nothing was changed.",
                                       code="explainer_parity") from exc
            sha = hashlib.sha256(raw).hexdigest()
            meta["migrated"] = {"at": timezone.now().isoformat(timespec="seconds"), "by": actor.label}
            artifacts = dict(version.artifacts) or {
                "model.onnx": {"sha256": version.onnx_sha256, "bytes": None},
                "model.joblib": {"sha256": version.joblib_sha256, "bytes": None},
            }
            artifacts[name] = {"sha256": sha, "bytes": len(raw)}
            version.manifest = {**version.manifest, "explainer": meta,
                                "artifacts": {**(version.manifest.get("artifacts") or {}), name: artifacts[name]}}
            version.artifacts = artifacts
            version.save(update_fields=["manifest", "artifacts"])
            audit_event_record(
                actor=actor,
                action="model.migrate_artifacts",
                object_type="model_version",
                object_id=str(version.pk),
                model_version=version.label,
                model_sha256=version.onnx_sha256,
                inputs={"from": "model.joblib", "joblib_sha256": version.joblib_sha256, "force": force},
                output={"file": name, "sha256": sha, "kind": meta["kind"],
                        "parity_max_abs_diff": meta["parity"]["max_abs_diff"]},
            )
            # The files last, still inside the transaction; if anything fails from here to the commit, the folder is
            # put back as it was (the database rolls back by itself).
            file_name, manifest_name = artifact_name(version, name), artifact_name(version, "manifest.json")
            saved = {stored: _stored_or_none(storage, stored) for stored in (file_name, manifest_name)}
            _replace(storage, file_name, raw)
            stored_manifest = saved[manifest_name]
            on_disk = json.loads(stored_manifest) if stored_manifest is not None else dict(version.manifest)
            on_disk["explainer"] = meta
            on_disk.setdefault("artifacts", {})[name] = artifacts[name]
            _replace(storage, manifest_name, (json.dumps(on_disk, indent=2) + "\n").encode("utf-8"))
    except BaseException:
        for stored, data in saved.items():
            _restore(storage, stored, data)
        raise
    return ExplainerMigration(version, True, name, sha, meta["parity"]["max_abs_diff"])


def _restore(storage: Storage, name: str, data: bytes | None) -> None:
    if data is None:
        if storage.exists(name):
            storage.delete(name)
    else:
        _replace(storage, name, data)
