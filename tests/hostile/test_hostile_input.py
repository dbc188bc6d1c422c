"""Hostile input through the whole WSGI stack (Django test client: every middleware, the resolver, DRF, the services).

Each case asserts the status, the one error shape (`code`, `message`, the `fields` it names) and that nothing was
stored (predictions, audit events, outcomes, idempotency records). Limits: CLINPREDICT_MAX_BODY_BYTES (2.5 MiB) and
CLINPREDICT_MAX_JSON_DEPTH (32), README "Configuration"."""

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

PREDICTIONS = "/api/v1/predictions"
OUTCOMES = "/api/v1/outcomes"
CDS_SERVICE = "/cds-services/clinpredict-diabetes"
TEN_MB = 10 * 1024 * 1024


def post_raw(client: Client, path: str, body: bytes | str, **headers: Any) -> Any:
    return client.post(path, data=body, content_type="application/json", **headers)


def prediction(features: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"use_case": "diabetes", "features": features, **more}


# --- parse errors, size and depth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["{not json", '{"use_case": "diabetes",}', " ", "\ufeff[]", "[1, 2"])
def test_malformed_json_is_a_400_parse_error(champion: Any, api_client: Any, nothing_stored: Any,
                                             assert_error: Any, body: str) -> None:
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, body)
    error = assert_error(response, 400, "parse_error", fields=set())
    assert "not valid JSON" in error["message"] and "line 1" in error["message"]


def test_a_body_that_is_not_utf8_is_a_400_parse_error(champion: Any, api_client: Any, nothing_stored: Any,
                                                      assert_error: Any) -> None:
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, b'{"use_case": "\xff\xfe"}')
    assert "UTF-8" in assert_error(response, 400, "parse_error", fields=set())["message"]


@pytest.mark.parametrize("path", [PREDICTIONS, OUTCOMES])
def test_a_10_mb_body_is_a_413_with_the_limit(champion: Any, api_client: Any, nothing_stored: Any,
                                              assert_error: Any, path: str) -> None:
    body = json.dumps({"use_case": "diabetes", "patient_id": "x" * TEN_MB})
    with nothing_stored():
        response = post_raw(api_client("predictions:write patients:write"), path, body)
    error = assert_error(response, 413, "request_too_large", fields=set())
    assert error["limit_bytes"] == 2_621_440 and "2,621,440 bytes" in error["message"]
    assert "CLINPREDICT_MAX_BODY_BYTES" in error["message"]


def test_the_body_limit_is_the_setting(champion: Any, api_client: Any, valid_features: dict, settings: Any,
                                       nothing_stored: Any, assert_error: Any) -> None:
    body = json.dumps(prediction(valid_features))
    settings.CLINPREDICT_MAX_BODY_BYTES = len(body) - 1
    client = api_client("predictions:write")
    with nothing_stored():
        refused = post_raw(client, PREDICTIONS, body)
    assert assert_error(refused, 413, "request_too_large")["limit_bytes"] == len(body) - 1

    settings.CLINPREDICT_MAX_BODY_BYTES = len(body)
    assert post_raw(client, PREDICTIONS, body).status_code == 201


def test_a_10_mb_body_to_the_token_endpoint_is_a_json_413(db: None, oauth_app: Any, nothing_stored: Any,
                                                           assert_error: Any) -> None:
    """A form body over Django's own limit (DATA_UPLOAD_MAX_MEMORY_SIZE, the same number), refused by Django before
    the view: still JSON on the API paths."""
    with nothing_stored():
        response = Client().post("/o/token/", data=b"grant_type=client_credentials&scope=" + b"a" * TEN_MB,
                                 content_type="application/x-www-form-urlencoded")
    assert assert_error(response, 413, "request_too_large", fields=set())["limit_bytes"] == 2_621_440


def test_djangos_own_body_refusals_are_json_on_api_paths(db: None, oauth_app: Any, settings: Any,
                                                         nothing_stored: Any, assert_error: Any) -> None:
    """Refusals Django raises itself while a view reads the body (RequestDataTooBig under its own limit, here set
    below ours; TooManyFieldsSent) answer in the error shape too."""
    with nothing_stored():
        too_many = Client().post("/o/token/", data="&".join(f"f{i}=1" for i in range(1001)).encode(),
                                 content_type="application/x-www-form-urlencoded")
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
        too_big = Client().post("/o/token/", data=b"grant_type=client_credentials&scope=" + b"a" * 2000,
                                content_type="application/x-www-form-urlencoded")
    assert "1,000 bytes" in assert_error(too_big, 413, "request_too_large", fields=set())["message"]
    assert "1000" in assert_error(too_many, 400, "too_many_fields", fields=set())["message"]


def test_a_10_mb_body_to_a_page_keeps_the_html_answer(db: None) -> None:
    response = Client().post("/accounts/login/", data=b"username=" + b"a" * TEN_MB,
                             content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")


def test_a_10_mb_body_to_cds_hooks_is_a_413(champion: Any, cds_token: Any, nothing_stored: Any,
                                            assert_error: Any) -> None:
    body = json.dumps({"hook": "patient-view", "hookInstance": "x" * TEN_MB})
    with nothing_stored():
        response = post_raw(Client(), CDS_SERVICE, body, HTTP_AUTHORIZATION=f"Bearer {cds_token()}")
    assert_error(response, 413, "request_too_large", fields=set())


NESTED = {
    "100k [": "[" * 100_000 + "]" * 100_000,
    "5,000 nested objects": '{"a":' * 5_000 + "1" + "}" * 5_000,
    "33 levels in features": json.dumps(prediction({"bmi": json.loads("[" * 31 + "1" + "]" * 31)})),
    "unclosed": "[" * 100_000,
}


@pytest.mark.parametrize("case", list(NESTED))
def test_nesting_beyond_the_limit_is_a_400(champion: Any, api_client: Any, nothing_stored: Any,
                                           assert_error: Any, case: str) -> None:
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, NESTED[case])
    error = assert_error(response, 400, "nesting_too_deep", fields=set())
    assert error["limit_depth"] == 32 and "CLINPREDICT_MAX_JSON_DEPTH" in error["message"]


def test_nesting_up_to_the_limit_reaches_validation(champion: Any, api_client: Any, nothing_stored: Any,
                                                    assert_error: Any) -> None:
    """32 levels parse; the feature is then refused for what it is (a list, not a number)."""
    body = json.dumps(prediction({"bmi": json.loads("[" * 30 + "1" + "]" * 30)}))
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, body)
    assert assert_error(response, 400, "invalid_features")["fields"]["bmi"]


def test_brackets_inside_strings_do_not_count_as_nesting(champion: Any, api_client: Any, valid_features: dict) -> None:
    body = json.dumps(prediction(valid_features, patient_id="[{" * 60 + '"\\'))
    response = post_raw(api_client("predictions:write"), PREDICTIONS, body)
    assert response.status_code == 201, response.content


def test_deep_nesting_to_cds_hooks_is_a_400(champion: Any, cds_token: Any, nothing_stored: Any,
                                            assert_error: Any) -> None:
    with nothing_stored():
        response = post_raw(Client(), CDS_SERVICE, NESTED["100k ["], HTTP_AUTHORIZATION=f"Bearer {cds_token()}")
    assert_error(response, 400, "nesting_too_deep", fields=set())


# --- numbers, duplicate keys, surrogates ------------------------------------------------------------------------


@pytest.mark.parametrize(("features", "field"), [
    ({"bmi": "4" * 400}, "features.bmi"),                           # 400-digit integer
    ({"bmi": "-" + "9" * 400}, "features.bmi"),
    ({"bmi": "1" + "0" * 308 + "0"}, "features.bmi"),               # 1e309 as an integer: just past a double
    ({"glucose": '{"value": 1e309, "unit": "mmol/L"}'}, "features.glucose.value"),  # json turns it into inf
    ({"age": "-1e309"}, "features.age"),
    ({"pedigree": "NaN"}, "features.pedigree"),
    ({"pedigree": "Infinity"}, "features.pedigree"),
])
def test_numbers_beyond_a_double_are_a_400_naming_the_field(champion: Any, api_client: Any, valid_features: dict,
                                                            nothing_stored: Any, assert_error: Any,
                                                            features: dict, field: str) -> None:
    text = json.dumps(prediction({**valid_features, **{k: f"@{k}@" for k in features}}))
    for name, raw in features.items():
        text = text.replace(f'"@{name}@"', raw)
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, text)
    error = assert_error(response, 400, "invalid", fields={field})
    assert "not valid JSON" not in error["message"]
    assert "finite number" in error["fields"][field][0]


def test_an_integer_that_fits_a_double_is_judged_by_the_feature_range(champion: Any, api_client: Any,
                                                                      valid_features: dict,
                                                                      nothing_stored: Any,
                                                                      assert_error: Any) -> None:
    text = json.dumps(prediction({**valid_features, "bmi": "@"})).replace('"@"', "9" * 300)
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, text)
    assert "bmi" in assert_error(response, 400, "invalid_features")["fields"]


def test_a_number_beyond_a_double_in_a_batch_names_its_index(champion: Any, api_client: Any, valid_features: dict,
                                                             nothing_stored: Any, assert_error: Any) -> None:
    text = json.dumps([prediction(valid_features), prediction({**valid_features, "bmi": "@"})])
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, text.replace('"@"', "7" * 400))
    assert_error(response, 400, "invalid", fields={"1.features.bmi"})


@pytest.mark.parametrize(("text", "field"), [
    ('{"use_case": "diabetes", "use_case": "sepsis", "features": @}', "use_case"),
    ('{"use_case": "diabetes", "features": @, "features": @}', "features"),
    ('{"use_case": "diabetes", "features": {"bmi": 30, "bmi": 31}}', "features.bmi"),
    ('[{"use_case": "diabetes", "patient_id": "a", "patient_id": "b", "features": @}]', "0.patient_id"),
])
def test_duplicate_keys_are_a_400_naming_the_key(champion: Any, api_client: Any, valid_features: dict,
                                                 nothing_stored: Any, assert_error: Any, text: str,
                                                 field: str) -> None:
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS,
                            text.replace("@", json.dumps(valid_features)))
    error = assert_error(response, 400, "invalid", fields={field})
    assert "appears 2 times" in error["fields"][field][0]


def test_duplicate_keys_in_an_outcome_are_refused(db: None, api_client: Any, nothing_stored: Any,
                                                  assert_error: Any) -> None:
    text = '{"patient_id": "pt-1", "use_case": "diabetes", "present": true, "present": false}'
    with nothing_stored():
        response = post_raw(api_client("patients:write"), OUTCOMES, text)
    assert_error(response, 400, "invalid", fields={"present"})


def test_a_lone_surrogate_is_a_400_naming_the_field(champion: Any, api_client: Any, valid_features: dict,
                                                    nothing_stored: Any, assert_error: Any) -> None:
    text = json.dumps(prediction(valid_features, patient_id="@")).replace('"@"', '"p\\ud800"')
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, text)
    assert "surrogate" in assert_error(response, 400, "invalid", fields={"patient_id"})["fields"]["patient_id"][0]


def test_an_escaped_surrogate_pair_is_fine(champion: Any, api_client: Any, valid_features: dict) -> None:
    text = json.dumps(prediction(valid_features, patient_id="@")).replace('"@"', '"p\\ud83d\\ude00"')
    response = post_raw(api_client("predictions:write"), PREDICTIONS, text)
    assert response.status_code == 201 and response.json()["patient_id"] == "p\U0001f600"


# --- control and bidi characters in identifiers -----------------------------------------------------------------

INVISIBLE = ["\u202e", "\u202a", "\u202d", "\u2066", "\u2069", "\u200e", "\u200f", "\u200b", "\ufeff", "\u0007",
             "\u001b", "\u0085", "\u2028"]


@pytest.mark.parametrize("char", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
@pytest.mark.parametrize("field", ["patient_id", "use_case"])
def test_control_and_bidi_characters_in_identifiers_are_a_400(champion: Any, api_client: Any, valid_features: dict,
                                                              nothing_stored: Any, assert_error: Any, char: str,
                                                              field: str) -> None:
    body = prediction(valid_features, patient_id="pt-42")
    body[field] = f"{body[field][:2]}{char}{body[field][2:]}"
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, json.dumps(body))
    error = assert_error(response, 400, "invalid", fields={field})
    assert f"U+{ord(char):04X}" in error["fields"][field][0] and "position 3" in error["fields"][field][0]


def test_bidi_characters_in_an_outcome_are_a_400(db: None, api_client: Any, nothing_stored: Any,
                                                 assert_error: Any) -> None:
    body = {"patient_id": "pt\u2066-1", "use_case": "diabetes", "present": True, "source_id": "ehr\u202e-9"}
    with nothing_stored():
        response = post_raw(api_client("patients:write"), OUTCOMES, json.dumps(body))
    assert_error(response, 400, "invalid", fields={"patient_id", "source_id"})


@pytest.mark.parametrize("key", ["key\u202e-1", "key\u0007-1", "key\u00e2\u0080\u00ae-1"],
                         ids=["U+202E", "BEL", "U+202E as UTF-8 bytes read as latin-1"])
def test_control_and_bidi_characters_in_the_idempotency_key_are_a_400(champion: Any, api_client: Any,
                                                                      valid_features: dict, nothing_stored: Any,
                                                                      assert_error: Any, key: str) -> None:
    with nothing_stored():
        response = post_raw(api_client("predictions:write"), PREDICTIONS, json.dumps(prediction(valid_features)),
                            HTTP_IDEMPOTENCY_KEY=key)
    error = assert_error(response, 400, "invalid_idempotency_key", fields={"Idempotency-Key"})
    assert "U+" in error["fields"]["Idempotency-Key"][0]


def test_bidi_characters_in_a_filter_are_a_400(champion: Any, api_client: Any, assert_error: Any) -> None:
    response = api_client("predictions:read").get(PREDICTIONS, {"patient_id": "pt\u202e-1"})
    assert_error(response, 400, "invalid", fields={"patient_id"})


# --- tokens ---------------------------------------------------------------------------------------------------------


def _token(oauth_app: Any, raw: str, **fields: Any) -> Any:
    from oauth2_provider.models import AccessToken, set_token_value

    token = AccessToken(application=oauth_app, scope="predictions:write predictions:read",
                        expires=timezone.now() + timedelta(hours=1), **fields)
    set_token_value(token, raw)
    token.save()
    return token


@pytest.mark.parametrize("case", ["unknown", "expired", "revoked"])
@pytest.mark.parametrize("path", [PREDICTIONS, "/api/v1/patients", "/fhir/RiskAssessment/"
                                  "00000000-0000-0000-0000-000000000000"])
def test_an_invalid_expired_or_revoked_token_is_401_invalid_token(champion: Any, oauth_app: Any,
                                                                  nothing_stored: Any, assert_error: Any,
                                                                  case: str, path: str) -> None:
    token = _token(oauth_app, "hostile-token")
    if case == "expired":
        type(token).objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    elif case == "revoked":
        token.revoke()
    raw = "not-a-token-we-issued" if case == "unknown" else "hostile-token"
    with nothing_stored():
        response = Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get(path)
    error = assert_error(response, 401, "invalid_token", fields=set())
    assert "invalid or expired" in error["message"]
    assert ("has expired" in error["message"]) == (case == "expired")
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api"') and 'error="invalid_token"' in challenge


def test_a_missing_token_keeps_its_answer(champion: Any, assert_error: Any) -> None:
    response = Client().get(PREDICTIONS)
    error = assert_error(response, 401, "not_authenticated", fields=set())
    assert error["message"] == "Authentication credentials were not provided."
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


# --- unexpected exceptions ------------------------------------------------------------------------------------------


class Unforeseen(RuntimeError):
    pass


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise Unforeseen("a fault injected by the test")


@pytest.mark.parametrize(("target", "method", "path"), [
    ("apps.predictions.apis.prediction_create_many", "post", PREDICTIONS),  # a service, inside DRF
    ("apps.core.authentication.load_access_token", "get", "/fhir/RiskAssessment/00000000-0000-0000-0000-000000000000"),
    ("apps.core.authentication.load_access_token", "get", "/api/v1/patients"),
    ("apps.core.middleware.SessionTimeoutMiddleware.__call__", "post", PREDICTIONS),  # a middleware, before DRF
    ("apps.core.middleware.SessionTimeoutMiddleware.__call__", "get", "/cds-services"),
])
def test_an_unexpected_exception_is_a_json_500_with_the_request_id(champion: Any, api_client: Any,
                                                                   valid_features: dict, monkeypatch: Any,
                                                                   nothing_stored: Any, assert_error: Any,
                                                                   caplog: Any, target: str, method: str,
                                                                   path: str) -> None:
    """Any exception nothing handles (here one injected into a service, the authentication or a middleware) answers
    500 in the error shape with the request id, never Django's HTML page; Django logs it with its traceback."""
    monkeypatch.setattr(target, _explode)
    client = api_client("predictions:write predictions:read patients:read")
    client.raise_request_exception = False
    with nothing_stored():
        if method == "post":
            response = post_raw(client, path, json.dumps(prediction(valid_features)),
                                HTTP_X_REQUEST_ID="hostile-request-0001")
        else:
            response = client.get(path, HTTP_X_REQUEST_ID="hostile-request-0001")
    error = assert_error(response, 500, "server_error", fields=set())
    assert error["request_id"] == response["X-Request-ID"] == "hostile-request-0001"
    assert "hostile-request-0001" in error["message"] and "Unforeseen" not in response.content.decode()
    assert any(r.exc_info and r.exc_info[0] is Unforeseen for r in caplog.records)


def test_an_unexpected_exception_on_a_page_keeps_the_html_answer(clinician_client: Client, monkeypatch: Any) -> None:
    monkeypatch.setattr("apps.core.middleware.SessionTimeoutMiddleware.__call__", _explode)
    clinician_client.raise_request_exception = False
    response = clinician_client.get("/")
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
