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
    # One family pinned: --model auto (the CLI default) would run all three searches, which this fixture need not.
    train_run(spec=UseCaseSpec.load(DIABETES_SPEC), data_path=pima_csv, out_dir=out, seed=7, model_type="xgboost",
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


# Every data migration that shapes the roles, in migration order.
ROLE_MIGRATIONS = [
    ("apps.core.migrations.0001_roles", "create_roles"),
    ("apps.patients.migrations.0002_roles", "grant"),
    ("apps.monitoring.migrations.0002_roles", "grant"),
    ("apps.patients.migrations.0004_care_team_roles", "grant"),
    ("apps.patients.migrations.0005_clinicians_record_outcomes", "grant"),
]


def ensure_roles() -> None:
    """Transactional tests flush every table, including the groups the roles migration created; put them back
    with the migration's own code so tests see exactly the production roles."""
    import importlib

    from django.apps import apps

    if not Group.objects.filter(name="Clinicians").exists():
        for module, function in ROLE_MIGRATIONS:
            getattr(importlib.import_module(module), function)(apps, None)


def _user_in(group: str, username: str, *, staff: bool = False) -> Any:
    from django.contrib.auth import get_user_model

    ensure_roles()
    user = get_user_model().objects.create_user(username=username, password="a-long-test-password", is_staff=staff)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def user_in_group() -> Callable[..., Any]:
    """`user_in_group(group, username)`: for tests on `transactional_db` (the live server), which cannot use `db`."""
    return _user_in


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
    from oauth2_provider.models import AccessToken, set_token_value

    made: set[str] = set()

    def make(scopes: str) -> Client:
        raw = f"tok-{scopes.replace(' ', '-').replace(':', '_')}"
        if raw not in made:
            token = AccessToken(application=oauth_app, scope=scopes, expires=timezone.now() + timedelta(hours=1))
            set_token_value(token, raw)  # stored hashed at rest (RFC 9700 token storage)
            token.save()
            made.add(raw)
        return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    return make


@pytest.fixture
def valid_features() -> dict[str, Any]:
    return json.loads(json.dumps(VALID_FEATURES))


@pytest.fixture(autouse=True)
def _audit_table_flushable() -> None:
    """The audit table rejects TRUNCATE/DELETE (append-only triggers); let Django's reset after transactional
    tests through. No database access here: it only wraps the connection (apps/audit/testing.py)."""
    from apps.audit.testing import allow_test_flush

    allow_test_flush()


FHIR_HELPERS = REPO / "tests" / "fhir" / "sekmet.py"
SERVER_HELPERS = REPO / "tests" / "servers.py"


def load_helpers(path: Path, name: str) -> Any:
    """A module of tests/, loaded by path: site-packages already has an unrelated top-level `tests` package."""
    import importlib.util
    import sys

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_fhir_helpers() -> Any:
    return load_helpers(FHIR_HELPERS, "clinpredict_tests_fhir_sekmet")


load_fhir_helpers()

# `database_roles`, `app_role_database_url`: the production owner/application roles on the test database.
_db_roles_fixtures = load_helpers(REPO / "tests" / "db_roles_fixtures.py", "clinpredict_tests_db_roles")
database_roles, app_role_database_url = _db_roles_fixtures.database_roles, _db_roles_fixtures.app_role_database_url


@pytest.fixture(scope="session")
def servers() -> Any:
    """tests/servers.py: a real production gunicorn (`servers.production_gunicorn`)."""
    return load_helpers(SERVER_HELPERS, "clinpredict_tests_servers")


@pytest.fixture(scope="session")
def fhir_helpers() -> Any:
    return load_fhir_helpers()


@pytest.fixture
def fhir_server_factory(tmp_path: Path, fhir_helpers: Any) -> Iterator[Callable[..., Any]]:
    """Start private sekmet-fhir servers (real FHIR R4 on loopback), optionally loaded with carebundle patients."""
    servers: list[Any] = []

    def make(patients: int = 0, cohort: list[dict[str, Any]] | None = None) -> Any:
        server = fhir_helpers.SekmetServer(tmp_path / f"sekmet-{len(servers)}").start()
        servers.append(server)
        if patients:
            bundles = cohort or fhir_helpers.cohort_bundles(patients, seed=42)
            fhir_helpers.load_bundles(server, bundles[:patients])
        return server

    yield make
    for server in servers:
        server.stop()
