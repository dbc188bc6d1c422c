"""Export formats for audit events: CSV, JSONL and a FHIR R4 Bundle of AuditEvent resources.

Each writer turns an iterator of plain dict rows (`selectors.audit_event_rows`) into an iterator of byte blocks of
about 64 KiB, so a response or a file can stream any number of events in constant memory. Values are written
verbatim (times in UTC with microseconds, inputs/output as canonical JSON), so the chain can be re-checked from a
CSV or JSONL export of an unfiltered range.
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from .hashing import canonical_json
from .selectors import EXPORT_FIELDS

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
        return "" if value is None else canonical_json(value)
    if isinstance(value, datetime):
        return _iso(value)
    return "" if value is None else value


def jsonl_rows(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    return _blocks(canonical_json(row) + "\n" for row in rows)


def fhir_bundle(rows: Iterable[dict[str, Any]], *, exported_at: datetime, export_seq: int | None = None
                ) -> Iterator[bytes]:
    """A FHIR R4 Bundle (type collection) of AuditEvent resources, streamed entry by entry."""

    def pieces() -> Iterator[str]:
        head: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "timestamp": _iso(exported_at)}
        if export_seq is not None:
            head["identifier"] = {"system": f"{IDENTIFIER_SYSTEM}audit-export", "value": str(export_seq)}
        opening = json.dumps(head, separators=(",", ":"))
        yield opening[:-1] + ',"entry":['
        first = True
        for row in rows:
            entry = {"fullUrl": f"urn:clinpredict:audit-event:{row['seq']}", "resource": fhir_audit_event(row)}
            yield ("" if first else ",") + json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
            first = False
        yield "]}"

    return _blocks(pieces())


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
    if verb in ("create", "register", "issue", "backup"):
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
