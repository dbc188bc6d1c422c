"""FHIR sync with SMART Backend Services client authentication (private_key_jwt, RS384/ES384) against a real
sekmet-fhir server whose clients are registered with a JWKS (or a JWKS URL) and no client secret; the JWKS the
project publishes (command and URL); keys that cannot sign are configuration errors."""

import json
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from apps.audit.models import AuditEvent
from apps.core.exceptions import ApplicationError
from apps.patients.checks import check_fhir_client_key
from apps.patients.models import IngestionRun, Patient
from apps.patients.services import fhir_sync_run
from apps.patients.smart_backend import signing_key_generate, signing_key_load
from apps.patients.tasks import sync_fhir_task

sekmet = sys.modules["clinpredict_tests_fhir_sekmet"]  # loaded by tests/conftest.py

pytestmark = [pytest.mark.slow]

PATIENTS = 5
KEYS = {alg: signing_key_generate(alg) for alg in ("RS384", "ES384")}
CLIENT = {"RS384": "clinpredict-rs384", "ES384": "clinpredict-es384"}
SCOPES = "system/Patient.rs system/Observation.rs system/Condition.rs"


def _registered(alg: str) -> dict[str, Any]:
    """A sekmet client that can only authenticate with a client assertion: its JWKS, no secret."""
    return {"client_id": CLIENT[alg], "jwks": signing_key_load(KEYS[alg]).public_jwks(), "scopes": SCOPES}


@pytest.fixture(scope="module")
def smart_server(tmp_path_factory: pytest.TempPathFactory, cohort: list[dict[str, Any]]) -> Iterator[Any]:
    server = sekmet.SekmetServer(tmp_path_factory.mktemp("sekmet-smart"),
                                 extra_clients=[_registered("RS384"), _registered("ES384")]).start()
    try:
        sekmet.load_bundles(server, cohort[:PATIENTS])
        yield server
    finally:
        server.stop()


@pytest.fixture
def key_settings(settings: Any) -> Callable[..., Any]:
    """Point the FHIR settings at a server with a private key (no client secret) and fast retries."""

    def point(server: Any, *, pem: bytes | str, client_id: str, **extra: Any) -> Any:
        settings.FHIR_BASE_URL = server.base_url
        settings.FHIR_CLIENT_ID = client_id
        settings.FHIR_CLIENT_SECRET = ""
        settings.FHIR_PRIVATE_KEY = pem.decode() if isinstance(pem, bytes) else pem
        settings.FHIR_KEY_ID = ""
        settings.FHIR_SIGNING_ALG = ""
        settings.FHIR_SCOPE = SCOPES
        settings.FHIR_TIMEOUT_SECONDS = 10.0
        settings.FHIR_MAX_RETRIES = 1
        settings.FHIR_RETRY_BACKOFF_SECONDS = 0.01
        settings.FHIR_RETRY_MAX_WAIT_SECONDS = 0.05
        for name, value in extra.items():
            setattr(settings, name, value)
        return settings

    return point


@pytest.mark.django_db
@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_sync_with_a_signed_client_assertion_stores_the_patients(smart_server: Any, key_settings: Any,
                                                                 alg: str) -> None:
    key_settings(smart_server, pem=KEYS[alg], client_id=CLIENT[alg])

    run = fhir_sync_run(spec="t2d_fhir")

    assert run.status == IngestionRun.Status.SUCCEEDED, run.error
    assert run.counts["Patient"]["server_total"] == run.counts["Patient"]["fetched"] == PATIENTS
    assert Patient.objects.filter(source=smart_server.base_url).count() == smart_server.count("Patient") == PATIENTS
    assert run.counts["Observation"]["fetched"] > 0


@pytest.mark.django_db
def test_a_key_the_server_does_not_hold_is_refused_and_the_run_says_so(smart_server: Any, key_settings: Any) -> None:
    key_settings(smart_server, pem=signing_key_generate("RS384"), client_id=CLIENT["RS384"])

    run = fhir_sync_run(spec="t2d_fhir")

    assert run.status == IngestionRun.Status.FAILED
    assert "the FHIR token endpoint refused the client assertion (private_key_jwt) (401)" in run.error
    assert "invalid_client" in run.error and "verification failed" in run.error  # the server's own reason
    assert "FHIR_PRIVATE_KEY_FILE" in run.error
    assert Patient.objects.count() == 0
    failed = AuditEvent.objects.get(action="patients.fhir_sync.fail", object_id=str(run.pk))
    assert "refused the client assertion" in json.dumps([failed.inputs, failed.output])


@pytest.mark.django_db
def test_sync_fhir_command_fails_loudly_on_a_refused_assertion(smart_server: Any, key_settings: Any) -> None:
    key_settings(smart_server, pem=signing_key_generate("ES384"), client_id=CLIENT["ES384"])
    with pytest.raises(CommandError, match="refused the client assertion"):
        call_command("sync_fhir")


@pytest.mark.django_db
def test_without_a_key_the_client_secret_is_still_used(smart_server: Any, key_settings: Any) -> None:
    key_settings(smart_server, pem="", client_id=smart_server.client_id,
                 FHIR_CLIENT_SECRET=smart_server.client_secret)
    run = fhir_sync_run(spec="t2d_fhir")
    assert run.status == IngestionRun.Status.SUCCEEDED, run.error
    assert Patient.objects.count() == PATIENTS


@pytest.mark.django_db
def test_the_key_published_at_the_jwks_url_is_the_one_the_server_fetches(
    live_server: Any, key_settings: Any, tmp_path: Path, cohort: list[dict[str, Any]]
) -> None:
    """The EHR registers ClinPredict's /.well-known/jwks.json as the client's JWKS URL and fetches it at the first
    token request: a live Django server publishes it, sekmet-fhir fetches it over HTTP and accepts the assertion."""
    client = {"client_id": "clinpredict-jwks-url", "jwks_url": f"{live_server.url}/.well-known/jwks.json",
              "scopes": SCOPES}
    server = sekmet.SekmetServer(tmp_path / "sekmet", extra_clients=[client]).start()
    try:
        sekmet.load_bundles(server, cohort[:2])
        key_settings(server, pem=KEYS["ES384"], client_id="clinpredict-jwks-url")

        run = fhir_sync_run(spec="t2d_fhir")

        assert run.status == IngestionRun.Status.SUCCEEDED, run.error
        assert Patient.objects.filter(source=server.base_url).count() == 2
    finally:
        server.stop()


@pytest.mark.django_db
def test_jwks_url_and_command_publish_the_same_public_key(key_settings: Any, smart_server: Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    key_settings(smart_server, pem=KEYS["RS384"], client_id=CLIENT["RS384"], FHIR_KEY_ID="clinpredict-2026-01")

    response = Client().get("/.well-known/jwks.json")
    call_command("fhir_jwks")
    printed = json.loads(capsys.readouterr().out)

    assert response.status_code == 200
    assert response.json() == printed
    [jwk] = printed["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["kid"]) == ("RSA", "RS384", "clinpredict-2026-01")
    assert "d" not in jwk


@pytest.mark.django_db
def test_without_a_key_there_is_no_jwks(settings: Any) -> None:
    settings.FHIR_PRIVATE_KEY = ""
    response = Client().get("/.well-known/jwks.json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "FHIR_PRIVATE_KEY_FILE" in response.json()["error"]["message"]
    with pytest.raises(CommandError, match="no FHIR client key is configured"):
        call_command("fhir_jwks")


def test_fhir_jwks_generates_a_private_key_file_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys" / "fhir.pem"
    call_command("fhir_jwks", "--generate-key", str(path), "--alg", "ES384")
    [jwk] = json.loads(capsys.readouterr().out)["keys"]

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = signing_key_load(path.read_bytes())
    assert (loaded.alg, loaded.kid) == ("ES384", jwk["kid"])
    before = path.read_bytes()
    with pytest.raises(CommandError, match="exists: not replaced"):
        call_command("fhir_jwks", "--generate-key", str(path))
    assert path.read_bytes() == before


@pytest.mark.django_db
def test_a_key_that_cannot_sign_starts_no_run_and_fails_the_deploy_check(settings: Any) -> None:
    settings.FHIR_BASE_URL = "http://127.0.0.1:9/fhir"
    settings.FHIR_CLIENT_ID = "clinpredict"
    settings.FHIR_PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----"

    with pytest.raises(ApplicationError) as raised:
        fhir_sync_run(spec="t2d_fhir")
    assert raised.value.code == "fhir_key_invalid"
    assert "FHIR_PRIVATE_KEY_FILE" in raised.value.fields
    assert not IngestionRun.objects.exists()
    result = sync_fhir_task.apply().get()
    assert (result["status"], result["code"]) == ("not_started", "fhir_key_invalid")
    [error] = check_fhir_client_key()
    assert error.id == "patients.E001" and "cannot sign client assertions" in error.msg
    assert Client().get("/.well-known/jwks.json").status_code == 503

    settings.FHIR_PRIVATE_KEY = KEYS["RS384"].decode()
    settings.FHIR_CLIENT_ID = ""
    [error] = check_fhir_client_key()
    assert "FHIR_CLIENT_ID" in error.msg

    settings.FHIR_PRIVATE_KEY = ""
    assert check_fhir_client_key() == []
