"""Registry fixtures: a second, genuinely different trained model (another seed), model admins, and helpers that
register and promote real folders through the real services."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from apps.audit.actors import Actor

ACTOR = Actor(type="system", id="tests")
DIABETES_SPEC = Path(__file__).resolve().parents[3] / "ml" / "specs" / "diabetes.yaml"


@pytest.fixture(scope="session")
def other_trained_dir(tmp_path_factory: pytest.TempPathFactory, pima_csv: Path) -> Path:
    """A second real `ml train` run (seed 11): different trees, different probabilities. Treat as read-only."""
    from ml.pipeline import train_run
    from ml.schema import UseCaseSpec
    from ml.training import TrainConfig

    out = tmp_path_factory.mktemp("runs-other") / "diabetes"
    train_run(spec=UseCaseSpec.load(DIABETES_SPEC), data_path=pima_csv, out_dir=out, seed=11, model_type="xgboost",
              config=TrainConfig.fast(), tracking=False)
    return out


@pytest.fixture(scope="session")
def logistic_trained_dir(tmp_path_factory: pytest.TempPathFactory, pima_csv: Path) -> Path:
    """A real `ml train` run of the penalised logistic family (fast settings). Treat as read-only."""
    from ml.pipeline import train_run
    from ml.schema import UseCaseSpec
    from ml.training import TrainConfig

    out = tmp_path_factory.mktemp("runs-logistic") / "diabetes"
    train_run(spec=UseCaseSpec.load(DIABETES_SPEC), data_path=pima_csv, out_dir=out, seed=7, model_type="logistic",
              config=TrainConfig.fast(), tracking=False)
    return out


@pytest.fixture(scope="session")
def mlp_trained_dir(tmp_path_factory: pytest.TempPathFactory, pima_csv: Path) -> Path:
    """A real `ml train` run of the MLP (fast settings). Treat as read-only."""
    from ml.pipeline import train_run
    from ml.schema import UseCaseSpec
    from ml.training import TrainConfig

    out = tmp_path_factory.mktemp("runs-mlp") / "diabetes"
    train_run(spec=UseCaseSpec.load(DIABETES_SPEC), data_path=pima_csv, out_dir=out, seed=7, model_type="mlp",
              config=TrainConfig.fast(), tracking=False)
    return out


@pytest.fixture
def register(db: None) -> Callable[[Path], Any]:
    from apps.registry.services import model_version_register

    def make(folder: Path) -> Any:
        return model_version_register(source_dir=folder, actor=ACTOR).version

    return make


@pytest.fixture
def promote(db: None) -> Callable[..., Any]:
    from apps.registry.services import model_version_promote

    def make(version: Any, reason: str = "tests") -> Any:
        return model_version_promote(version_id=version.pk, actor=ACTOR, reason=reason)

    return make


@pytest.fixture
def edited_copy(distinct_model_dir: Callable[[], Path]) -> Callable[..., Path]:
    """A registrable copy (its own ONNX bytes) of the trained folder whose manifest is changed by `edit(manifest)`."""

    def make(edit: Callable[[dict[str, Any]], None]) -> Path:
        folder = distinct_model_dir()
        manifest = json.loads((folder / "manifest.json").read_text())
        edit(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    return make


def _user(group: str, username: str, *, staff: bool) -> Any:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=username, password="a-long-test-password", is_staff=staff)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def model_admin(db: None) -> Any:
    return _user("Model admins", "modeladmin", staff=True)


@pytest.fixture
def model_admin_client(model_admin: Any) -> Client:
    client = Client()
    client.force_login(model_admin)
    return client


@pytest.fixture
def auditor_client(auditor: Any) -> Client:
    client = Client()
    client.force_login(auditor)
    return client
