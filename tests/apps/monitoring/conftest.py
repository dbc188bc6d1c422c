"""Monitoring fixtures: Pima rows turned into prediction requests and scored through the real prediction service
(validated, ONNX inference, audited), model admins, eager Celery for the in-process tests."""

import csv
import random
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.audit.actors import Actor

ACTOR = Actor(type="system", id="monitoring-tests")
REPO = Path(__file__).resolve().parents[3]
DIABETES_SPEC = REPO / "ml" / "specs" / "diabetes.yaml"


@pytest.fixture(scope="session")
def pima_rows(pima_csv: Path) -> list[dict[str, str]]:
    with pima_csv.open(newline="") as handle:
        return list(csv.DictReader(handle))


def pima_features(row: dict[str, str], *, shift: dict[str, float] | None = None) -> dict[str, float | None]:
    """One Pima row as a prediction's features (canonical units; the dataset's 0 = not measured becomes None),
    with `shift` multiplying the named features (e.g. {"glucose": 1.3})."""
    from ml.schema import UseCaseSpec

    spec = UseCaseSpec.load(DIABETES_SPEC)
    features: dict[str, float | None] = {}
    for feature in spec.features:
        value = float(row[feature.column])
        if value in feature.missing_values:
            features[feature.name] = None
        else:
            features[feature.name] = round(value * (shift or {}).get(feature.name, 1.0), 4)
    return features


@pytest.fixture
def predict_pima(pima_rows: list[dict[str, str]]) -> Callable[..., list[Any]]:
    """`predict_pima(n, shift=None, seed=0, skip=())`: score n random valid Pima rows (patient_ref = the row's
    patient_id, none of `skip`) through `prediction_create_many`; rows the live model's spec rejects are left out."""
    from apps.predictions.services import PredictionRequest, prediction_create_many
    from apps.registry.loader import champion_model
    from ml.validation import validate_record

    def make(n: int, *, shift: dict[str, float] | None = None, seed: int = 0, channel: str = "api",
             skip: Collection[str] = ()) -> list[Any]:
        model = champion_model("diabetes")
        assert model is not None
        rows = list(pima_rows)
        random.Random(seed).shuffle(rows)
        requests = []
        for row in (r for r in rows if r["patient_id"] not in skip):
            features = pima_features(row, shift=shift)
            if validate_record(model.spec, features).ok:
                requests.append(PredictionRequest("diabetes", features, row["patient_id"]))
            if len(requests) == n:
                break
        assert len(requests) == n
        return prediction_create_many(requests=requests, actor=ACTOR, channel=channel)

    return make


@pytest.fixture
def model_admin_client(db: None, user_in_group: Callable[..., Any]) -> Client:
    client = Client()
    client.force_login(user_in_group("Model admins", "modeladmin", staff=True))
    return client


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Tasks run in this process when enqueued (the in-process tests; tests/workers uses a real worker)."""
    from clinpredict.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def retrain_settings(settings: Any, tmp_path: Path, pima_csv: Path) -> Any:
    """Retraining on a copy of the Pima CSV, fast training config, no MLflow, work folder in tmp."""
    data = tmp_path / "data" / "diabetes.csv"
    data.parent.mkdir(parents=True)
    data.write_bytes(pima_csv.read_bytes())
    settings.CLINPREDICT_RETRAIN = {**settings.CLINPREDICT_RETRAIN, "datasets": {"diabetes": data},
                                    "work_dir": tmp_path / "retraining", "config": "fast", "tracking": False}
    return settings
