"""SMART Backend Services client authentication (asymmetric, `private_key_jwt`, RFC 7523): the client's signing key,
its public JWKS for the FHIR server's registration, and the short-lived signed client assertion of a token request.

Plain Python (PyJWT + cryptography), no Django: the settings are read by the callers (apps/patients/services.py) and
handed in. Only RS384 and ES384 are accepted, the two algorithms SMART Backend Services requires servers to support.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUPPORTED_ALGS = ("RS384", "ES384")
ASSERTION_LIFETIME = timedelta(minutes=5)  # SMART: exp no more than five minutes in the future
MIN_RSA_BITS = 2048


class SigningKeyError(ValueError):
    """The configured private key cannot sign client assertions (unreadable, wrong type, wrong algorithm)."""


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    alg: str
    kid: str

    def public_jwk(self) -> dict[str, Any]:
        # key_ops is what SMART's examples register ("verify"); alg pins the algorithm the server should expect.
        return {**_public_members(self.private_key), "kid": self.kid, "alg": self.alg, "use": "sig",
                "key_ops": ["verify"]}

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def client_assertion(self, *, client_id: str, token_url: str, now: datetime | None = None) -> str:
        """A fresh signed assertion for one token request: iss = sub = client id, aud = the token URL, exp five
        minutes ahead, a unique jti (servers refuse a jti they have seen), kid in the header."""
        moment = now or datetime.now(UTC)
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "iat": int(moment.timestamp()),
            "exp": int((moment + ASSERTION_LIFETIME).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})


def _public_members(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """The public key's JWK members only (kty, n, e / crv, x, y): the private ones are never exported."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return dict(RSAAlgorithm.to_jwk(public, as_dict=True))
    return dict(ECAlgorithm.to_jwk(public, as_dict=True))


def _alg_for(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES384"
    raise SigningKeyError(f"a {type(key).__name__} cannot sign client assertions; use an RSA (RS384) or "
                          "EC P-384 (ES384) private key")


def _check_key(key: Any, alg: str) -> None:
    if alg == "RS384":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SigningKeyError("RS384 needs an RSA private key")
        if key.key_size < MIN_RSA_BITS:
            raise SigningKeyError(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are accepted")
    elif alg == "ES384":
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
            raise SigningKeyError("ES384 needs an EC private key on the P-384 curve (secp384r1)")
    else:
        raise SigningKeyError(f"algorithm {alg!r} is not accepted; accepted: {', '.join(SUPPORTED_ALGS)}")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url): a stable key id derived from the public key alone."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def signing_key_load(pem: str | bytes, *, alg: str = "", kid: str = "") -> SigningKey:
    """The signing key from an unencrypted PEM private key (PKCS#8 or traditional). `alg` defaults to the key's
    type (RSA: RS384, EC P-384: ES384); `kid` to the key's RFC 7638 thumbprint."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # The library's message says which (not PEM, encrypted, unsupported); it never contains key material.
        raise SigningKeyError(f"not an unencrypted PEM private key ({exc})") from None
    alg = alg or _alg_for(key)
    _check_key(key, alg)
    return SigningKey(private_key=key, alg=alg, kid=kid or jwk_thumbprint(_public_members(key)))  # type: ignore[arg-type]


def signing_key_generate(alg: str = "RS384") -> bytes:
    """A new private key for `alg`, as unencrypted PKCS#8 PEM (RSA 3072 bits, or EC P-384)."""
    if alg == "RS384":
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(public_exponent=65537,
                                                                                       key_size=3072)
    elif alg == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        raise SigningKeyError(f"algorithm {alg!r} is not accepted; accepted: {', '.join(SUPPORTED_ALGS)}")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def signing_key_write(path: Path, pem: bytes) -> None:
    """Write a new private key file readable by its owner only; never replaces an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as handle:  # "x": fails if the file exists
        path.chmod(0o600)
        handle.write(pem)
