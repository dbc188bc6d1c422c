import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent
from apps.core.exceptions import ApplicationError, ServiceUnavailable
from apps.registry.loader import champion_model, clear_caches, model_dir
from apps.registry.models import ModelVersion
from apps.registry.services import model_version_promote, model_version_register

ACTOR = Actor(type="system", id="tests")


def test_register_copies_verified_artifacts_and_audits(db: None, trained_dir: Path, settings: Any) -> None:
    result = model_version_register(source_dir=trained_dir, actor=ACTOR)

    version = result.version
    assert result.created and version.label == "diabetes@1" and version.status == "candidate"
    assert (model_dir(version) / "model.onnx").is_file()
    assert str(model_dir(version)).startswith(str(settings.MODEL_STORAGE_DIR))
    assert AuditEvent.objects.filter(action="model.register", object_id=str(version.pk)).count() == 1


def test_registering_the_same_folder_twice_adds_nothing(db: None, trained_dir: Path) -> None:
    first = model_version_register(source_dir=trained_dir, actor=ACTOR)
    second = model_version_register(source_dir=trained_dir, actor=ACTOR)

    assert not second.created and second.version.pk == first.version.pk
    assert ModelVersion.objects.count() == 1


def test_altered_artifact_is_refused_and_leaves_nothing(db: None, model_dir_copy: Any, settings: Any) -> None:
    folder = model_dir_copy()
    with (folder / "model.onnx").open("ab") as handle:
        handle.write(b"\0")

    with pytest.raises(ApplicationError, match="does not match its sha256"):
        model_version_register(source_dir=folder, actor=ACTOR)

    assert ModelVersion.objects.count() == 0
    assert not any(Path(settings.MODEL_STORAGE_DIR).glob("*/*/model.onnx"))


@pytest.mark.parametrize(
    ("change", "message"),
    [({"onnx_parity_max_abs_diff": 0.01}, "parity"), ({"spec": None}, None)],
)
def test_failed_parity_or_incomplete_manifest_is_refused(db: None, model_dir_copy: Any, change: dict,
                                                          message: str | None) -> None:
    folder = model_dir_copy(**change)
    if message is None:  # drop the key entirely
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["spec"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
        message = "missing keys: spec"

    with pytest.raises(ApplicationError, match=message):
        model_version_register(source_dir=folder, actor=ACTOR)
    assert ModelVersion.objects.count() == 0


def test_promotion_archives_previous_champion_and_requires_reason(db: None, trained_dir: Path,
                                                                   distinct_model_dir: Any) -> None:
    first = model_version_register(source_dir=trained_dir, actor=ACTOR).version
    second = model_version_register(source_dir=distinct_model_dir(), actor=ACTOR).version
    model_version_promote(version_id=first.pk, actor=ACTOR, reason="first")

    with pytest.raises(ApplicationError, match="reason"):
        model_version_promote(version_id=second.pk, actor=ACTOR, reason="  ")
    model_version_promote(version_id=second.pk, actor=ACTOR, reason="better calibrated")

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("archived", "champion")
    events = list(AuditEvent.objects.filter(action="model.promote").order_by("seq"))
    assert [e.inputs for e in events] == [{"reason": "first", "from": None, "to": "diabetes@1"},
                                          {"reason": "better calibrated", "from": "diabetes@1", "to": "diabetes@2"}]
    assert champion_model("diabetes").label == "diabetes@2"


def test_loader_refuses_a_tampered_onnx_file(champion: Any) -> None:
    path = model_dir(champion) / "model.onnx"
    path.write_bytes(path.read_bytes() + b"tampered")
    clear_caches()

    with pytest.raises(ServiceUnavailable, match="does not match its registered sha256"):
        champion_model("diabetes")


def test_loaded_model_matches_the_joblib_pipeline(champion: Any) -> None:
    from ml.export import load_joblib, predict_proba

    model = champion_model("diabetes")
    assert model is not None
    x = np.array([[2, 148, 72, 35, np.nan, 33.6, 0.627, 50], [1, 85, np.nan, 29, 0, 26.6, 0.351, 31]],
                 dtype=np.float32)

    onnx_p = model.predict_proba(x)
    joblib_p = predict_proba(load_joblib(model_dir(champion) / "model.joblib"), x)

    assert np.max(np.abs(onnx_p - joblib_p)) <= 1e-5


def test_registration_records_evidence_provenance_and_history(db: None, trained_dir: Path) -> None:
    manifest = json.loads((trained_dir / "manifest.json").read_text())

    version = model_version_register(source_dir=trained_dir, actor=ACTOR).version

    test = manifest["metrics"]["test"]
    assert (version.test_auroc, version.test_auroc_ci_low, version.test_auroc_ci_high) == (
        test["auroc"], test["auroc_ci"][0], test["auroc_ci"][1])
    assert version.calibration_slope == test["calibration_slope"]
    assert version.split_sha256 == manifest["split_sha256"] and version.dataset_sha256 == manifest["dataset_sha256"]
    assert version.artifacts["model_card.html"]["sha256"] == manifest["artifacts"]["model_card.html"]["sha256"]
    assert {"plots/roc.png", "plots/calibration.png"} <= set(version.artifacts)
    assert version.registered_by_actor == "system:tests" and version.source == str(trained_dir)
    (change,) = version.status_changes.all()
    event = AuditEvent.objects.get(action="model.register")
    assert (change.from_status, change.to_status, change.kind, change.audit_seq) == ("", "candidate", "register",
                                                                                    event.seq)


def test_missing_plot_is_refused_and_leaves_nothing(db: None, model_dir_copy: Any, settings: Any) -> None:
    folder = model_dir_copy()
    (folder / "plots" / "calibration.png").unlink()

    with pytest.raises(ApplicationError, match="artifact plots/calibration.png is listed in the manifest but missing"):
        model_version_register(source_dir=folder, actor=ACTOR)

    assert ModelVersion.objects.count() == 0 and not AuditEvent.objects.exists()
    assert not any(Path(settings.MODEL_STORAGE_DIR).glob("*/*"))


def test_register_model_command_reports_and_refuses_clearly(db: None, trained_dir: Path,
                                                            model_dir_copy: Any) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command("register_model", "--from", str(trained_dir), stdout=out)
    call_command("register_model", "--from", str(trained_dir), stdout=out)
    bad = model_dir_copy(onnx_parity_max_abs_diff=0.2)

    with pytest.raises(CommandError, match="ONNX parity check failed"):
        call_command("register_model", "--from", str(bad), stdout=out)
    assert "registered diabetes@1" in out.getvalue() and "already registered as diabetes@1" in out.getvalue()
