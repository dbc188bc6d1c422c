"""Versions registered before the non-pickle explainer: refused by the web loader with a message naming
`migrate_model_artifacts`, never served from model.joblib; the command migrates them (idempotent, audited)."""

import json
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from prometheus_client import REGISTRY

from apps.audit.models import AuditEvent
from apps.core.exceptions import ApplicationError
from apps.registry.artifacts import model_dir
from apps.registry.loader import ModelNotMigrated, champion_model, clear_caches
from apps.registry.models import ModelVersion

ROWS = np.array([[6, 148, 72, 35, np.nan, 33.6, 0.627, 50], [1, 85, 66, 29, np.nan, 26.6, 0.351, 31],
                 [8, 183, 64, np.nan, np.nan, 23.3, 0.672, 32]], dtype=np.float32)


def _as_registered_before_the_explainer(version: ModelVersion, *, old_artifacts: bool = False) -> ModelVersion:
    """What a version registered by the previous release looks like: no explainer block, no explainer file."""
    name = version.manifest["explainer"]["file"]
    (model_dir(version) / name).unlink()
    manifest = {k: v for k, v in version.manifest.items() if k != "explainer"}
    manifest["artifacts"] = {k: v for k, v in manifest["artifacts"].items() if k != name}
    version.manifest = manifest
    version.artifacts = {} if old_artifacts else {k: v for k, v in version.artifacts.items() if k != name}
    version.save(update_fields=["manifest", "artifacts"])
    on_disk = json.loads((model_dir(version) / "manifest.json").read_text())
    on_disk.pop("explainer")
    on_disk["artifacts"].pop(name)
    (model_dir(version) / "manifest.json").write_text(json.dumps(on_disk))
    clear_caches()
    return version


def test_registration_requires_the_explainer(model_dir_copy: Any, register: Any) -> None:
    folder = model_dir_copy()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("explainer")
    (folder / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(ApplicationError, match="missing keys: explainer; .* train again"):
        register(folder)


def test_registration_requires_the_explainer_file_in_artifacts(model_dir_copy: Any, register: Any) -> None:
    folder = model_dir_copy()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"].pop("model.xgb.ubj")
    (folder / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(ApplicationError, match="manifest.json lists no model.xgb.ubj"):
        register(folder)


def test_unmigrated_champion_is_refused_with_the_command_named_and_never_read_from_joblib(
        champion: Any, client: Client, api_client: Any, valid_features: dict) -> None:
    _as_registered_before_the_explainer(champion)

    with pytest.raises(ModelNotMigrated, match="run `python manage.py migrate_model_artifacts` to serve it"):
        champion_model("diabetes")
    assert REGISTRY.get_sample_value("clinpredict_champion_loaded", {"use_case": "diabetes"}) == 0.0

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "migrate_model_artifacts" in ready.json()["checks"]["models"]["champions"]["diabetes"]["error"]
    response = api_client("predictions:write").post(
        "/api/v1/predictions", data=json.dumps({"use_case": "diabetes", "features": valid_features}),
        content_type="application/json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_migrated"


def test_migrate_model_artifacts_restores_todays_explanations_and_is_idempotent(champion: Any) -> None:
    from ml import explain, export

    _as_registered_before_the_explainer(champion, old_artifacts=True)
    out = StringIO()

    call_command("migrate_model_artifacts", stdout=out)

    version = ModelVersion.objects.get(pk=champion.pk)
    block = version.manifest["explainer"]
    assert "diabetes@1: wrote model.xgb.ubj (sha256 " in out.getvalue()
    assert block["kind"] == "xgboost_treeshap" and block["parity"]["max_abs_diff"] <= 1e-6
    assert block["migrated"]["by"] == "system:migrate_model_artifacts"
    sha = export.sha256_file(model_dir(version) / "model.xgb.ubj")
    assert version.artifacts["model.xgb.ubj"]["sha256"] == sha
    assert {"model.onnx", "model.joblib", "model.xgb.ubj"} <= set(version.artifacts)
    on_disk = json.loads((model_dir(version) / "manifest.json").read_text())
    assert on_disk["explainer"] == block and on_disk["artifacts"]["model.xgb.ubj"]["sha256"] == sha
    event = AuditEvent.objects.get(action="model.migrate_artifacts")
    assert event.model_version == "diabetes@1" and event.output["sha256"] == sha

    model = champion_model("diabetes")
    fitted = export.load_joblib(model_dir(version) / "model.joblib")
    assert model is not None
    assert np.max(np.abs(model.explain(ROWS) - explain.explain(fitted, ROWS))) <= 1e-6

    again = StringIO()
    call_command("migrate_model_artifacts", stdout=again)
    assert "diabetes@1: already migrated (model.xgb.ubj" in again.getvalue()
    assert AuditEvent.objects.filter(action="model.migrate_artifacts").count() == 1


def test_migrate_refuses_an_altered_joblib_and_changes_nothing(champion: Any) -> None:
    version = _as_registered_before_the_explainer(champion)
    path = model_dir(version) / "model.joblib"
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    err = StringIO()

    with pytest.raises(CommandError, match="1 version\\(s\\) could not be migrated"):
        call_command("migrate_model_artifacts", stdout=StringIO(), stderr=err)

    assert "model.joblib of diabetes@1 does not match its registered sha256" in err.getvalue()
    assert "explainer" not in ModelVersion.objects.get(pk=version.pk).manifest
    assert not (model_dir(version) / "model.xgb.ubj").exists()
    assert not AuditEvent.objects.filter(action="model.migrate_artifacts").exists()


def test_a_freshly_registered_version_needs_no_migration(champion: Any) -> None:
    out = StringIO()
    call_command("migrate_model_artifacts", "--use-case", "diabetes", stdout=out)
    assert "already migrated" in out.getvalue()


def test_mlp_versions_migrate_too(mlp_trained_dir: Path, register: Any) -> None:
    from ml import explain, export

    version = _as_registered_before_the_explainer(register(mlp_trained_dir))
    out = StringIO()

    call_command("migrate_model_artifacts", "--use-case", "diabetes", "--version", str(version.version), stdout=out)

    assert "wrote model.mlp.json" in out.getvalue()
    from apps.registry.loader import load_version

    loaded = load_version(ModelVersion.objects.get(pk=version.pk))
    fitted = export.load_joblib(model_dir(version) / "model.joblib")
    assert loaded.explainer.kind == "mlp_occlusion"
    assert np.max(np.abs(loaded.explain(ROWS) - explain.explain(fitted, ROWS))) <= 1e-6


def test_logistic_versions_serve_from_model_linear_json_and_migrate(logistic_trained_dir: Path, register: Any) -> None:
    from apps.registry.loader import load_version
    from ml import explain, export

    version = register(logistic_trained_dir)
    assert version.manifest["explainer"]["kind"] == "logistic_linear"
    assert "model.linear.json" in version.artifacts
    loaded = load_version(ModelVersion.objects.get(pk=version.pk))
    fitted = export.load_joblib(model_dir(version) / "model.joblib")
    assert loaded.explainer.kind == "logistic_linear"
    assert np.max(np.abs(loaded.explain(ROWS) - explain.explain(fitted, ROWS))) <= 1e-6

    version = _as_registered_before_the_explainer(version)
    out = StringIO()
    call_command("migrate_model_artifacts", "--use-case", "diabetes", "--version", str(version.version), stdout=out)

    assert "wrote model.linear.json" in out.getvalue()
    migrated = load_version(ModelVersion.objects.get(pk=version.pk))
    assert migrated.explainer.kind == "logistic_linear"
    assert np.max(np.abs(migrated.explain(ROWS) - explain.explain(fitted, ROWS))) <= 1e-6
