"""Hostile input against the metrics and the model cache: a client can name any use case, but only registered
ones ever become a metric label or a cache entry; /metrics is served only to the monitoring network or the metrics
token.

Every unknown use case is refused the way it always was (400 naming `use_case`, now with the accepted use cases;
404 on the pages and CDS Hooks), and /metrics keeps exactly the same series and, values aside, the same size."""

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from apps.audit.models import AuditEvent
from apps.predictions.models import CdsClient, Prediction
from apps.registry.loader import cache_sizes

API = "/api/v1/predictions"
METRICS_TOKEN = "metrics-token-for-the-hostile-suite-0123456789abcdef"  # noqa: S105 - test credential
# Digits of counters and process gauges grow between two scrapes; a thousand new series add ~100 kB.
VALUE_DRIFT_BYTES = 512


def _unknown(n: int, prefix: str = "x") -> list[str]:
    return [f"{prefix}{uuid.uuid4().hex[:12]}-{i}" for i in range(n)]


def _scrape(client: Client | None = None, **extra: Any) -> tuple[int, bytes]:
    response = (client or Client()).get("/metrics", **extra)
    return response.status_code, response.content


def _series(body: bytes) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample of the exposition, by name and labels (what Prometheus stores as one series each)."""
    return {(sample.name, tuple(sorted(sample.labels.items())))
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples}


def _mentions(body: bytes, names: list[str]) -> list[str]:
    text = body.decode()
    return [name for name in names if name in text]


@pytest.fixture
def baseline(champion: Any, api_client: Any, clinician_client: Client, valid_features: dict) -> dict[str, Any]:
    """Every path exercised once with a refused use case and once with the real one, so the label sets a refusal
    legitimately touches (status 400/404 per view, the champion's gauges) exist before the measurement starts."""
    writer = api_client("predictions:write")
    writer.post(API, data=json.dumps({"use_case": "diabetes", "features": valid_features}),
                content_type="application/json")
    writer.post(API, data=json.dumps({"use_case": "warm-up", "features": valid_features}),
                content_type="application/json")
    writer.post(API, data=json.dumps([{"use_case": "warm-up", "features": valid_features}] * 2),
                content_type="application/json")
    api_client("predictions:read").get(API, {"use_case": "warm-up"})
    clinician_client.get("/predict/warm-up/")
    clinician_client.post("/predict/warm-up/", {"patient_id": "p"})
    _scrape()  # the scrape's own request series appear from the second one on
    status, body = _scrape()
    assert status == 200
    return {"writer": writer, "body": body, "caches": cache_sizes(),
            "predictions": Prediction.objects.count(), "events": AuditEvent.objects.count()}


def _rebaseline(baseline: dict[str, Any]) -> None:
    """After a path's first refusal (its status/view series is legitimate and bounded), measure from there."""
    status, baseline["body"] = _scrape()
    assert status == 200
    baseline["caches"] = cache_sizes()


def _assert_unchanged(baseline: dict[str, Any], names: list[str]) -> tuple[int, int]:
    status, after = _scrape()
    assert status == 200
    assert _mentions(after, names) == []
    assert _series(after) == _series(baseline["body"])
    assert abs(len(after) - len(baseline["body"])) <= VALUE_DRIFT_BYTES
    assert cache_sizes() == baseline["caches"]
    assert Prediction.objects.count() == baseline["predictions"]
    assert AuditEvent.objects.count() == baseline["events"]
    return len(after), len(_series(after))


def test_a_batch_of_1000_unknown_use_cases_is_refused_and_adds_no_series_and_no_cache_entry(
        baseline: dict[str, Any], valid_features: dict) -> None:
    names = _unknown(1000)
    body = [{"use_case": name, "features": valid_features} for name in names]

    response = baseline["writer"].post(API, data=json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_features" and len(error["fields"]) == 1000
    assert error["fields"]["999"] == {"use_case": [f"'{names[999]}' has no registered model; accepted: diabetes."]}
    size, series = _assert_unchanged(baseline, names)
    print(f"/metrics before: {len(baseline['body'])} bytes, {len(_series(baseline['body']))} series; "  # noqa: T201
          f"after 1,000 unknown use cases: {size} bytes, {series} series")


def test_single_posts_and_patient_only_posts_with_unknown_use_cases_are_refused(baseline: dict[str, Any],
                                                                                valid_features: dict) -> None:
    names = _unknown(20)
    for name in names[:10]:
        response = baseline["writer"].post(API, data=json.dumps({"use_case": name, "features": valid_features}),
                                           content_type="application/json")
        assert response.status_code == 400
        assert response.json()["error"] == {
            "code": "unknown_use_case", "message": f"Unknown use case '{name}'.",
            "fields": {"use_case": [f"'{name}' has no registered model; accepted: diabetes."]}}
    for name in names[10:]:  # features assembled from a stored patient: refused before the patient is looked up
        response = baseline["writer"].post(API, data=json.dumps({"use_case": name, "patient_id": "p-1"}),
                                           content_type="application/json")
        assert response.status_code == 400 and response.json()["error"]["fields"] == {
            "use_case": [f"'{name}' has no registered model; accepted: diabetes."]}

    _assert_unchanged(baseline, names)


def test_clinician_pages_and_list_filters_with_unknown_use_cases_are_404_or_empty(
        baseline: dict[str, Any], clinician_client: Client, api_client: Any) -> None:
    from apps.patients.models import Patient

    patient = Patient.objects.create(identifier="hostile-1", source="csv:hostile")
    clinician_client.get(f"/patients/{patient.pk}/predict/warm-up/")
    _rebaseline(baseline)
    names = _unknown(30)
    reader = api_client("predictions:read")
    for name in names[:10]:
        assert clinician_client.get(f"/predict/{name}/").status_code == 404
        assert clinician_client.post(f"/predict/{name}/", {"patient_id": "p"}).status_code == 404
    for name in names[10:20]:
        assert clinician_client.get(f"/patients/{patient.pk}/predict/{name}/").status_code == 404
    for name in names[20:]:
        listed = reader.get(API, {"use_case": name})
        assert listed.status_code == 200 and listed.json()["results"] == []

    _assert_unchanged(baseline, names)


def test_cds_hooks_calls_to_unknown_services_are_404_and_add_nothing(baseline: dict[str, Any]) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    CdsClient.objects.create(name="Hostile EHR", issuer="https://ehr.example.org", jwks={"keys": [{**public,
                                                                                                   "kid": "k"}]})
    names = _unknown(10, prefix="u")
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "pat-1"},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "pat-1"},
                         "observations": {"resourceType": "Bundle", "type": "searchset", "entry": []}}}
    for index, name in enumerate(["warm-up", *names]):
        if index == 1:
            _rebaseline(baseline)
        path = f"/cds-services/clinpredict-{name}"
        now = int(time.time())
        token = jwt.encode({"iss": "https://ehr.example.org", "aud": f"http://testserver{path}", "iat": now,
                            "exp": now + 240, "jti": uuid.uuid4().hex}, key, algorithm="ES384",
                           headers={"kid": "k"})
        response = Client().post(path, data=json.dumps(body), content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"

    _assert_unchanged(baseline, names)


def test_invented_http_methods_add_no_series(baseline: dict[str, Any]) -> None:
    methods = [f"HOSTILE{i}" for i in range(20)]
    for method in methods:
        Client().generic(method, "/healthz")

    status, after = _scrape()
    assert status == 200 and _mentions(after, methods) == []
    latency = {dict(labels)["method"] for name, labels in _series(after)
               if name.startswith("django_http_requests_latency_seconds_by_view_method")}
    assert latency <= {"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH",
                       "<invalid method>"}


def test_the_loader_keeps_only_live_versions(champion: Any, distinct_model_dir: Any) -> None:
    """Promoting a new champion drops the replaced version's loaded files from the cache."""
    from apps.audit.actors import Actor
    from apps.registry.loader import champion_model
    from apps.registry.services import model_version_promote, model_version_register

    assert champion_model("diabetes").version_id == champion.pk
    actor = Actor(type="system", id="tests")
    second = model_version_register(source_dir=distinct_model_dir(), actor=actor).version
    model_version_promote(version_id=second.pk, actor=actor, reason="replace")

    assert champion_model("diabetes").version_id == second.pk
    assert cache_sizes()["models"] == 1


# --- who may read /metrics ------------------------------------------------------------------------------------------


@pytest.fixture
def metrics_locked(settings: Any) -> Any:
    settings.CLINPREDICT_METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128", "10.20.0.0/16"]
    settings.CLINPREDICT_METRICS_TOKEN = METRICS_TOKEN
    settings.TRUSTED_PROXY_COUNT = 0
    return settings


def _refused(status: int, body: bytes) -> bool:
    return status == 403 and b"clinpredict_" not in body and b"django_http" not in body and len(body) < 64


def test_metrics_refused_from_an_address_outside_the_allowed_networks(db: None, metrics_locked: Any) -> None:
    assert _refused(*_scrape(REMOTE_ADDR="203.0.113.9"))
    assert _refused(*_scrape(REMOTE_ADDR="10.21.0.1"))
    assert _refused(*_scrape(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer wrong-token"))
    assert _refused(*_scrape(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION=f"Basic {METRICS_TOKEN}"))
    assert _refused(*_scrape(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN[:-1]}"))


def test_metrics_served_with_the_token_from_anywhere(db: None, metrics_locked: Any) -> None:
    status, body = _scrape(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")

    assert status == 200 and b"django_http_requests" in body


def test_metrics_served_to_the_allowed_network_and_loopback(db: None, metrics_locked: Any) -> None:
    for address in ("10.20.3.4", "127.0.0.1", "::1", "::ffff:10.20.9.9"):
        status, body = _scrape(REMOTE_ADDR=address)
        assert status == 200 and b"django_http_requests" in body, address


def test_behind_a_proxy_the_forwarded_client_address_decides(db: None, metrics_locked: Any) -> None:
    """The ingress (10.20.0.7, inside the allowed network) forwards an outside client: refused, whatever the client
    wrote in X-Forwarded-For itself; a scrape that reaches the pod directly (no header) is served."""
    metrics_locked.TRUSTED_PROXY_COUNT = 1

    assert _refused(*_scrape(REMOTE_ADDR="10.20.0.7", HTTP_X_FORWARDED_FOR="203.0.113.9"))
    assert _refused(*_scrape(REMOTE_ADDR="10.20.0.7", HTTP_X_FORWARDED_FOR="127.0.0.1, 203.0.113.9"))
    assert _scrape(REMOTE_ADDR="10.20.0.7")[0] == 200


def test_without_a_token_setting_no_bearer_value_opens_metrics(db: None, metrics_locked: Any) -> None:
    metrics_locked.CLINPREDICT_METRICS_TOKEN = ""

    assert _refused(*_scrape(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer "))
    assert _refused(*_scrape(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer x"))


def test_metrics_over_real_http_need_the_token_when_no_network_is_allowed(live_server: Any, settings: Any) -> None:
    settings.CLINPREDICT_METRICS_ALLOWED_NETWORKS = []
    settings.CLINPREDICT_METRICS_TOKEN = METRICS_TOKEN
    url = f"{live_server.url}/metrics"

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 - loopback
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as served:  # noqa: S310 - loopback
        body = served.read()

    assert refused.value.code == 403 and b"clinpredict_" not in refused.value.read()
    assert served.status == 200 and b"django_http_requests" in body


def test_misconfigured_networks_and_short_tokens_stop_start_up() -> None:
    import subprocess
    import sys

    from django.core.exceptions import ImproperlyConfigured

    from clinpredict.settings.base import metrics_networks

    assert metrics_networks(["10.0.0.0/8", " ::1 ", ""]) == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ImproperlyConfigured, match="CLINPREDICT_METRICS_ALLOWED_NETWORKS"):
        metrics_networks(["10.0.0.0/33"])
    result = subprocess.run(  # settings are read once per process: a fresh one with a short token
        [sys.executable, "-c", "import clinpredict.settings.test"], capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "CLINPREDICT_METRICS_TOKEN": "short"}, check=False)
    assert result.returncode != 0 and "CLINPREDICT_METRICS_TOKEN must be at least 32 characters" in result.stderr


# --- the same under the production server ---------------------------------------------------------------------------


@pytest.fixture
def production_server(transactional_db: None, settings: Any, tmp_path: Any, servers: Any,
                      app_role_database_url: str) -> Any:
    """gunicorn, 2 workers, production settings as the application role, multiprocess metrics, /metrics closed to
    every address (no loopback either) and open to the metrics token, as the deployment files configure it."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    with servers.production_gunicorn(tmp_path / "server", workers=2, env={
            "DATABASE_URL": app_role_database_url, "MODEL_STORAGE_DIR": str(settings.MODEL_STORAGE_DIR),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "CLINPREDICT_API_THROTTLE_RATE": "100000/min",
            "CACHE_URL": "redis://127.0.0.1:6379/14", "CACHE_KEY_PREFIX": f"hostile-{uuid.uuid4().hex}",
            "CLINPREDICT_METRICS_ALLOWED_NETWORKS": "192.0.2.0/24",
            "CLINPREDICT_METRICS_TOKEN": METRICS_TOKEN}) as server:
        yield server.base


def _http(base: str, path: str, *, token: str | None = None, body: Any = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.slow
def test_production_server_refuses_1000_unknown_use_cases_without_growing_metrics(
        production_server: str, trained_dir: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application

    from apps.audit.actors import Actor
    from apps.registry.services import model_version_promote, model_version_register

    actor = Actor(type="system", id="hostile-test")
    version = model_version_register(source_dir=trained_dir, actor=actor).version
    model_version_promote(version_id=version.pk, actor=actor, reason="hostile test champion")
    app = Application.objects.create(name="hostile", client_type=Application.CLIENT_CONFIDENTIAL,
                                     authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    api_token = f"hostile-{uuid.uuid4().hex}"
    AccessToken.objects.create(application=app, token=api_token, scope="predictions:write",
                               expires=timezone.now() + timedelta(hours=1))
    features = json.loads(json.dumps({"pregnancies": 2, "glucose": 140, "blood_pressure": 72, "skin_thickness": 29,
                                      "insulin": None, "bmi": 33.6, "pedigree": 0.627, "age": 50}))
    base = production_server

    def scrape() -> bytes:
        status, body = _http(base, "/metrics", token=METRICS_TOKEN)
        assert status == 200
        return body

    # Warm every worker on every path: a served and a refused prediction, then scrapes (their own series).
    for _ in range(4):
        assert _http(base, API, token=api_token, body={"use_case": "diabetes", "features": features})[0] == 201
        assert _http(base, API, token=api_token, body=[{"use_case": "warm", "features": features}] * 2)[0] == 400
        scrape()
    before = scrape()

    names = _unknown(1000)
    status, refused = _http(base, API, token=api_token, body=[{"use_case": n, "features": features} for n in names])

    assert status == 400 and len(json.loads(refused)["error"]["fields"]) == 1000
    after = scrape()
    assert _mentions(after, names) == []
    assert _series(after) == _series(before)
    assert abs(len(after) - len(before)) <= VALUE_DRIFT_BYTES
    unauthorised = _http(base, "/metrics")
    assert _refused(*unauthorised)
    print(f"gunicorn, 2 workers: /metrics before {len(before)} bytes, {len(_series(before))} series; after 1,000 "  # noqa: T201
          f"unknown use cases {len(after)} bytes, {len(_series(after))} series; without the token: "
          f"{unauthorised[0]} ({len(unauthorised[1])} bytes)")
