"""The challenger scores every prediction in the shadow: stored and audited, never in any response, and never able
to break or change the champion's answer."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client
from prometheus_client import REGISTRY

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.predictions.models import Prediction
from apps.registry.artifacts import model_dir
from apps.registry.loader import clear_caches
from apps.registry.models import ModelVersion, ShadowPrediction
from apps.registry.selectors import shadow_agreement
from apps.registry.services import model_version_set_challenger

from .conftest import ACTOR

FORM = {
    "patient_id": "ward-7", "pregnancies": "2", "glucose": "148", "glucose__unit": "mg/dL", "blood_pressure": "72",
    "blood_pressure__unit": "mm[Hg]", "skin_thickness": "35", "skin_thickness__unit": "mm", "insulin": "",
    "insulin__unit": "u[IU]/mL", "bmi": "33.6", "pedigree": "0.627", "age": "50",
}


@pytest.fixture
def challenger(champion: Any, register: Any, other_trained_dir: Path) -> Any:
    version = register(other_trained_dir)
    return model_version_set_challenger(version_id=version.pk, actor=ACTOR, reason="shadow the seed-11 model")


def _patients(valid_features: dict[str, Any], n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    items = []
    for i in range(n):
        features = json.loads(json.dumps(valid_features))
        features["glucose"] = float(rng.uniform(70, 200))
        features["bmi"] = round(float(rng.uniform(19, 48)), 1)
        features["age"] = int(rng.integers(21, 80))
        items.append({"use_case": "diabetes", "patient_id": f"p-{i}", "features": features})
    return items


@pytest.fixture
def writer(api_client: Any) -> Client:
    return api_client("predictions:write")


def _post(client: Client, body: Any) -> Any:
    return client.post("/api/v1/predictions", data=json.dumps(body), content_type="application/json")


def test_each_prediction_is_scored_by_the_challenger_stored_and_audited(challenger: Any, writer: Client,
                                                                        valid_features: dict) -> None:
    from ml.export import load_joblib, predict_proba

    single = _post(writer, _patients(valid_features, 1)[0])
    batch = _post(writer, _patients(valid_features, 4)[1:])

    assert single.status_code == 201 and batch.status_code == 201
    shadows = list(ShadowPrediction.objects.select_related("prediction"))
    assert len(shadows) == Prediction.objects.count() == 4
    assert {s.prediction_id for s in shadows} == set(Prediction.objects.values_list("id", flat=True))
    fitted = load_joblib(model_dir(challenger) / "model.joblib")
    for shadow in shadows:
        assert shadow.model_label == "diabetes@2" and shadow.model_sha256 == challenger.onnx_sha256
        row = np.array([[np.nan if shadow.prediction.features[n] is None else shadow.prediction.features[n]
                         for n in challenger.manifest["feature_order"]]], dtype=np.float32)
        assert shadow.probability == pytest.approx(float(predict_proba(fitted, row)[0]), abs=1e-5)
        assert shadow.positive == (shadow.probability >= challenger.threshold)
        event = AuditEvent.objects.get(seq=shadow.audit_seq)
        assert event.action == "prediction.shadow" and event.model_version == "diabetes@2"
        assert event.inputs == {"prediction_id": str(shadow.prediction_id)}
        assert event.output["probability"] == shadow.probability
        assert event.patient_ref == shadow.prediction.patient_ref
    assert audit_chain_verify().ok


def test_shadow_scores_are_absent_from_every_response(challenger: Any, writer: Client, api_client: Any,
                                                      valid_features: dict,
                                                      clinician_client: Client) -> None:
    responses = [_post(writer, _patients(valid_features, 1)[0]), _post(writer, _patients(valid_features, 2))]
    reader = api_client("predictions:read")
    first = Prediction.objects.order_by("created_at").first()
    assert first is not None
    responses += [reader.get("/api/v1/predictions"), reader.get(f"/api/v1/predictions/{first.id}")]
    web = clinician_client.post("/predict/diabetes/", FORM, follow=True)
    responses += [web, clinician_client.get("/")]

    shadows = list(ShadowPrediction.objects.all())
    assert len(shadows) == 4
    assert all(r.status_code in (200, 201) for r in responses), [r.status_code for r in responses]
    champion_probabilities = {repr(p) for p in Prediction.objects.values_list("probability", flat=True)}
    for response in responses:
        body = response.content.decode()
        assert "diabetes@2" not in body and challenger.onnx_sha256 not in body
        assert "shadow" not in body.lower() and "challenger" not in body.lower()
        for shadow in shadows:
            if repr(shadow.probability) not in champion_probabilities:
                assert repr(shadow.probability) not in body


def test_no_shadow_is_stored_without_a_challenger(champion: Any, writer: Client, valid_features: dict) -> None:
    assert _post(writer, _patients(valid_features, 1)[0]).status_code == 201

    assert ShadowPrediction.objects.count() == 0
    assert not AuditEvent.objects.filter(action="prediction.shadow").exists()


def test_a_broken_challenger_never_changes_the_champion_answer(challenger: Any, writer: Client,
                                                               valid_features: dict) -> None:
    body = _patients(valid_features, 1)[0]
    before = _post(writer, body).json()
    failures = REGISTRY.get_sample_value("clinpredict_shadow_failures_total", {"use_case": "diabetes"}) or 0.0
    path = model_dir(challenger) / "model.onnx"
    path.write_bytes(path.read_bytes() + b"tampered")
    clear_caches()

    after = _post(writer, body)

    assert after.status_code == 201
    assert after.json()["probability"] == before["probability"]
    assert after.json()["model_version"] == "diabetes@1"
    assert ShadowPrediction.objects.count() == 1  # only the first request's
    assert Prediction.objects.count() == 2
    assert AuditEvent.objects.filter(action="prediction.shadow").count() == 1
    assert REGISTRY.get_sample_value("clinpredict_shadow_failures_total", {"use_case": "diabetes"}) == failures + 1
    assert audit_chain_verify().ok


def test_agreement_and_mean_difference_are_computed_and_shown_in_admin(challenger: Any, writer: Client,
                                                                       valid_features: dict,
                                                                       model_admin_client: Client) -> None:
    assert _post(writer, _patients(valid_features, 30)).status_code == 201
    pairs = [(s.probability, s.positive, s.prediction.probability, s.prediction.positive)
             for s in ShadowPrediction.objects.select_related("prediction")]
    expected_agreement = sum(sp == cp for _, sp, _, cp in pairs) / len(pairs)
    expected_diff = sum(abs(s - c) for s, _, c, _ in pairs) / len(pairs)

    (summary,) = shadow_agreement(version=challenger)
    page = model_admin_client.get(f"/admin/registry/modelversion/{challenger.pk}/change/").content.decode()

    assert summary.champion_label == "diabetes@1" and summary.n == 30
    assert summary.agreement_rate == pytest.approx(expected_agreement)
    assert summary.mean_abs_difference == pytest.approx(expected_diff)
    assert expected_diff > 0  # two genuinely different models
    assert "Challenger (shadow) agreement with the champion" in page
    assert f"({expected_agreement:.4f})" in page and f"{expected_diff:.4f}" in page


def test_one_challenger_per_use_case_and_promotion_ends_the_shadow(challenger: Any, register: Any,
                                                                   distinct_model_dir: Any, writer: Client,
                                                                   valid_features: dict, promote: Any) -> None:
    newer = register(distinct_model_dir())
    model_version_set_challenger(version_id=newer.pk, actor=ACTOR, reason="replace the shadow")
    assert ModelVersion.objects.get(pk=challenger.pk).status == "candidate"
    assert ModelVersion.objects.filter(status="challenger").get().pk == newer.pk

    promote(ModelVersion.objects.get(pk=newer.pk), "shadow looked good")
    response = _post(writer, _patients(valid_features, 1)[0])

    assert response.json()["model_version"] == newer.label
    assert not ModelVersion.objects.filter(status="challenger").exists()
    assert ShadowPrediction.objects.count() == 0
