"""Fixtures for the hostile-input suite: what an attacker holding a valid client would send, through the whole WSGI
stack (every middleware, the URL resolver, DRF, the services) with the Django test client, and through a real
production gunicorn for the cases that depend on the server in front (body size, nesting).

The shared fixtures (`champion`, `api_client`, `oauth_app`, `valid_features`, `servers`, `app_role_database_url`)
come from tests/conftest.py."""

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

CDS_SERVICE = "/cds-services/clinpredict-diabetes"
CDS_ISSUER = "https://ehr.hostile.example.org"


def stored_counts() -> dict[str, int]:
    """How many rows of everything a request could have written."""
    from apps.audit.models import AuditEvent
    from apps.patients.models import Outcome
    from apps.predictions.models import IdempotencyRecord, Prediction

    return {model.__name__: model.objects.count() for model in (Prediction, AuditEvent, Outcome, IdempotencyRecord)}


@contextmanager
def _nothing_stored() -> Iterator[None]:
    before = stored_counts()
    yield
    assert stored_counts() == before, "a refused request stored something"


@pytest.fixture
def nothing_stored() -> Callable[[], Any]:
    """`with nothing_stored(): ...` fails if the block stored a prediction, audit event, outcome or idempotency
    record."""
    return _nothing_stored


@pytest.fixture
def assert_error() -> Callable[..., dict[str, Any]]:
    return _assert_error


def _assert_error(response: Any, status: int, code: str, *, fields: set[str] | None = None) -> dict[str, Any]:
    """The one error shape: JSON `{"error": {"code", "message", "fields"}}` with this status and code; `fields`,
    when given, are exactly the fields named."""
    assert response.status_code == status, response.content[:500]
    # JSON, or FHIR JSON where the endpoint answers FHIR (its renderer comes first)
    assert response["Content-Type"].split(";")[0] in {"application/json", "application/fhir+json"}, \
        response["Content-Type"]
    error = json.loads(response.content)["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["fields"], dict), error
    if fields is not None:
        assert set(error["fields"]) == fields, error["fields"]
        for messages in error["fields"].values():
            assert messages and all(isinstance(m, str) and m for m in messages), error["fields"]
    return error


@pytest.fixture
def ehr_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def cds_token(db: None, ehr_key: ec.EllipticCurvePrivateKey) -> Callable[[], str]:
    """A registered CDS client; each call gives a fresh signed JWT for the diabetes service."""
    from apps.predictions.models import CdsClient

    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ehr_key.public_key()))
    CdsClient.objects.create(name="Hostile EHR", issuer=CDS_ISSUER, jwks={"keys": [{**public, "kid": "ehr-1"}]})

    def make() -> str:
        now = int(time.time())
        claims = {"iss": CDS_ISSUER, "aud": f"http://testserver{CDS_SERVICE}", "iat": now, "exp": now + 240,
                  "jti": uuid.uuid4().hex}
        return jwt.encode(claims, ehr_key, algorithm="ES384", headers={"kid": "ehr-1"})

    return make
