"""FHIR base URLs registered for a CDS client: what is accepted, how it is normalised, what lies under a base; the
admin form that edits them."""

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.exceptions import ValidationError

from apps.predictions.fhir_base_urls import FhirBaseUrlError, fhir_base_url_match, fhir_base_url_parse
from apps.predictions.models import CdsClient


@pytest.mark.parametrize(("given", "normalised"), [
    ("https://EHR.Example.org/fhir/r4/", "https://ehr.example.org/fhir/r4"),
    ("HTTPS://ehr.example.org:443/fhir", "https://ehr.example.org/fhir"),
    ("http://ehr.example.org:80", "http://ehr.example.org"),
    ("http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080/fhir"),
    ("http://[0:0::1]:8080/baseR4", "http://[::1]:8080/baseR4"),
    ("https://xn--bcher-kva.example/fhir", "https://xn--bcher-kva.example/fhir"),
])
def test_a_base_url_is_normalised(given: str, normalised: str) -> None:
    assert str(fhir_base_url_parse(given)) == normalised


@pytest.mark.parametrize(("given", "reason"), [
    ("", "non-empty"),
    ("ehr.example.org/fhir", "absolute URL"),
    ("ftp://ehr.example.org/fhir", "http or https"),
    ("https://user:secret@ehr.example.org/fhir", "user information"),
    ("https://ehr.example.org/fhir?x=1", "query string"),
    ("https://ehr.example.org/fhir#top", "query string or fragment"),
    ("https://ehr.example.org/fhir/../admin", "'..'"),
    ("https://ehr.example.org/fhir/./r4", "'.'"),
    ("https://ehr.example.org/fhir/%2e%2e", "percent-encoding"),
    ("https://ehr.example.org\\@evil/fhir", "backslash"),
    ("https://b\u00fccher.example/fhir", "ASCII"),
    ("https://ehr.example.org./fhir", "no trailing dot"),
    ("https://ehr.example.org:0/fhir", "port"),
    ("https://ehr.example.org:99999/fhir", "port"),
    ("https://ehr.example.org:/fhir", "port"),
    ("https://ehr.example.org//fhir", "empty segment"),
    ("https://ehr.example.org/fhir/..;/admin", "not accepted"),
    ("https://[::1/fhir", "IPv6"),
    ("https://ehr example.org/fhir", "spaces"),
])
def test_a_base_url_that_is_not_plain_is_refused_with_the_reason(given: str, reason: str) -> None:
    with pytest.raises(FhirBaseUrlError, match=reason.replace(".", r"\.").replace("?", r"\?")):
        fhir_base_url_parse(given)


@pytest.mark.parametrize(("candidate", "under"), [
    ("https://ehr.example.org/fhir", True),
    ("https://ehr.example.org/fhir/", True),
    ("https://EHR.example.org:443/fhir/r4", True),
    ("https://ehr.example.org/fhirx", False),
    ("https://ehr.example.org/", False),
    ("http://ehr.example.org/fhir", False),
    ("https://ehr.example.org:8443/fhir", False),
    ("https://sub.ehr.example.org/fhir", False),
    ("https://ehr.example.org.evil/fhir", False),
])
def test_a_fhir_server_lies_under_a_base_on_same_origin_and_a_segment_boundary(candidate: str, under: bool) -> None:
    registered = ["https://ehr.example.org/fhir"]
    if under:
        assert fhir_base_url_match(candidate, registered) == fhir_base_url_parse(candidate)
    else:
        with pytest.raises(FhirBaseUrlError, match="not under a FHIR base URL registered"):
            fhir_base_url_match(candidate, registered)


def test_a_stored_entry_that_does_not_parse_matches_nothing() -> None:
    with pytest.raises(FhirBaseUrlError):
        fhir_base_url_match("https://ehr.example.org/fhir", ["https://ehr.example.org/fhir?x", 42])  # type: ignore[list-item]


def _jwks() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP384R1())
    return {"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))]}


def test_model_validation_normalises_and_deduplicates(db: None) -> None:
    client = CdsClient(name="EHR", issuer="https://ehr.example.org", jwks=_jwks(),
                       fhir_base_urls=["https://EHR.example.org:443/fhir/", "https://ehr.example.org/fhir"])

    client.full_clean()

    assert client.fhir_base_urls == ["https://ehr.example.org/fhir"]


def test_model_validation_names_the_bad_url(db: None) -> None:
    client = CdsClient(name="EHR", issuer="https://ehr.example.org", jwks=_jwks(),
                       fhir_base_urls=["https://ehr.example.org/fhir", "http://127.0.0.1:6379@evil/"])

    with pytest.raises(ValidationError) as refused:
        client.full_clean()

    (message,) = refused.value.message_dict["fhir_base_urls"]
    assert "127.0.0.1:6379@evil" in message and "user information" in message


def test_admin_edits_the_base_urls_one_per_line(admin_client: Any) -> None:
    form = {"name": "EHR", "issuer": "https://ehr.example.org", "jwks": json.dumps(_jwks()), "active": "on",
            "fhir_base_urls": "https://EHR.example.org/fhir/r4/\n\n  http://127.0.0.1:8080/fhir  \n"}

    response = admin_client.post("/admin/predictions/cdsclient/add/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    client = CdsClient.objects.get()
    assert client.fhir_base_urls == ["https://ehr.example.org/fhir/r4", "http://127.0.0.1:8080/fhir"]
    page = admin_client.get(f"/admin/predictions/cdsclient/{client.pk}/change/").content.decode()
    assert "https://ehr.example.org/fhir/r4\nhttp://127.0.0.1:8080/fhir" in page
    assert "same scheme, host and port" in page  # the help text


def test_admin_refuses_a_bad_base_url_with_the_reason(admin_client: Any) -> None:
    form = {"name": "EHR", "issuer": "https://ehr.example.org", "jwks": json.dumps(_jwks()), "active": "on",
            "fhir_base_urls": "https://ehr.example.org/fhir/../admin"}

    response = admin_client.post("/admin/predictions/cdsclient/add/", form)

    assert response.status_code == 200
    assert "path segments are not accepted" in response.content.decode()
    assert not CdsClient.objects.exists()
