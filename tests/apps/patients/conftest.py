"""Fixtures of the patients tests: real sekmet-fhir servers on loopback ports (tests/fhir/sekmet.py), carebundle
patients loaded into them, and Django settings pointing the sync at them."""

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# `fhir_helpers` and `fhir_server_factory` come from tests/conftest.py (the CDS Hooks tests use them too).
sekmet = sys.modules["clinpredict_tests_fhir_sekmet"]  # loaded by tests/conftest.py
COHORT_SIZE = 200


@pytest.fixture(scope="session")
def cohort() -> list[dict[str, Any]]:
    """carebundle generate_cohort(count=200, seed=42): one transaction Bundle per patient."""
    return sekmet.cohort_bundles(COHORT_SIZE, seed=42)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory, cohort: list[dict[str, Any]]) -> Iterator[Any]:
    """One sekmet-fhir server for the session with the 200 carebundle patients loaded. Treat as read-only: tests
    that change server data start their own with `fhir_server_factory`."""
    server = sekmet.SekmetServer(tmp_path_factory.mktemp("sekmet-shared")).start()
    try:
        sekmet.load_bundles(server, cohort)
        yield server
    finally:
        server.stop()


@pytest.fixture
def fhir_settings(settings: Any) -> Callable[[Any], Any]:
    """Point the Django FHIR settings at a server (fast retries so failure tests stay quick)."""

    def point(server: Any, *, secret: str | None = None, page_size: int = 200) -> Any:
        settings.FHIR_BASE_URL = server.base_url
        settings.FHIR_CLIENT_ID = server.client_id
        settings.FHIR_CLIENT_SECRET = server.client_secret if secret is None else secret
        settings.FHIR_PAGE_SIZE = page_size
        settings.FHIR_TIMEOUT_SECONDS = 10.0
        settings.FHIR_MAX_RETRIES = 1
        settings.FHIR_RETRY_BACKOFF_SECONDS = 0.01
        settings.FHIR_PRIVATE_KEY = ""  # client_secret_basic (tests/apps/patients/test_fhir_smart_sync.py: keys)
        return settings

    return point
