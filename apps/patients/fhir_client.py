"""A small FHIR R4 REST client (httpx): SMART Backend Services token, searches paged through `next` links.

Client authentication at the token endpoint: `private_key_jwt` (a client assertion signed with the client's key,
apps/patients/smart_backend.py) when a signing key is given, otherwise `client_secret_basic`, otherwise none.

Retries: a connection error, a timeout, 429 and 5xx are retried `retries` times; a 429 or 503 with `Retry-After`
(seconds or an HTTP date) waits what it asks, at most `max_wait` seconds; otherwise the wait doubles from `backoff`
(with jitter, also capped). Any other 4xx is never retried.

It raises `FhirError` for anything that is not a usable answer (server down, timeout, a refused client
authentication, 401 after a fresh token, 429/5xx after the retries, a non-Bundle answer, a `next` link to another
server). It never logs resource content, nor query strings (they can carry search values).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from .smart_backend import CLIENT_ASSERTION_TYPE, SigningKey

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


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """The wait a `Retry-After` header asks for (RFC 9110: delay-seconds or an HTTP date); None when absent or
    unreadable (then the client's own backoff applies). A date in the past is no wait."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _oauth_error_text(response: httpx.Response) -> str:
    """`error: error_description` of an OAuth error answer (RFC 6749 5.2), one short line; empty if none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or not body.get("error"):
        return ""
    text = f"{body['error']}: {body.get('error_description') or ''}".strip().rstrip(":")
    return "".join(ch if ch.isprintable() else " " for ch in text)[:300]


class FhirClient:
    def __init__(
        self,
        base_url: str,
        *,
        client_id: str = "",
        client_secret: str = "",
        signing_key: SigningKey | None = None,
        scope: str = "",
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url:
            raise FhirError("no FHIR base URL configured (FHIR_BASE_URL)")
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FhirError(f"FHIR_BASE_URL must be an http(s) URL, got {base_url!r}")
        self._origin = (parts.scheme, parts.netloc)
        if signing_key is not None and not client_id:
            raise FhirError("a FHIR signing key is configured but no client id (FHIR_CLIENT_ID): the client "
                            "assertion names the client registered at the FHIR server")
        self.client_id = client_id
        self.client_secret = client_secret
        self.signing_key = signing_key
        self.scope = " ".join(scope.split())
        self.retries = max(0, retries)
        self.backoff = max(0.0, backoff)
        self.max_wait = max(0.0, max_wait)
        self._sleep = sleep
        self._token: str | None = None
        self._token_expires: float | None = None  # time.monotonic() after which the token is fetched again
        self._http = httpx.Client(timeout=timeout, headers={"Accept": FHIR_JSON}, follow_redirects=False)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- auth --------------------------------------------------------------------------------------------------

    @property
    def auth_method(self) -> str:
        if self.signing_key is not None:
            return "private_key_jwt"
        return "client_secret_basic" if self.client_id else "none"

    def _token_endpoint(self) -> str:
        url = f"{self.base_url}/.well-known/smart-configuration"
        response = self._send("GET", url, auth=False)
        if response.status_code != 200:
            raise FhirError(f"SMART discovery at {url} answered {response.status_code}",
                            status_code=response.status_code)
        try:
            config = response.json()
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise FhirError(f"SMART discovery at {url} did not answer a JSON object")
        endpoint = str(config.get("token_endpoint") or "")
        if not endpoint or urlsplit(endpoint).scheme not in ("http", "https"):
            raise FhirError(f"SMART discovery at {url} names no usable token_endpoint")
        if self.signing_key is not None:
            methods = config.get("token_endpoint_auth_methods_supported")
            if not isinstance(methods, list) or "private_key_jwt" not in methods:
                raise FhirError(f"SMART discovery at {url} does not advertise private_key_jwt "
                                f"(token_endpoint_auth_methods_supported: {methods!r}): this server takes no signed "
                                "client assertion; unset FHIR_PRIVATE_KEY_FILE to use FHIR_CLIENT_SECRET instead")
            # SMART requires servers to support RS384 and ES384; a server that lists its algorithms must list ours.
            algs = config.get("token_endpoint_auth_signing_alg_values_supported")
            if isinstance(algs, list) and self.signing_key.alg not in algs:
                raise FhirError(f"SMART discovery at {url} does not accept {self.signing_key.alg} client assertions "
                                f"(token_endpoint_auth_signing_alg_values_supported: {algs!r}); set "
                                "FHIR_SIGNING_ALG and a key of that type")
        return endpoint

    def _token_request(self, endpoint: str) -> tuple[dict[str, str], tuple[str, str] | None]:
        """The form (and basic credentials) of one token request. Built per attempt: an assertion's jti may be
        used once only."""
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.signing_key is None:
            return form, (self.client_id, self.client_secret)
        assertion = self.signing_key.client_assertion(client_id=self.client_id, token_url=endpoint)
        return {**form, "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}, None

    def _fetch_token(self) -> str:
        endpoint = self._token_endpoint()
        response = self._send("POST", endpoint, auth=False, form=lambda: self._token_request(endpoint))
        if response.status_code != 200:
            said = _oauth_error_text(response)
            if self.signing_key is not None:
                what, hint = ("client assertion (private_key_jwt)",
                              "check FHIR_CLIENT_ID, FHIR_PRIVATE_KEY_FILE and FHIR_KEY_ID, and that the "
                              "server holds this client's public key (python manage.py fhir_jwks prints it)")
            else:
                what, hint = "client credentials", "check FHIR_CLIENT_ID / FHIR_CLIENT_SECRET"
            raise FhirError(f"the FHIR token endpoint refused the {what} ({response.status_code})"
                            + (f": {said}" if said else "") + f"; {hint}", status_code=response.status_code)
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise FhirError("the FHIR token endpoint answered without an access_token")
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        self._token_expires = (time.monotonic() + max(0.0, float(expires_in) - 30.0)
                               if isinstance(expires_in, int | float) else None)
        granted = set(str(body.get("scope") or self.scope).split())
        missing = sorted(set(self.scope.split()) - granted)
        if missing:
            logger.warning("FHIR token granted fewer scopes than asked",
                           extra={"source": self.base_url, "missing_scopes": missing})
        return str(token)

    def _auth_headers(self, *, refresh: bool = False) -> dict[str, str]:
        if self.auth_method == "none":
            return {}
        expired = self._token_expires is not None and time.monotonic() >= self._token_expires
        if self._token is None or refresh or expired:
            self._token = self._fetch_token()
        return {"Authorization": f"Bearer {self._token}"}

    # --- transport ---------------------------------------------------------------------------------------------

    def _backoff_wait(self, attempt: int) -> float:
        """Exponential backoff with jitter (half to all of backoff * 2^(attempt-1)), at most max_wait."""
        return min(self.max_wait, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)  # noqa: S311

    def _send(self, method: str, url: str, *, auth: bool = True, params: Mapping[str, Any] | None = None,
              form: Callable[[], tuple[dict[str, str], tuple[str, str] | None]] | None = None,
              refresh: bool = False) -> httpx.Response:
        """One request, retried on connection errors, timeouts, 429 and 5xx (see the module docstring)."""
        headers = self._auth_headers(refresh=refresh) if auth else {}
        attempts = self.retries + 1
        last, status = "", None
        for attempt in range(1, attempts + 1):
            data, basic = form() if form is not None else (None, None)
            try:
                response = self._http.request(method, url, params=params, data=data, headers=headers, auth=basic)
            except httpx.TimeoutException:
                last, status, asked = f"timed out after {self._http.timeout.read}s", None, None
            except httpx.TransportError as exc:
                last, status, asked = f"cannot connect ({type(exc).__name__}: {exc})", None, None
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                last, status = f"answered {response.status_code}", response.status_code
                asked = retry_after_seconds(response.headers.get("retry-after"))
                response.close()
            if attempt == attempts:
                break
            wait = min(asked, self.max_wait) if asked is not None else self._backoff_wait(attempt)
            logger.warning("FHIR request retried", extra={
                "source": self.base_url, "method": method, "path": _path(url), "status": status,
                "attempt": attempt, "attempts": attempts, "retry_after": asked, "wait_seconds": round(wait, 3)})
            self._sleep(wait)
        raise FhirError(f"FHIR server {self.base_url}: {method} {_path(url)} {last} "
                        f"({attempts} attempt(s); FHIR_MAX_RETRIES={self.retries})", status_code=status)

    def _get_json(self, url: str, params: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], httpx.Response]:
        response = self._send("GET", url, params=params)
        if response.status_code == 401 and self.auth_method != "none":
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
