"""The SMART Backend Services client key: loading, the public JWKS and the signed client assertion
(apps/patients/smart_backend.py), checked with PyJWT as a FHIR server would verify them."""

from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from apps.patients.smart_backend import (
    SigningKeyError,
    jwk_thumbprint,
    signing_key_generate,
    signing_key_load,
)

TOKEN_URL = "https://ehr.example.org/oauth2/token"


def _pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_client_assertion_verifies_with_the_published_jwks_and_carries_the_smart_claims(alg: str) -> None:
    key = signing_key_load(signing_key_generate(alg))
    assert key.alg == alg

    assertion = key.client_assertion(client_id="clinpredict", token_url=TOKEN_URL)

    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == alg and header["kid"] == key.kid
    [published] = jwt.PyJWKSet.from_dict(key.public_jwks()).keys
    assert published.key_id == key.kid
    claims = jwt.decode(assertion, published.key, algorithms=[alg], audience=TOKEN_URL,
                        options={"require": ["iss", "sub", "aud", "exp", "jti"]})
    assert claims["iss"] == claims["sub"] == "clinpredict"
    assert 0 < claims["exp"] - claims["iat"] <= 300


def test_every_assertion_has_its_own_jti() -> None:
    key = signing_key_load(signing_key_generate("ES384"))
    jtis = {jwt.decode(key.client_assertion(client_id="c", token_url=TOKEN_URL),
                       options={"verify_signature": False})["jti"] for _ in range(20)}
    assert len(jtis) == 20


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_the_jwks_holds_no_private_member(alg: str) -> None:
    [jwk] = signing_key_load(signing_key_generate(alg)).public_jwks()["keys"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)
    assert jwk["alg"] == alg and jwk["use"] == "sig"


def test_kid_defaults_to_the_rfc7638_thumbprint_and_follows_fhir_key_id() -> None:
    pem = signing_key_generate("RS384")
    derived = signing_key_load(pem)
    assert derived.kid == jwk_thumbprint(derived.public_jwk())
    assert signing_key_load(pem).kid == derived.kid  # stable across loads
    assert signing_key_load(pem, kid="clinpredict-2026").public_jwk()["kid"] == "clinpredict-2026"


def test_rfc7638_thumbprint_of_the_rfc_example_key() -> None:
    # RFC 7638 section 3.1: this RSA key's thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
         "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6"
         "qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8"
         "awapJzKnqDKgw")
    assert jwk_thumbprint({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}) == \
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(("pem", "alg", "says"), [
    (b"not a key", "", "not an unencrypted PEM private key"),
    (_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "",  # noqa: S505 - refused
     "1024 bits; at least 2048"),
    (_pem(ec.generate_private_key(ec.SECP256R1())), "", "P-384"),
    (_pem(ec.generate_private_key(ec.SECP384R1())), "RS384", "RS384 needs an RSA private key"),
    (_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "RS256", "accepted: RS384, ES384"),
])
def test_keys_that_cannot_sign_smart_assertions_are_refused_naming_why(pem: bytes, alg: str, says: str) -> None:
    with pytest.raises(SigningKeyError, match=says):
        signing_key_load(pem, alg=alg)


def test_an_encrypted_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"passphrase"))
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        signing_key_load(pem)


def test_assertion_times_follow_the_given_clock() -> None:
    key = signing_key_load(signing_key_generate("ES384"))
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    claims = jwt.decode(key.client_assertion(client_id="c", token_url=TOKEN_URL, now=moment),
                        options={"verify_signature": False})
    assert (claims["iat"], claims["exp"]) == (int(moment.timestamp()), int(moment.timestamp()) + 300)
