"""Schemathesis against our own OpenAPI schema, in process, with a token carrying every scope and a live champion:
generated requests never produce a server error, and documented responses match the schema.

Every operation runs twice: with positive data (what the schema allows) and with negative data (what it forbids:
wrong types, missing required fields, out-of-range values, unknown parameters), schemathesis's two generation
modes. Each run prints its case count per operation."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from clinpredict.wsgi import application

ALL_SCOPES = "predictions:read predictions:write patients:read patients:write audit:read"
TOKEN = "fuzz-token-with-every-scope"
# No 5xx, every status documented, and every documented body (errors included) matching its schema.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_RESPONSE_SECONDS = 5.0  # a generous ceiling on a shared 2-core machine: catches hangs, not slowness


@pytest.fixture
def _keep_test_connection() -> Iterator[None]:
    """Calling the WSGI app directly would close the test's database connection after each request (Django's test
    Client disconnects the same handler for the same reason)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(champion: Any, oauth_app: Any, _keep_test_connection: None) -> Any:
    from oauth2_provider.models import AccessToken, set_token_value

    token = AccessToken(application=oauth_app, scope=ALL_SCOPES, expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, TOKEN)
    token.save()
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_server_errors_on_any_operation(api_schema: Any, mode: schemathesis.GenerationMode) -> None:
    counted: dict[str, int] = {}
    nothing_to_break: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
            key = f"{case.method} {case.operation.path}"
            counted[key] = counted.get(key, 0) + 1
            case.validate_response(response, checks=CHECKS)
            assert response.elapsed <= MAX_RESPONSE_SECONDS, f"{key} took {response.elapsed:.2f} s"

        try:
            run()
        except Unsatisfiable:
            # Negative mode found nothing in this operation's schema to violate (no inputs, or only free-form
            # strings in the path or query): every generated case was filtered out before any request was sent.
            assert mode.is_negative and not counted.get(f"{operation.method.upper()} {operation.path}")
            nothing_to_break.append(f"{operation.method.upper()} {operation.path}")
    print(f"schemathesis {mode.value} cases per operation:", counted, "total:", sum(counted.values()),
          "nothing to make invalid:", nothing_to_break)
    assert len(counted) >= 4 and sum(counted.values()) >= 100
