"""A small FHIR R4 REST client (httpx): SMART backend client-credentials token, searches paged through `next` links.

It raises `FhirError` for anything that is not a usable answer (server down, timeout, 401 after a fresh token,
5xx after retries, a non-Bundle answer, a `next` link to another server). It never logs resource content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class FhirError(Exception):
    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class SearchPage:
    resource_type: str
    number: int  # 1-based
    resources: list[dict[str, Any]]  # entries with search.mode "match" (or no mode) of the asked type
    total: int | None  # Bundle.total of the first page (the server's count for the whole search)
    server_time: datetime | None  # Bundle.meta.lastUpdated, else the Date header


def _parse_instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class FhirClient:
    def __init__(
        self,
        base_url: str,
        *,
        client_id: str = "",
        client_secret: str = "",
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        if not base_url:
            raise FhirError("no FHIR base URL configured (FHIR_BASE_URL)")
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FhirError(f"FHIR_BASE_URL must be an http(s) URL, got {base_url!r}")
        self._origin = (parts.scheme, parts.netloc)
        self.client_id = client_id
        self.client_secret = client_secret
        self.retries = retries
        self.backoff = backoff
        self._token: str | None = None
        self._http = httpx.Client(timeout=timeout, headers={"Accept": FHIR_JSON}, follow_redirects=False)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- auth --------------------------------------------------------------------------------------------------

    def _token_endpoint(self) -> str:
        url = f"{self.base_url}/.well-known/smart-configuration"
        response = self._send("GET", url, auth=False)
        if response.status_code != 200:
            raise FhirError(f"SMART discovery at {url} answered {response.status_code}",
                            status_code=response.status_code)
        endpoint = str(response.json().get("token_endpoint") or "")
        if not endpoint or urlsplit(endpoint).scheme not in ("http", "https"):
            raise FhirError(f"SMART discovery at {url} names no usable token_endpoint")
        return endpoint

    def _fetch_token(self) -> str:
        endpoint = self._token_endpoint()
        response = self._send("POST", endpoint, auth=False, data={"grant_type": "client_credentials"},
                              basic=(self.client_id, self.client_secret))
        if response.status_code != 200:
            raise FhirError(f"the FHIR token endpoint refused the client credentials ({response.status_code}); "
                            "check FHIR_CLIENT_ID / FHIR_CLIENT_SECRET", status_code=response.status_code)
        token = response.json().get("access_token")
        if not token:
            raise FhirError("the FHIR token endpoint answered without an access_token")
        return str(token)

    def _auth_headers(self, *, refresh: bool = False) -> dict[str, str]:
        if not self.client_id:
            return {}
        if self._token is None or refresh:
            self._token = self._fetch_token()
        return {"Authorization": f"Bearer {self._token}"}

    # --- transport ---------------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, auth: bool = True, params: Mapping[str, Any] | None = None,
              data: Mapping[str, str] | None = None, basic: tuple[str, str] | None = None,
              refresh: bool = False) -> httpx.Response:
        """One request with retries for connection errors and 5xx answers (short exponential backoff)."""
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                headers = self._auth_headers(refresh=refresh and attempt == 0) if auth else {}
                response = self._http.request(method, url, params=params, data=data, headers=headers,
                                              auth=basic)
            except httpx.TimeoutException:
                last = f"timed out after {self._http.timeout.read}s"
                continue
            except httpx.TransportError as exc:
                last = f"cannot connect ({type(exc).__name__}: {exc})"
                continue
            if response.status_code >= 500:
                last = f"answered {response.status_code}"
                continue
            return response
        raise FhirError(f"FHIR server {self.base_url}: {method} {_path(url)} {last} "
                        f"({self.retries + 1} attempt(s))", status_code=None if "answered" not in last else 500)

    def _get_json(self, url: str, params: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], httpx.Response]:
        response = self._send("GET", url, params=params)
        if response.status_code == 401 and self.client_id:
            response = self._send("GET", url, params=params, refresh=True)  # the token may have expired
        if response.status_code != 200:
            raise FhirError(f"FHIR server {self.base_url}: GET {_path(url)} answered {response.status_code}"
                            + (" (authentication refused)" if response.status_code in (401, 403) else ""),
                            status_code=response.status_code)
        try:
            body = response.json()
        except ValueError as exc:
            raise FhirError(f"FHIR server {self.base_url}: GET {_path(url)} did not answer JSON") from exc
        if not isinstance(body, dict):
            raise FhirError(f"FHIR server {self.base_url}: GET {_path(url)} did not answer a JSON object")
        return body, response

    # --- API ---------------------------------------------------------------------------------------------------

    def capability_statement(self) -> dict[str, Any]:
        body, _ = self._get_json(f"{self.base_url}/metadata")
        return body

    def search(self, resource_type: str, params: Mapping[str, Any], *, max_pages: int = 100_000
               ) -> Iterator[SearchPage]:
        """Every page of a search, following `next` links (only to this server)."""
        url = f"{self.base_url}/{resource_type}"
        query: Mapping[str, Any] | None = params
        seen: set[str] = set()
        total: int | None = None
        for number in range(1, max_pages + 1):
            body, response = self._get_json(url, query)
            if body.get("resourceType") != "Bundle":
                raise FhirError(f"FHIR server {self.base_url}: search {resource_type} answered "
                                f"{body.get('resourceType')!r}, not a Bundle")
            if number == 1 and isinstance(body.get("total"), int):
                total = int(body["total"])
            resources = [
                entry["resource"] for entry in body.get("entry") or ()
                if isinstance(entry.get("resource"), dict)
                and entry["resource"].get("resourceType") == resource_type
                and (entry.get("search") or {}).get("mode", "match") == "match"
            ]
            server_time = _parse_instant((body.get("meta") or {}).get("lastUpdated"))
            if server_time is None and response.headers.get("date"):
                server_time = parsedate_to_datetime(response.headers["date"])
            yield SearchPage(resource_type, number, resources, total, server_time)
            next_url = next((link.get("url") for link in body.get("link") or () if link.get("relation") == "next"),
                            None)
            if not next_url:
                return
            parts = urlsplit(next_url)
            if (parts.scheme, parts.netloc) != self._origin:
                raise FhirError(f"FHIR server {self.base_url}: a next link points to another server "
                                f"({parts.netloc}); refusing to send the token there")
            if next_url in seen:
                raise FhirError(f"FHIR server {self.base_url}: paging loops (next link repeats)")
            seen.add(next_url)
            url, query = next_url, None
        raise FhirError(f"FHIR server {self.base_url}: search {resource_type} has more than {max_pages} pages")


def _path(url: str) -> str:
    return urlsplit(url).path or url
