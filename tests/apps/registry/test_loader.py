"""A tampered model file is never served: the loader refuses it, /readyz reports it, predictions answer 503."""

import json
from typing import Any

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from apps.audit.models import AuditEvent
from apps.predictions.models import Prediction
from apps.registry.artifacts import ModelIntegrityError, model_dir
from apps.registry.loader import champion_model, clear_caches


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"use_case": "diabetes"})


def _tamper(version: Any, name: str = "model.onnx") -> bytes:
    path = model_dir(version) / name
    original = path.read_bytes()
    path.write_bytes(original[:-16] + b"tampered-bytes!!")
    clear_caches()
    return original


def test_loader_verifies_and_reports_a_good_champion(champion: Any) -> None:
    model = champion_model("diabetes")

    assert model is not None and model.sha256 == champion.onnx_sha256
    assert _gauge("clinpredict_model_integrity_ok") == 1.0
    assert _gauge("clinpredict_champion_loaded") == 1.0


@pytest.mark.parametrize("artifact", ["model.onnx", "model.xgb.ubj"])
def test_tampered_file_is_refused_with_an_alert_and_gauges_at_zero(champion: Any, artifact: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    _tamper(champion, artifact)

    with pytest.raises(ModelIntegrityError, match=f"{artifact} of diabetes@1 does not match its registered sha256"):
        champion_model("diabetes")

    assert _gauge("clinpredict_model_integrity_ok") == 0.0
    assert _gauge("clinpredict_champion_loaded") == 0.0
    alert = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert alert and alert[0].getMessage() == "model artifact sha256 mismatch; refusing to serve"
    assert alert[0].artifact == artifact


def test_model_joblib_is_not_read_by_the_loader(champion: Any) -> None:
    """The web process serves ONNX + the non-pickle explainer: even a missing model.joblib changes nothing."""
    (model_dir(champion) / "model.joblib").unlink()
    clear_caches()

    model = champion_model("diabetes")

    assert model is not None and model.explainer.kind == "xgboost_treeshap"
    assert _gauge("clinpredict_champion_loaded") == 1.0


def test_restored_file_is_served_again(champion: Any) -> None:
    original = _tamper(champion)
    with pytest.raises(ModelIntegrityError):
        champion_model("diabetes")

    (model_dir(champion) / "model.onnx").write_bytes(original)

    assert champion_model("diabetes") is not None
    assert _gauge("clinpredict_champion_loaded") == 1.0


def test_readyz_reports_a_tampered_champion(champion: Any, client: Client) -> None:
    _tamper(champion)

    response = client.get("/readyz")

    assert response.status_code == 503
    models = response.json()["checks"]["models"]
    assert models["ok"] is False
    assert models["champions"]["diabetes"] == {
        "ok": False, "version": "diabetes@1",
        "error": "Model file model.onnx of diabetes@1 does not match its registered sha256; it will not be served."}
    metrics = client.get("/metrics").content.decode()
    assert 'clinpredict_model_integrity_ok{use_case="diabetes"} 0.0' in metrics
    assert 'clinpredict_champion_loaded{use_case="diabetes"} 0.0' in metrics


def test_prediction_with_a_tampered_champion_is_503_with_a_clear_error(champion: Any, api_client: Any,
                                                                       valid_features: dict) -> None:
    _tamper(champion)

    response = api_client("predictions:write").post(
        "/api/v1/predictions", data=json.dumps({"use_case": "diabetes", "features": valid_features}),
        content_type="application/json")

    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "model_integrity",
        "message": "Model file model.onnx of diabetes@1 does not match its registered sha256; it will not be served.",
        "fields": {},
    }
    assert Prediction.objects.count() == 0
    assert not AuditEvent.objects.filter(action="prediction.create").exists()
