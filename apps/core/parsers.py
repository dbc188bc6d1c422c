"""The API's one JSON parser: bounded in size and depth, strict about what JSON may say, and precise when it refuses.

DRF's `JSONParser` reads however many bytes are sent, lets Python's `json` recurse as deep as the body nests (100k `[`
ends in `RecursionError`, a 500), keeps the last of two equal keys, turns `1e309` into `inf` and a 400-digit integer
into an int that `float()` cannot convert later. Here:

- the body may hold at most `CLINPREDICT_MAX_BODY_BYTES` bytes (413). A declared length over it is refused before
  the body is read by `BodyLimitMiddleware` (apps/core/middleware.py); Django's DATA_UPLOAD_MAX_MEMORY_SIZE is the
  same number, and the check here also stops a body that understates or omits its length;
- it must be UTF-8 JSON (400 `parse_error`, with the line and column);
- objects and arrays may nest at most `CLINPREDICT_MAX_JSON_DEPTH` levels, checked by a linear scan before `json` runs
  (400 `nesting_too_deep`), so the parser's recursion is always bounded;
- every number must be a finite IEEE 754 double (RFC 7493 I-JSON; `NaN`/`Infinity` are not JSON), no object may
  repeat a key, and no string may hold a lone surrogate (`"\\ud800"`, which cannot be stored or sent back as UTF-8).
  These are refused with 400 `invalid` and the JSON path of each offending value in `fields`
  (`features.glucose`, `0.patient_id`): the JSON is well formed, so "not valid JSON" would be the wrong answer.
"""

import json
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from rest_framework.parsers import JSONParser

from .exceptions import ApplicationError

# One JSON string, escapes included (unrolled loop: no backtracking), and a run of anything but brackets.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]", re.ASCII)
_MAX_DOUBLE_DIGITS = 309  # 1.8e308 has 309 digits: a longer integer cannot be a double

NOT_A_NUMBER = "NaN and Infinity are not JSON numbers; send a finite number (or null where a value may be unknown)."
OUT_OF_RANGE = "The number is outside the range of a double (about ±1.8e308); send a finite number."
DUPLICATE_KEY = "The key appears {count} times in this object; send each key once."
LONE_SURROGATE = "The string holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair); send valid Unicode text."


class RequestTooLarge(ApplicationError):
    status_code = 413


class _Refused:
    """Stands in for a number the API refuses, so the refusal can name where in the document it was."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _DuplicateKeys(dict):  # type: ignore[type-arg]
    """An object that repeated keys: the keys and how often each appeared."""

    duplicates: dict[str, int]


def max_body_bytes() -> int:
    return int(settings.CLINPREDICT_MAX_BODY_BYTES)


def too_large(size: int | None) -> RequestTooLarge:
    limit = max_body_bytes()
    got = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return RequestTooLarge(
        f"The request body is {got}; the limit is {limit:,} bytes (CLINPREDICT_MAX_BODY_BYTES). "
        "Send fewer items per request.", code="request_too_large", extra={"limit_bytes": limit},
    )


def _check_depth(text: str, limit: int) -> None:
    if text.count("[") + text.count("{") <= limit:
        return  # cannot nest deeper than it has brackets
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))  # both in C: a batch of 1,000 takes about a millisecond
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > limit:
                raise ApplicationError(
                    f"The JSON nests objects and arrays deeper than {limit} levels, the limit "
                    "(CLINPREDICT_MAX_JSON_DEPTH).", code="nesting_too_deep", extra={"limit_depth": limit},
                )
        else:
            depth -= 1


def _paths(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(JSON path, value) for every value of the document, iteratively (the depth is bounded, but be plain)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        yield where, item
        if isinstance(item, dict):
            stack.extend((f"{where}.{key}" if where else str(key), child) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}.{index}" if where else str(index), child) for index, child in enumerate(item))


def _problems(document: Any, *, check_strings: bool) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for where, item in _paths(document):
        if isinstance(item, _Refused):
            found.setdefault(where or "body", []).append(item.message)
        elif isinstance(item, _DuplicateKeys):
            for key, count in item.duplicates.items():
                found.setdefault(f"{where}.{key}" if where else key, []).append(DUPLICATE_KEY.format(count=count))
        if check_strings:
            texts = [item] if isinstance(item, str) else list(item) if isinstance(item, dict) else []
            for text in texts:
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    found.setdefault(where or "body", []).append(LONE_SURROGATE)
    return found


def loads(text: str, *, max_depth: int) -> Any:
    """Parse `text` as the API accepts JSON, or raise ApplicationError (400) saying what and where."""
    _check_depth(text, max_depth)
    flagged = False

    def refuse(message: str) -> _Refused:
        nonlocal flagged
        flagged = True
        return _Refused(message)

    def parse_int(digits: str) -> Any:
        if len(digits.lstrip("-")) > _MAX_DOUBLE_DIGITS:
            return refuse(OUT_OF_RANGE)  # before int(): Python refuses > 4,300 digits with its own error
        number = int(digits)
        try:
            float(number)
        except OverflowError:
            return refuse(OUT_OF_RANGE)
        return number

    def parse_float(digits: str) -> Any:
        number = float(digits)
        return refuse(OUT_OF_RANGE) if number in (float("inf"), float("-inf")) else number

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        nonlocal flagged
        flagged = True
        counts: dict[str, int] = {}
        for key, _ in pairs:
            counts[key] = counts.get(key, 0) + 1
        repeated = _DuplicateKeys(obj)
        repeated.duplicates = {key: count for key, count in counts.items() if count > 1}
        return repeated

    try:
        document = json.loads(text, object_pairs_hook=pairs_hook, parse_int=parse_int, parse_float=parse_float,
                              parse_constant=lambda name: refuse(NOT_A_NUMBER))
    except json.JSONDecodeError as exc:
        raise ApplicationError(
            f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            code="parse_error",
        ) from exc
    surrogates = _ESCAPED_SURROGATE.search(text) is not None
    if flagged or surrogates:
        problems = _problems(document, check_strings=surrogates)
        if problems:
            raise ApplicationError("The request body is valid JSON but holds values the API cannot accept; "
                                   "nothing was stored.", code="invalid", fields=problems)
    return document


class StrictJSONParser(JSONParser):
    """`application/json` bodies, read and parsed as the module docstring says."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        limit = max_body_bytes()
        request = (parser_context or {}).get("request")
        meta = getattr(request, "META", {}) if request is not None else {}
        try:
            declared = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise too_large(declared)
        raw = stream.read(limit + 1)  # a body without (or understating) its Content-Length stops here too
        if len(raw) > limit:
            raise too_large(None)
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ApplicationError(f"The request body is not valid {encoding} text; send UTF-8 JSON.",
                                   code="parse_error") from exc
        return loads(text, max_depth=int(settings.CLINPREDICT_MAX_JSON_DEPTH))
