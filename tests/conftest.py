"""Shared fixtures. The model is trained once per test session (fast config, no tracking) and registered per test,
so every test runs against a real ONNX file through the real loader."""

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

REPO = Path(__file__).resolve().parent.parent
DIABETES_SPEC = REPO / "ml" / "specs" / "diabetes.yaml"

VALID_FEATURES: dict[str, Any] = {
    "pregnancies": 2,
    "glucose": {"value": 7.9, "unit": "mmol/L"},
    "blood_pressure": 72,
    "skin_thickness": 29,
    "insulin": None,
    "bmi": 33.6,
    "pedigree": 0.627,
    "age": 50,
}


@pytest.fixture(scope="session")
def pima_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml.datasets import write_pima_csv

    return write_pima_csv(tmp_path_factory.mktemp("data") / "diabetes.csv")


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, pima_csv: Path) -> Path:
    """One real `ml train` output folder (fast settings) shared by the session. Treat as read-only."""
    from ml.pipeline import train_run
    from ml.schema import UseCaseSpec
    from ml.training import TrainConfig

    out = tmp_path_factory.mktemp("runs") / "diabetes"
    train_run(spec=UseCaseSpec.load(DIABETES_SPEC), data_path=pima_csv, out_dir=out, seed=7,
              config=TrainConfig.fast(), tracking=False)
    return out


@pytest.fixture
def model_dir_copy(tmp_path: Path, trained_dir: Path) -> Callable[..., Path]:
    """A private copy of the trained folder, optionally with manifest edits, for tests that alter it."""

    def make(**manifest_changes: Any) -> Path:
        target = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(trained_dir, target)
        if manifest_changes:
            manifest = json.loads((target / "manifest.json").read_text())
            manifest.update(manifest_changes)
            (target / "manifest.json").write_text(json.dumps(manifest))
        return target

    return make


@pytest.fixture
def distinct_model_dir(model_dir_copy: Callable[..., Path]) -> Callable[[], Path]:
    """A copy whose ONNX file differs in bytes (doc string) but not in behaviour: a second registrable version."""
    import hashlib

    import onnx

    def make() -> Path:
        folder = model_dir_copy()
        model = onnx.load(str(folder / "model.onnx"))
        model.doc_string = f"copy {folder.name}"
        onnx.save(model, str(folder / "model.onnx"))
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["artifacts"]["model.onnx"]["sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    return make


@pytest.fixture(autouse=True)
def _isolated_model_storage(settings: Any, tmp_path: Path) -> Iterator[None]:
    from apps.registry.loader import clear_caches

    settings.MODEL_STORAGE_DIR = tmp_path / "model-storage"
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def champion(db: None, trained_dir: Path) -> Any:
    """The trained model registered and promoted to champion of `diabetes`."""
    from apps.audit.actors import Actor
    from apps.registry.services import model_version_promote, model_version_register

    actor = Actor(type="system", id="tests")
    version = model_version_register(source_dir=trained_dir, actor=actor).version
    return model_version_promote(version_id=version.pk, actor=actor, reason="test champion")


def _user_in(group: str, username: str, *, staff: bool = False) -> Any:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=username, password="a-long-test-password", is_staff=staff)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def clinician(db: None) -> Any:
    return _user_in("Clinicians", "clinician")


@pytest.fixture
def clinician_client(clinician: Any) -> Client:
    client = Client()
    client.force_login(clinician)
    return client


@pytest.fixture
def auditor(db: None) -> Any:
    return _user_in("Auditors", "auditor")


@pytest.fixture
def oauth_app(db: None) -> Any:
    from oauth2_provider.models import Application

    return Application.objects.create(
        name="test system",
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_id="test-system",
        client_secret="test-system-secret",
    )


@pytest.fixture
def api_client(oauth_app: Any) -> Callable[[str], Client]:
    """A test client with a bearer token carrying the given space-separated scopes."""
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import AccessToken

    def make(scopes: str) -> Client:
        token = AccessToken.objects.create(
            application=oauth_app, token=f"tok-{scopes.replace(' ', '-').replace(':', '_')}", scope=scopes,
            expires=timezone.now() + timedelta(hours=1),
        )
        return Client(HTTP_AUTHORIZATION=f"Bearer {token.token}")

    return make


@pytest.fixture
def valid_features() -> dict[str, Any]:
    return json.loads(json.dumps(VALID_FEATURES))
