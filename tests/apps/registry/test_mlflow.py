"""MLflow, for real (a sqlite tracking store in a temp folder): registration from a logged run, and the
`champion` alias following promotions after commit; MLflow trouble never blocks a promotion."""

import json
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from apps.audit.models import AuditEvent
from apps.registry.mlflow_sync import champion_alias_get
from apps.registry.models import ModelVersion
from apps.registry.services import model_version_promote, model_version_register, model_version_rollback

from .conftest import ACTOR


@pytest.fixture
def tracking_uri(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    settings.MLFLOW_TRACKING_URI = uri
    return uri


@pytest.fixture
def logged_run(tracking_uri: str, distinct_model_dir: Callable[[], Path]) -> Callable[[], tuple[Path, dict]]:
    """Log a distinct copy of the trained folder to MLflow exactly as `ml train` does (which also writes the MLflow
    ids into the folder's manifest.json); returns the folder and its new manifest."""
    import onnx

    from ml.tracking import log_training_run

    def make() -> tuple[Path, dict[str, Any]]:
        run_dir = distinct_model_dir()
        manifest = json.loads((run_dir / "manifest.json").read_text())
        logged = log_training_run(manifest, run_dir, onnx.load(str(run_dir / "model.onnx")), tracking_uri=tracking_uri)
        return run_dir, logged

    return make


@pytest.fixture
def run_tasks_eagerly(django_capture_on_commit_callbacks: Any) -> Iterator[Any]:
    """The sync task runs in-process, and on-commit callbacks run when the promotion's transaction ends."""
    from clinpredict.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield django_capture_on_commit_callbacks
    app.conf.task_always_eager = previous


def test_register_model_from_an_mlflow_run(db: None, logged_run: Any) -> None:
    _, manifest = logged_run()
    out = StringIO()

    call_command("register_model", "--from-mlflow-run", manifest["mlflow_run_id"], stdout=out)

    version = ModelVersion.objects.get()
    assert "registered diabetes@1" in out.getvalue()
    assert version.source == f"mlflow:runs:/{manifest['mlflow_run_id']}"
    assert (version.mlflow_run_id, version.mlflow_model_version) == (manifest["mlflow_run_id"], "1")
    assert version.mlflow_model_name == "clinpredict-diabetes"
    assert {"model.onnx", "model.joblib", "model_card.html", "plots/roc.png"} <= set(version.artifacts)


def test_unknown_mlflow_run_is_refused_and_leaves_nothing(db: None, tracking_uri: str) -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="MLflow has no run 'no-such-run'"):
        call_command("register_model", "--from-mlflow-run", "no-such-run", stdout=StringIO())
    assert ModelVersion.objects.count() == 0


def test_champion_alias_follows_promotions_and_rollback(db: None, logged_run: Any, tracking_uri: str,
                                                        run_tasks_eagerly: Any) -> None:
    first = model_version_register(source_dir=logged_run()[0], actor=ACTOR).version
    second = model_version_register(source_dir=logged_run()[0], actor=ACTOR).version
    assert (first.mlflow_model_version, second.mlflow_model_version) == ("1", "2")

    aliases = []
    for step in (lambda: model_version_promote(version_id=first.pk, actor=ACTOR, reason="first"),
                 lambda: model_version_promote(version_id=second.pk, actor=ACTOR, reason="second"),
                 lambda: model_version_rollback(use_case="diabetes", actor=ACTOR, reason="back")):
        with run_tasks_eagerly(execute=True):
            step()
        aliases.append(champion_alias_get(model_name="clinpredict-diabetes", tracking_uri=tracking_uri))

    assert aliases == ["1", "2", "1"]
    first.refresh_from_db()
    assert first.mlflow_sync_status == "ok" and "alias 'champion' -> version 1" in first.mlflow_sync_detail
    assert AuditEvent.objects.filter(action="model.mlflow_sync", output__outcome="ok").count() == 3


def test_mlflow_failure_is_recorded_and_the_promotion_stands(register: Any, edited_copy: Any, tracking_uri: str,
                                                             run_tasks_eagerly: Any) -> None:
    # The manifest names an MLflow model version the tracking store has never seen.
    version = register(edited_copy(lambda m: m.update(mlflow_model_version=7, mlflow_model_name="clinpredict-x")))

    with run_tasks_eagerly(execute=True):
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="mlflow is out of sync")

    version.refresh_from_db()
    assert version.status == "champion"
    assert version.mlflow_sync_status == "failed" and version.mlflow_sync_detail
    event = AuditEvent.objects.get(action="model.mlflow_sync")
    assert event.output["outcome"] == "failed"


def test_version_without_mlflow_id_is_skipped_cleanly(register: Any, trained_dir: Path,
                                                      run_tasks_eagerly: Any) -> None:
    version = register(trained_dir)

    with run_tasks_eagerly(execute=True):
        model_version_promote(version_id=version.pk, actor=ACTOR, reason="no tracking")

    version.refresh_from_db()
    assert version.status == "champion" and version.mlflow_sync_status == "skipped"
    assert version.mlflow_sync_detail == "registered without an MLflow model version"

