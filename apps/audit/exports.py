"""Export formats for audit events: CSV, JSONL and a FHIR R4 Bundle of AuditEvent resources.

`audit_export_stream` is what the command, the API and the auditor pages stream: an iterator of byte blocks, so a
response or a file can hold any number of events in constant memory. Values are written verbatim (times in UTC with
microseconds, inputs/output as canonical JSON), so the chain can be re-checked from a CSV or JSONL export of an
unfiltered range. CSV cells are also safe to open in a spreadsheet: a cell that starts like a formula (or with a
single quote) gets a leading single quote (apps/core/csv_safe.py, where `csv_cell_value` reads the value back).
JSONL and FHIR are written unchanged, and no stored event or hash changes.

Two implementations write the same bytes. The reference one (`export_stream`: plain dict rows from
`selectors.audit_event_rows`, formatted in Python, blocks of about 64 KiB) runs on SQLite. On PostgreSQL the database
writes each row's text around inputs and output (JSON string escapes as `json.dumps(ensure_ascii=False)`, CSV
quoting as the csv module's minimal quoting, times as `_iso`), pages of rows are read one ahead in a thread, and
Python adds only the canonical JSON of inputs and output (one block per page). jsonb text has ", " separators and
its own key order, so inputs and output are parsed and re-encoded, with orjson where orjson writes exactly what
`canonical_json` writes (see `_canonical`). Tests compare the two implementations byte for byte.
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import connection

from apps.core.csv_safe import csv_safe, csv_safe_bytes, csv_safe_prefix_sql

from .hashing import canonical_json
from .selectors import EXPORT_FIELDS, AuditEventFilters, audit_event_rows, audit_event_text_batches

FORMATS = ("csv", "jsonl", "fhir")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "fhir": "application/fhir+json",
}
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "fhir": "fhir.json"}
_BLOCK_BYTES = 64 * 1024

DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ACTION_SYSTEM = "urn:clinpredict:audit-action"
IDENTIFIER_SYSTEM = "urn:clinpredict:"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _blocks(pieces: Iterable[str]) -> Iterator[bytes]:
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= _BLOCK_BYTES:
            yield "".join(buffer).encode("utf-8")
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode("utf-8")


def csv_rows(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(EXPORT_FIELDS)
        for row in rows:
            writer.writerow([_csv_value(name, row[name]) for name in EXPORT_FIELDS])
            if out.tell() >= 8192:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    return _blocks(lines())


def _csv_value(name: str, value: Any) -> Any:
    if name in ("inputs", "output"):
        return "" if value is None else csv_safe(canonical_json(value))
    if isinstance(value, datetime):
        return _iso(value)
    return "" if value is None else csv_safe(value)


def jsonl_rows(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    return _blocks(canonical_json(row) + "\n" for row in rows)


def fhir_bundle(rows: Iterable[dict[str, Any]], *, exported_at: datetime, export_seq: int | None = None
                ) -> Iterator[bytes]:
    """A FHIR R4 Bundle (type collection) of AuditEvent resources, streamed entry by entry."""

    def pieces() -> Iterator[str]:
        yield _fhir_opening(exported_at=exported_at, export_seq=export_seq)
        first = True
        for row in rows:
            entry = {"fullUrl": f"urn:clinpredict:audit-event:{row['seq']}", "resource": fhir_audit_event(row)}
            yield ("" if first else ",") + json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
            first = False
        yield "]}"

    return _blocks(pieces())


def _fhir_opening(*, exported_at: datetime, export_seq: int | None) -> str:
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "timestamp": _iso(exported_at)}
    if export_seq is not None:
        head["identifier"] = {"system": f"{IDENTIFIER_SYSTEM}audit-export", "value": str(export_seq)}
    opening = json.dumps(head, separators=(",", ":"))
    return opening[:-1] + ',"entry":['


# DICOM audit event types (DCM) by the first part of our action names.
_EVENT_TYPES = {
    "auth": ("110114", "User Authentication"),
    "oauth2": ("110114", "User Authentication"),
    "audit": ("110106", "Export"),
    "prediction": ("110112", "Query"),
}
_DEFAULT_EVENT_TYPE = ("110100", "Application Activity")
_SUBTYPES = {
    "auth.login": ("110122", "Login"),
    "auth.logout": ("110123", "Logout"),
    "auth.login_failed": ("110122", "Login"),
}


def _crud(action: str) -> str:
    verb = action.rsplit(".", 1)[-1]
    if verb in ("create", "register", "issue", "backup", "restore"):
        return "C"
    if verb in ("change", "update", "promote", "rollback", "archive"):
        return "U"
    if verb in ("delete", "revoke"):
        return "D"
    if verb in ("export", "read", "view"):
        return "R"
    return "E"


def fhir_audit_event(row: dict[str, Any]) -> dict[str, Any]:
    """One event as a FHIR R4 AuditEvent resource (validates with fhir.resources.R4B)."""
    action = row["action"]
    code, display = _EVENT_TYPES.get(action.split(".", 1)[0], _DEFAULT_EVENT_TYPE)
    subtype = [{"system": ACTION_SYSTEM, "code": action, "display": action}]
    if action in _SUBTYPES:
        sub_code, sub_display = _SUBTYPES[action]
        subtype.insert(0, {"system": DICOM, "code": sub_code, "display": sub_display})
    failed = action.endswith("_failed") or action.endswith(".failed")
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                             "code": "humanuser" if row["actor_type"] == "user" else "dataprocessor"}]},
        "who": {"identifier": {"system": f"{IDENTIFIER_SYSTEM}actor:{row['actor_type']}",
                               "value": row["actor_id"] or row["actor_type"]},
                "display": f"{row['actor_type']}:{row['actor_id']}"},
        "requestor": True,
    }
    if row.get("source_ip"):
        agent["network"] = {"address": row["source_ip"], "type": "2"}
    entities: list[dict[str, Any]] = []
    if row["patient_ref"]:
        entities.append({
            "what": {"identifier": {"system": f"{IDENTIFIER_SYSTEM}patient", "value": row["patient_ref"]}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                     "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                     "display": "Patient"},
        })
    details = [{"type": "seq", "valueString": str(row["seq"])},
               {"type": "prev_hash", "valueString": row["prev_hash"]},
               {"type": "hash", "valueString": row["hash"]}]
    if row.get("request_id"):
        details.append({"type": "request_id", "valueString": row["request_id"]})
    if row["model_version"]:
        details.append({"type": "model_version", "valueString": row["model_version"]})
    if row["model_sha256"]:
        details.append({"type": "model_sha256", "valueString": row["model_sha256"]})
    if row["inputs"] is not None:
        details.append({"type": "inputs", "valueString": canonical_json(row["inputs"])})
    if row["output"] is not None:
        details.append({"type": "output", "valueString": canonical_json(row["output"])})
    obj: dict[str, Any] = {
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                 "display": "System Object"},
        "detail": details,
    }
    if row["object_type"] or row["object_id"]:
        obj["what"] = {"identifier": {"system": f"{IDENTIFIER_SYSTEM}{row['object_type'] or 'object'}",
                                      "value": row["object_id"] or row["object_type"]}}
        obj["name"] = row["object_type"]
    entities.append(obj)
    return {
        "resourceType": "AuditEvent",
        "id": str(row["seq"]),
        "type": {"system": DICOM, "code": code, "display": display},
        "subtype": subtype,
        "action": _crud(action),
        "recorded": _iso(row["created_at"]),
        "outcome": "4" if failed else "0",
        "agent": [agent],
        "source": {"site": "ClinPredict", "observer": {"display": "ClinPredict"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": entities,
    }


def export_stream(export_format: str, rows: Iterable[dict[str, Any]], *, exported_at: datetime,
                  export_seq: int | None = None) -> Iterator[bytes]:
    if export_format == "csv":
        return csv_rows(rows)
    if export_format == "jsonl":
        return jsonl_rows(rows)
    if export_format == "fhir":
        return fhir_bundle(rows, exported_at=exported_at, export_seq=export_seq)
    raise ValueError(f"unknown export format {export_format!r}; accepted: {', '.join(FORMATS)}")


def export_filename(export_format: str, export_seq: int) -> str:
    return f"audit-events-before-{export_seq}.{EXTENSIONS[export_format]}"


def audit_export_stream(export_format: str, *, filters: AuditEventFilters, up_to_seq: int | None,
                        exported_at: datetime, export_seq: int | None = None) -> Iterator[bytes]:
    """The export of the events that `filters` select up to `up_to_seq`, as byte blocks (the one path the command,
    the API and the pages use)."""
    if export_format not in FORMATS:
        raise ValueError(f"unknown export format {export_format!r}; accepted: {', '.join(FORMATS)}")
    if connection.vendor != "postgresql":
        return export_stream(export_format, audit_event_rows(filters=filters, up_to_seq=up_to_seq),
                             exported_at=exported_at, export_seq=export_seq)
    batches = audit_event_text_batches(filters=filters, up_to_seq=up_to_seq, select=_SQL_PIECES[export_format])
    if export_format == "csv":
        return _pg_csv(batches)
    if export_format == "jsonl":
        return _pg_jsonl(batches)
    return _pg_fhir(batches, exported_at=exported_at, export_seq=export_seq)


# --- PostgreSQL: rows written by the database around canonical inputs/output -----------------------------------

# orjson writes exactly what canonical_json writes (same escapes, keys sorted by code point, same float repr)
# except for floats with a negative exponent (Python 1e-05, orjson 1e-5), i.e. 0 < |x| < 1e-4, which jsonb text
# shows as "0.0000..."; and orjson reads integers beyond 64 bits as floats: 19 digits or more in jsonb text, not
# after a decimal point. Text with either pattern (in a number or, harmlessly, in a string) is re-encoded by the
# json module instead. Tests pin both cases. Substring searches are several times faster than a regular expression.
_SORTED = orjson.OPT_SORT_KEYS
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_NUMBER = b"0" * 19


def _orjson_exact(text: bytes) -> bool:
    # Digits become "0"; ".0" -> ".x" shortens every fraction's run by one, so a float's 17 significant digits after
    # up to two leading zeros (0.0012345678901234567) are not taken for a long integer.
    return b"0.0000" not in text and _LONG_NUMBER not in text.translate(_DIGITS_AS_ZERO).replace(b".0", b".x")


def _canonical(text: bytes) -> bytes:
    """canonical_json of the value whose jsonb text is `text` (json.loads of that text is what the ORM reads)."""
    if _orjson_exact(text):
        try:
            return orjson.dumps(orjson.loads(text), option=_SORTED)
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # e.g. nesting deeper than orjson allows
            pass
    return canonical_json(json.loads(text)).encode("utf-8")


def _canonical_all(texts: list[bytes]) -> list[bytes]:
    """`_canonical` of each text (b"null" for SQL NULL), a page at a time: one check and one parse for the page."""
    joined = b",".join(texts)
    if _orjson_exact(joined):
        try:
            dumps = orjson.dumps
            return [dumps(value, option=_SORTED) for value in orjson.loads(b"[" + joined + b"]")]
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
    return [_canonical(text) for text in texts]


class _Literal(str):
    """An SQL string literal made by `_lit`; keeps its text so `_concat` can merge neighbouring constants."""

    text: str


def _lit(text: str) -> str:
    """A constant as an SQL string literal (standard_conforming_strings is on: only quotes are doubled)."""
    literal = _Literal("'" + text.replace("'", "''") + "'")
    literal.text = text
    return literal


def _concat(*parts: str) -> str:
    """SQL concatenation; neighbouring constants become one literal (each `||` copies the text built so far)."""
    merged: list[str] = []
    for part in parts:
        if isinstance(part, _Literal) and merged and isinstance(merged[-1], _Literal):
            merged[-1] = _lit(merged[-1].text + part.text)
        else:
            merged.append(part)
    return merged[0] if len(merged) == 1 else " || ".join(merged)


def _json_str(column: str) -> str:
    """A text column as a JSON string: PostgreSQL's to_json escapes exactly what json.dumps(ensure_ascii=False)
    escapes (backslash, quote, the short escapes for BS FF LF CR TAB, other controls as lowercase \\u00xx)."""
    return f"to_json({column})::text"


_ISO = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""  # = _iso(created_at)
_IP = "abbrev(source_ip)"  # the inet output text (no /32 for a single address), what the ORM reads
# SQL NULL and jsonb null both read as None, and every format writes them alike.
_JSON_TEXT = {name: f"coalesce({name}::text, 'null')" for name in ("inputs", "output")}


def _csv_cell(column: str) -> str:
    """`csv_safe` (a leading single quote before a formula start) and csv.writer's minimal quoting: quote a value
    holding a comma, a quote, CR or LF; double its quotes. (Four strpos calls cost PostgreSQL less than one regular
    expression; the formula check's regular expression only matters for cells that start like a formula.)"""
    plain = " + ".join(f"strpos({column}, {char})" for char in ("'\"'", "','", "E'\\r'", "E'\\n'"))
    prefix = csv_safe_prefix_sql(column)
    return (f"""(CASE WHEN {plain} = 0 THEN {prefix} || {column} """
            f"""ELSE '"' || {prefix} || replace({column}, '"', '""') || '"' END)""")


def _csv_pieces() -> list[str]:
    """Each CSV line as (before inputs, after output); inputs and output themselves are added in Python."""
    cells = {"seq": "seq::text", "created_at": _ISO, "source_ip": f"coalesce({_IP}, '')"}
    before: list[str] = []
    after: list[str] = []
    target = before
    for name in EXPORT_FIELDS:
        if name == "inputs":
            target = after
            continue
        if name == "output":
            continue
        target.append(cells.get(name) or _csv_cell(name))
    return [_concat(*(f"{cell} || ','" for cell in before)), _JSON_TEXT["inputs"], _JSON_TEXT["output"],
            _concat(_lit(","), " || ',' || ".join(after), _lit("\r\n"))]


def _jsonl_pieces() -> list[str]:
    """Each JSONL line (canonical_json of the row: keys sorted) as the text before inputs, between inputs and
    output, and after output."""
    values = {"seq": "seq::text", "created_at": _concat(_lit('"'), _ISO, _lit('"')),
              "source_ip": f"coalesce(to_json({_IP})::text, 'null')"}
    pieces: list[list[str]] = [[]]
    opening = "{"
    for name in sorted(EXPORT_FIELDS):
        pieces[-1].append(_lit(f'{opening}"{name}":'))
        opening = ","
        if name in ("inputs", "output"):
            pieces += [[_JSON_TEXT[name]], []]
            continue
        pieces[-1].append(values.get(name) or _json_str(name))
    pieces[-1].append(_lit("}\n"))
    return [_concat(*parts) for parts in pieces]



def _fhir_fixed() -> dict[str, str]:
    """The fixed JSON between an entry's variable parts, taken from `fhir_audit_event` itself so both paths share
    it. Written by Python rather than sent by PostgreSQL with every row."""
    sample = fhir_audit_event({
        "seq": 1, "created_at": datetime(2000, 1, 1, tzinfo=UTC), "actor_type": "user", "actor_id": "a",
        "action": "x", "object_type": "", "object_id": "", "patient_ref": "p", "model_version": "",
        "model_sha256": "", "inputs": None, "output": None, "request_id": "", "source_ip": None, "prev_hash": "",
        "hash": ""})
    patient, obj = sample["entity"]
    return {
        "role_system": _entry_json(sample["agent"][0]["type"]["coding"][0]["system"]),
        "after_agent": f',"source":{_entry_json(sample["source"])},"entity":[',
        "patient_open": f'{{"what":{{"identifier":{{"system":{_entry_json(patient["what"]["identifier"]["system"])},'
                        '"value":',
        "patient_close": f'}}}},"type":{_entry_json(patient["type"])},"role":{_entry_json(patient["role"])}}},',
        "object_open": f'{{"type":{_entry_json(obj["type"])},"detail":[{{"type":"seq","valueString":"',
    }


def _fhir_pieces() -> list[str]:
    """Each Bundle entry's variable parts: the text before `type`; the action (type, subtype, action and outcome
    are written by `_fhir_action`); `recorded`; the agent; the patient reference as JSON (NULL for none); the
    details from seq to the one before inputs; inputs; output; the text after the details. `_pg_fhir` puts the
    fixed parts (`_fhir_fixed`) between them. Mirrors `fhir_audit_event` field by field."""

    def case(condition: str, then: str, otherwise: str = "''") -> str:
        return f"(CASE WHEN {condition} THEN {then} ELSE {otherwise} END)"

    def detail(name: str, value: str) -> str:
        return _concat(_lit(f',{{"type":"{name}","valueString":'), value, _lit("}"))

    def optional_detail(column: str) -> str:
        return case(f"{column} <> ''", detail(column, _json_str(column)))

    head = _concat(_lit('{"fullUrl":"urn:clinpredict:audit-event:'), "seq::text",
                   _lit('","resource":{"resourceType":"AuditEvent","id":"'), "seq::text", _lit('",'))
    recorded = _concat(_lit('"'), _ISO, _lit('"'))
    agent = _concat(
        _lit('"agent":[{"type":{"coding":[{"system":'), _lit(_FHIR_FIXED["role_system"]), _lit(',"code":'),
        case("actor_type = 'user'", _lit('"humanuser"'), _lit('"dataprocessor"')),
        _lit('}]},"who":{"identifier":{"system":'),
        _json_str(_concat(_lit(f"{IDENTIFIER_SYSTEM}actor:"), "actor_type")),
        _lit(',"value":'), _json_str(case("actor_id <> ''", "actor_id", "actor_type")),
        _lit('},"display":'), _json_str(_concat("actor_type", "':'", "actor_id")), _lit('},"requestor":true'),
        case("source_ip IS NOT NULL",
             _concat(_lit(',"network":{"address":'), _json_str(_IP), _lit(',"type":"2"}'))),
        _lit("}]"))
    patient = case("patient_ref <> ''", _json_str("patient_ref"), "NULL")
    details = _concat(
        "seq::text", _lit('"}'), detail("prev_hash", _json_str("prev_hash")), detail("hash", _json_str("hash")),
        optional_detail("request_id"), optional_detail("model_version"), optional_detail("model_sha256"))
    what = case("object_type <> '' OR object_id <> ''", _concat(
        _lit(',"what":{"identifier":{"system":'),
        _json_str(_concat(_lit(IDENTIFIER_SYSTEM), case("object_type <> ''", "object_type", "'object'"))),
        _lit(',"value":'), _json_str(case("object_id <> ''", "object_id", "object_type")),
        _lit('}},"name":'), _json_str("object_type")))
    after_details = _concat(_lit("]"), what, _lit("}]}}"))
    return [head, "action", recorded, agent, patient, details, _JSON_TEXT["inputs"], _JSON_TEXT["output"],
            after_details]


def _entry_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_FHIR_FIXED = _fhir_fixed()
_SQL_PIECES = {"csv": _csv_pieces(), "jsonl": _jsonl_pieces(), "fhir": _fhir_pieces()}


Pages = Iterator[list[tuple[Any, ...]]]  # (seq, *the SQL pieces of the format)


def _csv_json_cell(value: bytes) -> bytes:
    if value == b"null":
        return b""
    value = csv_safe_bytes(value)  # canonical JSON starts like a formula only as a negative number, which stays
    if b'"' in value or b"," in value:  # canonical JSON has no raw CR or LF
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


def _pg_csv(pages: Pages) -> Iterator[bytes]:
    header = io.StringIO()
    csv.writer(header, lineterminator="\r\n").writerow(EXPORT_FIELDS)
    yield header.getvalue().encode("utf-8")
    cell = _csv_json_cell
    for page in pages:
        inputs = _canonical_all([row[2] for row in page])
        outputs = _canonical_all([row[3] for row in page])
        parts: list[bytes] = []
        add = parts.extend
        for row, row_inputs, row_output in zip(page, inputs, outputs, strict=True):
            add((row[1], cell(row_inputs), b",", cell(row_output), row[4]))
        yield b"".join(parts)


def _pg_jsonl(pages: Pages) -> Iterator[bytes]:
    for page in pages:
        inputs = _canonical_all([row[2] for row in page])
        outputs = _canonical_all([row[4] for row in page])
        parts: list[bytes] = []
        add = parts.extend
        for row, row_inputs, row_output in zip(page, inputs, outputs, strict=True):
            add((row[1], row_inputs, row[3], row_output, row[5]))
        yield b"".join(parts)


_FHIR_ACTION_CACHE_SIZE = 4096


def _fhir_action(action: str) -> tuple[bytes, bytes]:
    """The JSON around `recorded` that depends only on the action: type, subtype, action; outcome."""
    kind = fhir_audit_event({
        "seq": 0, "created_at": datetime(2000, 1, 1, tzinfo=UTC), "actor_type": "", "actor_id": "",
        "action": action, "object_type": "", "object_id": "", "patient_ref": "", "model_version": "",
        "model_sha256": "", "inputs": None, "output": None, "request_id": "", "source_ip": None, "prev_hash": "",
        "hash": ""})
    before = ",".join(f'"{name}":{_entry_json(kind[name])}' for name in ("type", "subtype", "action"))
    return f'{before},"recorded":'.encode(), f',"outcome":{_entry_json(kind["outcome"])},'.encode()


def _fhir_details(name: str, values: list[bytes]) -> list[bytes]:
    """The inputs or output detail of each entry of a page (nothing for null): canonical JSON as a JSON string,
    i.e. with backslashes and quotes escaped; canonical JSON holds no raw control characters, so no newline either,
    which lets one pass escape the whole page."""
    escaped = b"\n".join(values).replace(b"\\", b"\\\\").replace(b'"', b'\\"').split(b"\n")
    opening = f',{{"type":"{name}","valueString":"'.encode()
    return [b"" if value == b"null" else b"".join((opening, text, b'"}'))
            for value, text in zip(values, escaped, strict=True)]


def _pg_fhir(pages: Pages, *, exported_at: datetime, export_seq: int | None) -> Iterator[bytes]:
    yield _fhir_opening(exported_at=exported_at, export_seq=export_seq).encode("utf-8")
    actions: dict[bytes, tuple[bytes, bytes]] = {}
    separator = b""
    after_agent, patient_open, patient_close, object_open = (
        _FHIR_FIXED[name].encode("utf-8") for name in ("after_agent", "patient_open", "patient_close", "object_open"))
    for page in pages:
        inputs = _fhir_details("inputs", _canonical_all([row[7] for row in page]))
        outputs = _fhir_details("output", _canonical_all([row[8] for row in page]))
        parts: list[bytes] = []
        add = parts.extend
        for row, inputs_detail, output_detail in zip(page, inputs, outputs, strict=True):
            action = row[2]
            around = actions.get(action)
            if around is None:
                if len(actions) >= _FHIR_ACTION_CACHE_SIZE:
                    actions.clear()
                around = actions[action] = _fhir_action(action.decode("utf-8"))
            add((separator, row[1], around[0], row[3], around[1], row[4], after_agent))
            if row[5] is not None:
                add((patient_open, row[5], patient_close))
            add((object_open, row[6], inputs_detail, output_detail, row[9]))
            separator = b","
        yield b"".join(parts)
    yield b"]}"
