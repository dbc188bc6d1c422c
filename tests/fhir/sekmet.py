"""A real FHIR R4 server for tests and benchmarks: sekmet-fhir started as a subprocess on a free loopback port with
SMART client-credentials auth (client_secret_basic, and private_key_jwt for `extra_clients` registered with a JWKS
or a JWKS URL) and a private data folder, plus carebundle's synthetic patients to load into it.

sekmet-fhir lives in its own virtualenv (`.venv/fhir-server`, from requirements/fhir-server.txt): it needs
antlr4-python3-runtime >= 4.10 (through fhirpathpy) while dvc's hydra-core pins 4.9, so the two cannot share one
environment. Set SEKMET_BIN to use another installation.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SEKMET = REPO / ".venv" / "fhir-server" / "bin" / "sekmet"


def sekmet_executable() -> str:
    candidate = os.environ.get("SEKMET_BIN") or (str(DEFAULT_SEKMET) if DEFAULT_SEKMET.exists() else None)
    candidate = candidate or shutil.which("sekmet")
    if not candidate:
        raise RuntimeError(
            "sekmet-fhir is not installed: run `make .venv/fhir-server/.installed` (or `make test`), "
            "or set SEKMET_BIN to a `sekmet` executable"
        )
    return candidate


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SekmetServer:
    root: Path
    port: int = field(default_factory=free_port)
    client_id: str = "clinpredict-tests"
    client_secret: str = "clinpredict-tests-secret"  # noqa: S105 - a throwaway credential of a loopback test server
    # More SMART clients, as sekmet's `smart_clients` entries: e.g. {"client_id", "jwks": {...}, "scopes"} or
    # {"client_id", "jwks_url", "scopes"} for private_key_jwt (SMART Backend Services) without a client secret.
    extra_clients: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    _token: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def log_path(self) -> Path:
        return self.root / "sekmet.log"

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "base_url": self.base_url,
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(self.root / "data"),
            "log_inbound": False,
            "simulator": {"enabled": False},
            "server_auth": {"types": ["smart"], "smart_clients": [
                {"client_id": self.client_id, "client_secret": self.client_secret,
                 "scopes": "system/*.read system/*.write"}, *self.extra_clients]},
        }
        path = self.root / "settings.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def start(self, *, timeout: float = 60.0) -> SekmetServer:
        config = self.write_config()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # its own process group, so stop() ends its workers too
            [sekmet_executable(), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sekmet exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=2).status_code == 200:
                    self._token = None
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"sekmet did not answer /fhir/metadata within {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> SekmetServer:
        self.stop()
        return self.start()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    # --- client side: loading data and asking for counts ------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(f"http://127.0.0.1:{self.port}/auth/token", auth=(self.client_id, self.client_secret),
                                  data={"grant_type": "client_credentials"}, timeout=10)
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", "Content-Type": "application/fhir+json",
                "Accept": "application/fhir+json"}

    def post_transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(self.base_url, content=json.dumps(bundle), headers=self._headers(), timeout=300)
        response.raise_for_status()
        return dict(response.json())

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.base_url}/{resource['resourceType']}", content=json.dumps(resource),
                              headers=self._headers(), timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def search(self, resource_type: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/{resource_type}", params=params or {}, headers=self._headers(),
                             timeout=60)
        response.raise_for_status()
        return dict(response.json())

    def count(self, resource_type: str, params: dict[str, str] | None = None) -> int:
        return int(self.search(resource_type, {**(params or {}), "_summary": "count"})["total"])


def cohort_bundles(count: int, seed: int = 42) -> list[dict[str, Any]]:
    """carebundle's synthetic cohort: one transaction Bundle per patient (deterministic for a seed)."""
    from carebundle import generate_cohort, to_json

    return [json.loads(to_json(bundle)) for bundle in generate_cohort(count=count, seed=seed)]


def merge_bundles(bundles: list[dict[str, Any]]) -> dict[str, Any]:
    """Several transaction Bundles as one (their urn:uuid fullUrls are unique across patients)."""
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [entry for bundle in bundles for entry in bundle.get("entry", [])]}


def load_bundles(server: SekmetServer, bundles: list[dict[str, Any]], *, per_transaction: int = 25) -> Counter[str]:
    """POST the bundles (a few patients per transaction); returns the resources loaded per type."""
    loaded: Counter[str] = Counter()
    for start in range(0, len(bundles), per_transaction):
        server.post_transaction(merge_bundles(bundles[start:start + per_transaction]))
    for bundle in bundles:
        loaded.update(entry["resource"]["resourceType"] for entry in bundle.get("entry", []))
    return loaded


def resource_counts(bundles: list[dict[str, Any]]) -> Counter[str]:
    return Counter(entry["resource"]["resourceType"] for bundle in bundles for entry in bundle.get("entry", []))


def condition_codes(bundles: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(coding["system"], coding["code"]) for bundle in bundles for entry in bundle.get("entry", [])
            if entry["resource"]["resourceType"] == "Condition"
            for coding in entry["resource"]["code"]["coding"][:1]]
