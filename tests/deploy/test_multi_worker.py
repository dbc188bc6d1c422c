"""Shared state is shared: a real production gunicorn with 2 workers on PostgreSQL and Redis (CACHE_URL), the way
`make serve`, compose and the Kubernetes manifests run it.

- a CDS Hooks JWT that one worker accepted is refused as a replay by the other worker too;
- the API rate limit is one limit for the whole server, not one per worker;
- the /o/token/ lockout and the sign-in lockout count failures across workers.

Requests go out over a new connection each, several at a time, so both workers take them; which worker answered
comes from gunicorn's own access log (pid and X-Request-ID per line, gunicorn.conf.py). Each test checks that both
workers really took part: a check that one worker happened to answer alone would prove nothing.
"""

import http.client
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REDIS_CACHE = "redis://127.0.0.1:6379/14"
CLIENT_SECRET = "multi-worker-client-secret-0123456789"  # noqa: S105 - throwaway test database
ACCESS_TOKEN = "multi-worker-access-token-0123456789"  # noqa: S105
ISSUER = "https://ehr.multi-worker.example.org"
SERVICE = "/cds-services/clinpredict-diabetes"
PASSWORD = "a-long-test-password"  # noqa: S105 - tests/conftest.py gives it to its users


@dataclass(frozen=True)
class Reply:
    request_id: str
    status: int
    body: bytes
    headers: dict[str, str]


def send(base: str, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
    """One request on a connection of its own (closed afterwards), tagged with a fresh X-Request-ID."""
    request_id = f"mw-{uuid.uuid4().hex}"
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"X-Request-ID": request_id, "Connection": "close",
                                                             **(headers or {})})
        response = connection.getresponse()
        return Reply(request_id, response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
    finally:
        connection.close()


def in_parallel(count: int, call: Callable[[], Reply], threads: int = 4) -> list[Reply]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: call(), range(count)))


@pytest.fixture
def start(servers: Any, tmp_path: Path, settings: Any, app_role_database_url: str) -> Iterator[Callable[..., Any]]:
    """Start the 2-worker production server (as the application role) with extra environment; stopped after the
    test."""
    stack = []

    def make(**env: str) -> Any:
        server = servers.production_gunicorn(tmp_path / f"server-{len(stack)}", workers=2, env={
            "DATABASE_URL": app_role_database_url,
            "CACHE_URL": REDIS_CACHE,
            "CACHE_KEY_PREFIX": f"mw-{uuid.uuid4().hex}",  # counters of this server only
            "MODEL_STORAGE_DIR": str(settings.MODEL_STORAGE_DIR),
            **env,
        })
        stack.append(server)
        return server.__enter__()

    yield make
    for server in reversed(stack):
        server.__exit__(None, None, None)


@pytest.fixture
def live_champion(trained_dir: Path) -> Any:
    from apps.audit.actors import Actor
    from apps.registry.services import model_version_promote, model_version_register

    actor = Actor(type="system", id="multi-worker test")
    version = model_version_register(source_dir=trained_dir, actor=actor).version
    return model_version_promote(version_id=version.pk, actor=actor, reason="multi-worker test")


@pytest.fixture
def api_application() -> Any:
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application, set_token_value

    app = Application.objects.create(
        name="multi-worker system", client_id="multi-worker", client_secret=CLIENT_SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL, authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    token = AccessToken(application=app, scope="predictions:write", expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, ACCESS_TOKEN)
    token.save()
    return app


def _workers(server: Any, replies: list[Reply]) -> list[str]:
    answered = server.workers_by_request()
    missing = [r.request_id for r in replies if r.request_id not in answered]
    assert not missing, f"{len(missing)} requests not in the access log; gunicorn: {server.log_tail()}"
    return [answered[r.request_id] for r in replies]


def after_the_limit(server: Any, call: Callable[[], Reply], *, limited: int,
                    batches: int = 40) -> tuple[list[Reply], list[Reply]]:
    """Concurrent batches of 4 until a batch has had a `limited` answer and both workers have answered since that
    batch. Returns (every reply up to and including the first batch with `limited`, every reply after it)."""
    before: list[Reply] = []
    after: list[Reply] = []
    for _ in range(batches):
        batch = in_parallel(4, call)
        if after or any(r.status == limited for r in before):
            after += batch
            if len(set(_workers(server, after))) == 2:
                break
        else:
            before += batch
    return before, after


# --- CDS Hooks: jti replay ---------------------------------------------------------------------------------------

def test_a_cds_hooks_jwt_accepted_by_one_worker_is_refused_by_the_other(
        start: Callable[..., Any], live_champion: Any) -> None:
    from apps.predictions.models import CdsClient, Prediction

    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    CdsClient.objects.create(name="EHR", issuer=ISSUER, jwks={"keys": [{**public, "kid": "ehr-1"}]})
    server = start()
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": f"{server.base}{SERVICE}", "iat": now, "exp": now + 240,
                        "jti": uuid.uuid4().hex}, key, algorithm="ES384", headers={"kid": "ehr-1"})
    body = json.dumps(_hook_request()).encode()

    def call() -> Reply:
        return send(server.base, "POST", SERVICE, body=body,
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})

    first = call()
    assert first.status == 200, first.body[:300]
    [first_worker] = _workers(server, [first])
    replays: list[Reply] = []
    for _ in range(40):  # until a replay has reached the other worker (a few rounds in practice)
        replays += in_parallel(4, call)
        if set(_workers(server, replays)) - {first_worker}:
            break

    workers = _workers(server, replays)
    assert set(workers) - {first_worker}, f"no replay reached the other worker: {workers}"
    refused_by_other = [r for r, w in zip(replays, workers, strict=True) if w != first_worker]
    assert all(r.status == 401 for r in replays), sorted({r.status for r in replays})
    assert all(b"jti replay" in r.body for r in refused_by_other)
    assert Prediction.objects.count() == 1


def _hook_request() -> dict[str, Any]:
    def observation(oid: str, loinc: str, value: float, unit: str) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": oid, "status": "final",
                "subject": {"reference": "Patient/pat-42"},
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                "effectiveDateTime": "2026-11-20T09:00:00Z",
                "valueQuantity": {"value": value, "unit": unit, "code": unit,
                                  "system": "http://unitsofmeasure.org"}}

    observations = [observation("g", "20438-8", 9.1, "mmol/L"), observation("b", "39156-5", 34.2, "kg/m2"),
                    observation("bp", "8462-4", 76, "mm[Hg]")]
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": "pat-42"},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "pat-42", "gender": "female",
                                     "birthDate": "1975-03-02"},
                         "observations": {"resourceType": "Bundle", "type": "searchset",
                                          "entry": [{"resource": o} for o in observations]}}}


# --- API rate limit ----------------------------------------------------------------------------------------------

def test_the_api_rate_limit_is_one_limit_across_workers(
        start: Callable[..., Any], live_champion: Any, api_application: Any, valid_features: dict[str, Any]) -> None:
    from apps.predictions.models import Prediction

    limit = 10
    server = start(CLINPREDICT_API_THROTTLE_RATE=f"{limit}/hour")
    # The limit counts per clock hour: start well inside one, so the whole test falls in the same window.
    if time.time() % 3600 > 3600 - 90:
        time.sleep(3600 - time.time() % 3600 + 1)
    body = json.dumps({"use_case": "diabetes", "features": valid_features}).encode()

    def predict() -> Reply:
        return send(server.base, "POST", "/api/v1/predictions", body=body,
                    headers={"Authorization": f"Bearer {ACCESS_TOKEN}", "Content-Type": "application/json"})

    before, after = after_the_limit(server, predict, limited=429)

    statuses = [r.status for r in before + after]
    assert len(set(_workers(server, after))) == 2, f"no answer from both workers: {_workers(server, after)}"
    assert statuses.count(201) == limit, statuses
    # Once the shared budget is spent, every worker refuses: a worker with a counter of its own would let its
    # share through.
    assert all(r.status == 429 for r in after), [r.status for r in after]
    assert all(int(r.headers["retry-after"]) > 0 for r in before + after if r.status == 429)
    assert Prediction.objects.count() == limit


# --- /o/token/ lockout -------------------------------------------------------------------------------------------

def test_the_token_endpoint_lockout_counts_failures_across_workers(
        start: Callable[..., Any], api_application: Any) -> None:
    from apps.audit.models import AuditEvent

    limit = 4
    server = start(TOKEN_FAILURE_LIMIT=str(limit))

    def token(secret: str) -> Reply:
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "multi-worker",
                                       "client_secret": secret, "scope": "predictions:write"}).encode()
        return send(server.base, "POST", "/o/token/", body=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})

    before, after = after_the_limit(server, lambda: token(f"guess-{uuid.uuid4().hex}"), limited=429)
    right_secret = token(CLIENT_SECRET)

    statuses = [r.status for r in before]
    assert len(set(_workers(server, after))) == 2, f"no answer from both workers: {_workers(server, after)}"
    # Concurrent guesses may all be checked before any is counted, so the batch that reaches the limit can
    # overshoot by the rest of its batch: at most limit + 3 guesses answered 401.
    assert limit <= statuses.count(401) <= limit + 3, statuses
    assert all(r.status == 429 for r in after), [r.status for r in after]  # refused, whichever worker
    assert right_secret.status == 429  # locked out even with the right secret
    assert AuditEvent.objects.filter(action="oauth2.token_lockout", inputs__client_id="multi-worker").count() == 1


# --- Sign-in lockout ---------------------------------------------------------------------------------------------

def test_the_sign_in_lockout_counts_failures_across_workers(
        start: Callable[..., Any], servers: Any, user_in_group: Any, tmp_path: Path) -> None:
    user_in_group("Clinicians", "clinician")
    static_root = servers.collect_static(tmp_path / "static")  # the sign-in page needs the production manifest
    server = start(LOGIN_FAILURE_LIMIT="3", STATIC_ROOT=str(static_root))
    page = send(server.base, "GET", "/accounts/login/")
    cookie = re.search(r"csrftoken=([^;]+)", page.headers["set-cookie"]).group(1)  # type: ignore[union-attr]
    form_token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body).group(1)  # type: ignore[union-attr]

    def sign_in(password: str) -> Reply:
        form = urllib.parse.urlencode({"username": "clinician", "password": password,
                                       "csrfmiddlewaretoken": form_token.decode()}).encode()
        return send(server.base, "POST", "/accounts/login/", body=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={cookie}"})

    first = [sign_in("wrong-password") for _ in range(2)]
    locking = sign_in("wrong-password")  # the 3rd failure locks
    _before, after = after_the_limit(server, lambda: sign_in("wrong-password"), limited=429)
    right_password = sign_in(PASSWORD)

    assert [r.status for r in first] == [200, 200]  # the form again, with its error
    assert locking.status == 429
    assert len(set(_workers(server, after))) == 2, f"no answer from both workers: {_workers(server, after)}"
    assert all(r.status == 429 for r in after), [r.status for r in after]  # locked, whichever worker
    assert right_password.status == 429 and b"Too many failed sign-ins" in right_password.body
