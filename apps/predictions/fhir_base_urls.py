"""FHIR base URLs registered for a CDS client, and whether a `fhirServer` sent in a CDS Hooks call lies under one.

CDS Hooks lets the calling EHR name the FHIR server the service should read from (`fhirServer`) and hand it an access
token (`fhirAuthorization`). Taken as given, that is a server-side request forgery: any registered client could make
this server connect anywhere it can reach, token attached. So a `fhirServer` is only used when it lies under a base
URL that staff registered for that client in admin: same scheme, host and port (default ports normalised) and a path
that equals the base's path or continues it after a `/`.

The grammar is deliberately narrower than RFC 3986, so that there is nothing for two URL parsers to disagree on:
http/https only, an ASCII host name or IP literal (no userinfo, no IDN: a Unicode host that would map onto a
registered one is refused, not converted), an optional port, and a path of plain segments: no `.`/`..` segments, no
empty segments, no percent-encoding, no backslash, no query, no fragment. Nothing here resolves a name or opens a
connection; the check is on the text alone.
"""

import ipaddress
import re
from dataclasses import dataclass

DEFAULT_PORTS = {"http": 80, "https": 443}
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<authority>[^/?#]*)"
    r"(?P<path>[^?#]*)"
)
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
# RFC 3986 unreserved characters only: no percent-encoding, no ":"/"@" (nothing that reads like an authority), no
# sub-delimiters (";" is a path parameter to some servers: "/fhir/..;/admin" climbs out on Tomcat).
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


class FhirBaseUrlError(ValueError):
    """Why a URL is not acceptable as (or under) a FHIR base URL; the message is shown to the caller."""


@dataclass(frozen=True)
class FhirBaseUrl:
    scheme: str
    host: str  # lower-case name, dotted IPv4, or IPv6 in brackets
    port: int
    path: str  # "" or "/seg/seg", never a trailing "/"

    def __str__(self) -> str:
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.path}"

    def contains(self, other: "FhirBaseUrl") -> bool:
        """Whether `other` lies under this base: same origin, and a path equal to ours or continuing it after "/"."""
        if (other.scheme, other.host, other.port) != (self.scheme, self.host, self.port):
            return False
        return other.path == self.path or other.path.startswith(self.path + "/")


def _host(authority: str) -> tuple[str, str]:
    """(host, port text) from an authority without userinfo."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise FhirBaseUrlError("the IPv6 address is not closed with ']'")
        literal, rest = authority[1:end], authority[end + 1:]
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError as exc:
            raise FhirBaseUrlError("the host is not a valid IPv6 address") from exc
        if rest and not rest.startswith(":"):
            raise FhirBaseUrlError("unexpected text after the IPv6 address")
        return f"[{address.compressed}]", rest[1:] if rest else ""
    host, colon, port = authority.partition(":")
    if colon and not port:
        raise FhirBaseUrlError("':' without a port number")
    host = host.lower()
    if not host:
        raise FhirBaseUrlError("no host")
    labels = host.split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise FhirBaseUrlError("the host must be an ASCII host name (letters, digits, '-', dots between labels, "
                               "no trailing dot) or an IP address")
    return host, port


def fhir_base_url_parse(text: str) -> FhirBaseUrl:
    """Parse and normalise a FHIR base URL (or a URL to be checked against one); FhirBaseUrlError says why not."""
    if not isinstance(text, str) or not text:
        raise FhirBaseUrlError("must be a non-empty string")
    if len(text) > 2000:
        raise FhirBaseUrlError("longer than 2000 characters")
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise FhirBaseUrlError("only printable ASCII without spaces is accepted (no Unicode/IDN hosts, no control "
                               "characters)")
    if "\\" in text:
        raise FhirBaseUrlError("backslashes are not accepted")
    if "%" in text:
        raise FhirBaseUrlError("percent-encoding is not accepted")
    if "?" in text or "#" in text:
        raise FhirBaseUrlError("a FHIR base URL has no query string or fragment")
    match = _URL.fullmatch(text)
    if match is None:
        raise FhirBaseUrlError("not an absolute URL (scheme://host/path)")
    scheme = match["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise FhirBaseUrlError("the scheme must be http or https")
    authority = match["authority"]
    if "@" in authority:
        raise FhirBaseUrlError("user information (user:password@) is not accepted")
    host, port_text = _host(authority)
    if port_text:
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise FhirBaseUrlError("the port must be a number from 1 to 65535")
        port = int(port_text)
    else:
        port = DEFAULT_PORTS[scheme]
    path = match["path"].removesuffix("/")  # one trailing "/" is the same base
    segments = path.split("/")[1:] if path else []
    for segment in segments:
        if segment and not segment.strip("."):
            raise FhirBaseUrlError("'.' and '..' path segments are not accepted")
        if not _SEGMENT.fullmatch(segment):
            raise FhirBaseUrlError("the path has an empty segment ('//') or a character that is not accepted "
                                   "(accepted: letters, digits and - . _ ~)")
    return FhirBaseUrl(scheme=scheme, host=host, port=port, path=path)


def fhir_base_urls_normalise(values: object) -> list[str]:
    """The registered list, each URL normalised; FhirBaseUrlError names the first one that is not acceptable."""
    if not isinstance(values, list):
        raise FhirBaseUrlError("must be a list of URLs")
    normalised: list[str] = []
    for value in values:
        try:
            url = str(fhir_base_url_parse(value))
        except FhirBaseUrlError as exc:
            raise FhirBaseUrlError(f"{value!r}: {exc}") from exc
        if url not in normalised:
            normalised.append(url)
    return normalised


def fhir_base_url_match(candidate: str, registered: list[str]) -> FhirBaseUrl:
    """The candidate, parsed, when it lies under one of the registered bases; FhirBaseUrlError otherwise.

    A registered entry that does not parse (e.g. saved without the admin's validation) matches nothing."""
    url = fhir_base_url_parse(candidate)
    for entry in registered:
        try:
            base = fhir_base_url_parse(entry)
        except (FhirBaseUrlError, TypeError):
            continue
        if base.contains(url):
            return url
    raise FhirBaseUrlError("not under a FHIR base URL registered for this CDS client (same scheme, host, port and "
                           "path prefix required)")
