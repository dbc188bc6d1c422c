"""The body-size and nesting cases through a real production gunicorn (tests/servers.py: production settings, the
repository's gunicorn.conf.py, PostgreSQL as the application role, Redis as the cache), over plain HTTP on loopback:
what an attacker's client sees, with nothing between it and the server that could hide a 500 or an HTML page."""

import http.client
import json
import select
import socket
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REDIS_CACHE = "redis://127.0.0.1:6379/14"  # the test cache db of tests/deploy; keys under a prefix of this server only
ACCESS_TOKEN = "hostile-gunicorn-access-token-0123456789"  # noqa: S105 - throwaway test database
TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    request_id: str
    body: dict[str, Any]


def send(base: str, path: str, body: bytes, *, content_type: str = "application/json") -> Reply:
    """POST `body` the way a careful HTTP client does (curl, browsers): watch for an early answer while sending and
    stop sending when it comes. A server refusing a 10 MB body answers before it has read it, then closes the
    connection (gunicorn drains only a bounded amount of an unread body); a client that only writes would see a
    broken pipe instead of the answer."""
    url = urllib.parse.urlsplit(base)
    request_id = f"hostile-{uuid.uuid4().hex}"
    head = (f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {ACCESS_TOKEN}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n"
            "Connection: close\r\n\r\n").encode("ascii")
    with socket.create_connection((url.hostname, url.port), timeout=120) as sock:
        sock.sendall(head)
        view, sent = memoryview(body), 0
        while sent < len(body):
            readable, writable, _ = select.select([sock], [sock], [], 120)
            if readable:
                break  # the server answered early
            try:
                sent += sock.send(view[sent:sent + 65536])
            except (BrokenPipeError, ConnectionResetError):
                break
        response = http.client.HTTPResponse(sock)
        response.begin()
        raw = response.read()
    assert response.getheader("X-Request-ID") == request_id
    kind = response.getheader("Content-Type", "")
    assert kind.startswith("application/json"), (response.status, kind, raw[:300])
    return Reply(response.status, kind, request_id, json.loads(raw))


@pytest.fixture
def server(servers: Any, tmp_path: Path, settings: Any, app_role_database_url: str, trained_dir: Path,
           oauth_app: Any) -> Iterator[Any]:
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, set_token_value

    from apps.audit.actors import Actor
    from apps.registry.services import model_version_promote, model_version_register

    actor = Actor(type="system", id="hostile gunicorn test")
    version = model_version_register(source_dir=trained_dir, actor=actor).version
    model_version_promote(version_id=version.pk, actor=actor, reason="hostile gunicorn test")
    token = AccessToken(application=oauth_app, scope="predictions:write patients:write",
                        expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, ACCESS_TOKEN)
    token.save()
    with servers.production_gunicorn(tmp_path / "server", workers=1, env={
        "DATABASE_URL": app_role_database_url,
        "CACHE_URL": REDIS_CACHE,
        "CACHE_KEY_PREFIX": f"hostile-{uuid.uuid4().hex}",
        "MODEL_STORAGE_DIR": str(settings.MODEL_STORAGE_DIR),
    }) as running:
        yield running


def test_through_gunicorn_size_nesting_and_numbers_answer_in_the_error_shape(server: Any, valid_features: dict,
                                                                             nothing_stored: Any) -> None:
    cases = {
        "10 MB prediction": ("/api/v1/predictions", json.dumps({"patient_id": "x" * TEN_MB}).encode(), 413,
                             "request_too_large"),
        "10 MB outcome": ("/api/v1/outcomes", b'{"source_id": "' + b"x" * TEN_MB + b'"}', 413, "request_too_large"),
        "10 MB token form": ("/o/token/", b"grant_type=client_credentials&scope=" + b"a" * TEN_MB, 413,
                             "request_too_large"),
        "100k [": ("/api/v1/predictions", b"[" * 100_000 + b"]" * 100_000, 400, "nesting_too_deep"),
        "5,000 nested objects": ("/api/v1/predictions", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, 400,
                                 "nesting_too_deep"),
        "400-digit integer": ("/api/v1/predictions", json.dumps(
            {"use_case": "diabetes", "features": {**valid_features, "bmi": "@"}}).replace('"@"', "4" * 400).encode(),
            400, "invalid"),
    }
    with nothing_stored():
        replies = {name: send(server.base, path, body,
                              content_type="application/x-www-form-urlencoded" if path == "/o/token/"
                              else "application/json")
                   for name, (path, body, _, _) in cases.items()}
    for name, (_, _, status, code) in cases.items():
        reply = replies[name]
        assert (reply.status, reply.body["error"]["code"]) == (status, code), (name, reply)
        assert reply.body["error"]["message"] and isinstance(reply.body["error"]["fields"], dict), (name, reply)
    assert replies["400-digit integer"].body["error"]["fields"].keys() == {"features.bmi"}
    assert replies["10 MB prediction"].body["error"]["limit_bytes"] == 2_621_440
    assert "Traceback" not in server.log_tail(200_000) and "RecursionError" not in server.log_tail(200_000)
