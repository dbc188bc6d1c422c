"""The registry's only contact with MLflow: move the `champion` alias after a promotion, and fetch a logged run
folder for registration. mlflow is imported lazily, so the web process pays for it only when it is used.

Tracking/registry URI: settings.MLFLOW_TRACKING_URI (the deployment's MLflow), unless one is passed in.
"""

import logging
import os
from pathlib import Path
from typing import Any

from django.conf import settings

from .models import ModelVersion

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"


def _client(tracking_uri: str | None) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    from mlflow import MlflowClient

    uri = tracking_uri or settings.MLFLOW_TRACKING_URI
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def registered_model_name(version: ModelVersion) -> str:
    return version.mlflow_model_name or f"clinpredict-{version.use_case}"


def champion_alias_set(*, model_name: str, model_version: str, tracking_uri: str | None = None) -> None:
    _client(tracking_uri).set_registered_model_alias(model_name, CHAMPION_ALIAS, str(model_version))


def champion_alias_get(*, model_name: str, tracking_uri: str | None = None) -> str | None:
    """The MLflow model version the `champion` alias points at, or None when it points nowhere."""
    client = _client(tracking_uri)
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
            return None
        raise


def champion_alias_sync(*, version_id: int, tracking_uri: str | None = None) -> str:
    """Point MLflow's `champion` alias of `clinpredict-<use_case>` at this version's MLflow model version.
    Returns and records the outcome (ok, skipped, failed); never raises: MLflow never blocks a promotion."""
    from .services import model_version_mlflow_sync_record

    version = ModelVersion.objects.get(pk=version_id)
    if version.status != ModelVersion.Status.CHAMPION:
        outcome, detail = ModelVersion.MlflowSync.SKIPPED, "no longer champion; a later promotion moves the alias"
    elif not version.mlflow_model_version:
        outcome, detail = ModelVersion.MlflowSync.SKIPPED, "registered without an MLflow model version"
    else:
        name = registered_model_name(version)
        try:
            champion_alias_set(model_name=name, model_version=version.mlflow_model_version,
                               tracking_uri=tracking_uri)
        except Exception as exc:
            logger.error("MLflow champion alias sync failed; the promotion stands",
                         extra={"model_version": version.label, "error_type": type(exc).__name__})
            outcome, detail = ModelVersion.MlflowSync.FAILED, f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            outcome, detail = ModelVersion.MlflowSync.OK, f"{name} alias '{CHAMPION_ALIAS}' -> version " \
                f"{version.mlflow_model_version}"
    model_version_mlflow_sync_record(version_id=version.pk, outcome=outcome, detail=detail)
    return str(outcome)


def download_run_folder(*, run_id: str, dst: Path, tracking_uri: str | None = None) -> Path:
    """Rebuild an `ml train` run folder from what `ml.tracking.log_training_run` logged: `run/*` (manifest, model
    files, card, validation report) and `plots/*`. Returns the folder (not yet verified)."""
    from mlflow.artifacts import download_artifacts

    client = _client(tracking_uri)
    uri = tracking_uri or settings.MLFLOW_TRACKING_URI
    try:
        client.get_run(run_id)
    except Exception as exc:
        from apps.core.exceptions import ApplicationError

        raise ApplicationError(f"MLflow has no run '{run_id}' at the configured tracking URI.",
                               code="mlflow_run_missing", fields={"run_id": ["Unknown run."]}) from exc
    folder = Path(download_artifacts(run_id=run_id, artifact_path="run", dst_path=str(dst), tracking_uri=uri))
    artifact_names = {item.path for item in client.list_artifacts(run_id)}
    if "plots" in artifact_names:
        download_artifacts(run_id=run_id, artifact_path="plots", dst_path=str(folder), tracking_uri=uri)
    return folder
