"""No patient values, identifiers or secrets in logs or error pages: canary values go through the main flows
(API prediction, a rejected one, the clinician form with an error, an outcome, a server error along the way) and
must appear in no log record and no error page."""

import json
import logging
from typing import Any

import pytest
from django.test import Client

from apps.core.logging import RedactQueryStringFilter

CANARY_PATIENT = "CANARY-PT-93817"
CANARY_GLUCOSE = 163.579
CANARY_BAD_BMI = 87.123
CANARY_SECRET = "test-system-secret"
CANARIES = [CANARY_PATIENT, str(CANARY_GLUCOSE), str(CANARY_BAD_BMI), CANARY_SECRET, "tok-predictions"]


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _rendered(caplog: pytest.LogCaptureFixture) -> str:
    handler = logging.StreamHandler()
    handler.addFilter(RedactQueryStringFilter())
    lines = []
    for record in caplog.records:
        handler.filter(record)
        lines.append(record.getMessage())
        lines.append(json.dumps({k: str(v) for k, v in record.__dict__.items()}, default=str))
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


def test_main_flows_with_an_error_leave_no_canary_in_logs_or_error_pages(
    champion: Any, api_client: Any, clinician_client: Client, oauth_app: Any, valid_features: dict,
    all_logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Client(raise_request_exception=False)
    token = client.post("/o/token/", {"grant_type": "client_credentials", "client_id": "test-system",
                                      "client_secret": CANARY_SECRET, "scope": "predictions:write predictions:read"})
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token.json()['access_token']}"}
    good = {"use_case": "diabetes", "patient_id": CANARY_PATIENT, "features": {**valid_features,
                                                                                 "glucose": CANARY_GLUCOSE}}
    pages = []
    pages.append(client.post("/api/v1/predictions", data=json.dumps(good), content_type="application/json", **bearer))
    bad = {**good, "features": {**good["features"], "bmi": CANARY_BAD_BMI}}
    pages.append(client.post("/api/v1/predictions", data=json.dumps(bad), content_type="application/json", **bearer))
    pages.append(client.get(f"/api/v1/predictions?patient_id={CANARY_PATIENT}", **bearer))
    pages.append(clinician_client.post("/predict/diabetes/", {"patient_id": CANARY_PATIENT, "glucose": "",
                                                              "bmi": str(CANARY_BAD_BMI), "age": "40"}))
    pages.append(client.post("/accounts/login/", {"username": CANARY_PATIENT, "password": CANARY_SECRET}))

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("inference backend crashed")

    monkeypatch.setattr("apps.predictions.services._score", explode)
    crashed = client.post("/api/v1/predictions", data=json.dumps(good), content_type="application/json", **bearer)
    pages.append(crashed)

    assert crashed.status_code == 500  # the error really happened along the way
    assert pages[0].status_code == 201 and pages[1].status_code == 400
    logged = _rendered(all_logs)
    assert "inference backend crashed" in logged  # the crash itself is logged...
    for canary in CANARIES:
        assert canary not in logged, f"{canary} leaked into the logs"  # ...but no patient value or secret
    for page in pages[2:]:
        body = page.content.decode(errors="replace")
        assert CANARY_SECRET not in body
    assert CANARY_PATIENT not in crashed.content.decode()


def test_access_log_lines_lose_their_query_string() -> None:
    record = logging.LogRecord("django.server", logging.INFO, __file__, 1, '"%s" %s %s',
                               ("GET /api/v1/predictions?patient_id=CANARY-PT-1 HTTP/1.1", "200", "512"), None)

    RedactQueryStringFilter().filter(record)

    assert "CANARY-PT-1" not in record.getMessage()
    assert "GET /api/v1/predictions?[redacted] HTTP/1.1" in record.getMessage()
