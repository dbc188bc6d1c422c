"""Writes of patient data: FHIR R4 sync, CSV import, and the training dataset export. Each change is audited in
the transaction that makes it (`apps.audit.services.audit_event_record`); audit rows carry counts, never values.

FHIR sync is resumable by construction: every page is upserted in its own transaction keyed by (source, source id),
the run is marked succeeded only when every search was read to its end and the counts match the server's totals,
and only then does its watermark (the server time at its start) become the next sync's `_lastUpdated` bound. A run
that stops half-way is recorded as failed, and the next run asks again from the last successful watermark.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.actors import SYSTEM, Actor
from apps.audit.services import audit_event_record
from apps.core.csv_safe import csv_safe_row
from apps.core.exceptions import ApplicationError
from ml.schema import FeatureSpec
from ml.validation import DatasetReport, file_sha256, validate_dataset

from .fhir_client import FhirClient, FhirError, SearchPage
from .fhir_mapping import (
    ConditionRecord,
    MappedObservation,
    PatientRecord,
    Rejection,
    map_condition,
    map_observation,
    map_patient,
)
from .models import CareTeamMember, IngestionRun, Observation, Outcome, Patient
from .selectors import (
    DEFAULT_LOOKBACK,
    ingestion_last_success,
    outcome_present_patient_ids,
    patients_features_assemble,
    resolve_spec,
)
from .smart_backend import SigningKey, SigningKeyError, signing_key_load
from .specs import IngestionSpec, Unmappable, to_canonical

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 10
DEFAULT_SYNC_USE_CASE = "t2d_fhir"
_SYNC_LOCK_NAMESPACE = 0x50617453  # "PatS": advisory locks of FHIR syncs, one per (source, use case)


def _add_rejections(unmapped: dict[str, Any], rejections: list[Rejection]) -> None:
    for rejection in rejections:
        entry = unmapped.setdefault(rejection.reason, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < MAX_EXAMPLES:
            entry["examples"].append(f"{rejection.ref}: {rejection.message}")


# ====================================================================================================================
# FHIR sync
# ====================================================================================================================


def patient_pseudonym(*, source: str, external_id: str) -> str:
    """A stable pseudonymous identifier for a FHIR patient: it reveals neither the server nor the FHIR id."""
    return "fhir-" + hashlib.sha256(f"{source}|{external_id}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class FhirSettings:
    base_url: str
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    private_key: str = field(default="", repr=False)  # PEM; set: private_key_jwt instead of the client secret
    key_id: str = ""
    signing_alg: str = ""
    scope: str = ""
    page_size: int = 200
    timeout: float = 30.0
    retries: int = 2
    backoff: float = 0.5
    max_wait: float = 30.0

    @classmethod
    def from_django(cls) -> FhirSettings:
        return cls(
            base_url=str(getattr(settings, "FHIR_BASE_URL", "") or "").rstrip("/"),
            client_id=str(getattr(settings, "FHIR_CLIENT_ID", "") or ""),
            client_secret=str(getattr(settings, "FHIR_CLIENT_SECRET", "") or ""),
            private_key=str(getattr(settings, "FHIR_PRIVATE_KEY", "") or ""),
            key_id=str(getattr(settings, "FHIR_KEY_ID", "") or ""),
            signing_alg=str(getattr(settings, "FHIR_SIGNING_ALG", "") or ""),
            scope=str(getattr(settings, "FHIR_SCOPE", "") or ""),
            page_size=int(getattr(settings, "FHIR_PAGE_SIZE", 200)),
            timeout=float(getattr(settings, "FHIR_TIMEOUT_SECONDS", 30.0)),
            retries=int(getattr(settings, "FHIR_MAX_RETRIES", 2)),
            backoff=float(getattr(settings, "FHIR_RETRY_BACKOFF_SECONDS", 0.5)),
            max_wait=float(getattr(settings, "FHIR_RETRY_MAX_WAIT_SECONDS", 30.0)),
        )

    def signing_key(self) -> SigningKey | None:
        """The private_key_jwt signing key, None without FHIR_PRIVATE_KEY; ApplicationError (naming the setting)
        when it is set but cannot sign."""
        if not self.private_key.strip():
            return None
        if not self.client_id:
            raise ApplicationError("FHIR_PRIVATE_KEY is set but FHIR_CLIENT_ID is not: the client assertion names "
                                   "the client registered at the FHIR server", code="fhir_not_configured",
                                   fields={"FHIR_CLIENT_ID": ["set it to the client id the FHIR server registered"]})
        try:
            return signing_key_load(self.private_key, alg=self.signing_alg, kid=self.key_id)
        except SigningKeyError as exc:
            raise ApplicationError(
                f"FHIR_PRIVATE_KEY cannot sign client assertions: {exc}", code="fhir_key_invalid",
                fields={"FHIR_PRIVATE_KEY_FILE": [f"{exc}; accepted: an unencrypted PEM RSA (>= 2048 bits, RS384) "
                                                  "or EC P-384 (ES384) private key"]},
            ) from None

    def client(self) -> FhirClient:
        return FhirClient(self.base_url, client_id=self.client_id, client_secret=self.client_secret,
                          signing_key=self.signing_key(), scope=self.scope, timeout=self.timeout,
                          retries=self.retries, backoff=self.backoff, max_wait=self.max_wait)


ProgressCallback = Callable[[SearchPage, IngestionRun], None]


@contextmanager
def _sync_lock(source: str, use_case: str) -> Iterator[None]:
    """One sync per (source, use case) at a time, across processes (PostgreSQL session advisory lock)."""
    if connection.vendor != "postgresql":
        yield
        return
    digest = hashlib.sha256(f"{source}|{use_case}".encode()).digest()
    key = int.from_bytes(digest[:4], "big")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_SYNC_LOCK_NAMESPACE, key - (1 << 31)])
        acquired = cursor.fetchone()[0]
    if not acquired:
        raise ApplicationError(f"a FHIR sync of {use_case} from {source} is already running",
                               code="sync_running", status_code=409)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_SYNC_LOCK_NAMESPACE, key - (1 << 31)])


def _fhir_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@transaction.atomic
def _run_start(*, kind: str, source: str, use_case: str, actor: Actor, since: datetime | None = None,
               file_name: str = "", file_sha256: str = "") -> IngestionRun:
    run = IngestionRun.objects.create(kind=kind, source=source, use_case=use_case, started_at=timezone.now(),
                                      since=since, actor=actor.label, file_name=file_name, file_sha256=file_sha256)
    audit_event_record(actor=actor, action=f"patients.{kind}.start", object_type="ingestion_run",
                       object_id=str(run.pk), inputs={"source": source, "use_case": use_case,
                                                      "since": since.isoformat() if since else None,
                                                      "file_sha256": file_sha256 or None})
    return run


@transaction.atomic
def _run_finish(*, run: IngestionRun, actor: Actor, status: str, error: str = "",
                watermark: datetime | None = None) -> IngestionRun:
    run.status = status
    run.error = error
    run.finished_at = timezone.now()
    run.watermark = watermark if status == IngestionRun.Status.SUCCEEDED else None
    run.save(update_fields=["status", "error", "finished_at", "watermark", "counts", "unmapped", "report"])
    audit_event_record(actor=actor, action=f"patients.{run.kind}.{'complete' if run.complete else 'fail'}",
                       object_type="ingestion_run", object_id=str(run.pk),
                       output={"status": status, "counts": run.counts, "error": error or None,
                               "unmapped": {k: v["count"] for k, v in run.unmapped.items()},
                               "watermark": run.watermark.isoformat() if run.watermark else None})
    return run


def _upsert_patients(source: str, records: list[PatientRecord], now: datetime) -> dict[str, int]:
    existing = {p.external_id: p for p in Patient.objects.filter(source=source,
                                                                 external_id__in=[r.external_id for r in records])}
    created: list[Patient] = []
    updated: list[Patient] = []
    for record in records:
        patient = existing.get(record.external_id)
        if patient is None:
            created.append(Patient(identifier=patient_pseudonym(source=source, external_id=record.external_id),
                                   sex=record.sex, birth_date=record.birth_date, source=source,
                                   external_id=record.external_id, source_version=record.version))
        elif (patient.sex, patient.birth_date, patient.source_version) != (record.sex, record.birth_date,
                                                                           record.version):
            patient.sex, patient.birth_date, patient.source_version = record.sex, record.birth_date, record.version
            patient.updated_at = now
            updated.append(patient)
    Patient.objects.bulk_create(created)
    Patient.objects.bulk_update(updated, ["sex", "birth_date", "source_version", "updated_at"])
    return {"created": len(created), "updated": len(updated), "unchanged": len(records) - len(created) - len(updated)}


def _patient_ids(source: str, external_ids: set[str]) -> dict[str, int]:
    return dict(Patient.objects.filter(source=source, external_id__in=external_ids)
                .values_list("external_id", "pk"))


def _upsert_observations(source: str, mapped: list[MappedObservation], now: datetime
                         ) -> tuple[dict[str, int], list[Rejection]]:
    rejections = [r for m in mapped for r in m.rejections]
    patients = _patient_ids(source, {v.patient_external_id for m in mapped for v in m.values})
    valid = []
    for m in mapped:
        for v in m.values:
            if v.patient_external_id in patients:
                valid.append(v)
            else:
                rejections.append(Rejection("unknown_patient", v.source_id,
                                            "subject is a Patient that was not synced from this source"))
    resources = [m.source_resource for m in mapped]
    existing = {o.source_id: o for o in Observation.objects.filter(source=source, source_resource__in=resources)}
    created: list[Observation] = []
    updated: list[Observation] = []
    fields = ("patient_id", "code_system", "code", "value", "unit", "value_canonical", "unit_canonical",
              "effective_at", "source_version")
    for v in valid:
        new = {"patient_id": patients[v.patient_external_id], "code_system": v.code_system, "code": v.code,
               "value": v.value, "unit": v.unit, "value_canonical": v.value_canonical,
               "unit_canonical": v.unit_canonical, "effective_at": v.effective_at, "source_version": v.version}
        obs = existing.get(v.source_id)
        if obs is None:
            created.append(Observation(source=source, source_id=v.source_id, source_resource=v.source_resource,
                                       **new))
        elif any(getattr(obs, k) != new[k] for k in fields):
            for k in fields:
                setattr(obs, k, new[k])
            obs.updated_at = now
            updated.append(obs)
    # Values stored earlier from these resources that are no longer valid (withdrawn, now implausible, ...).
    keep = {v.source_id for v in valid}
    stale = [obs.pk for source_id, obs in existing.items() if source_id not in keep]
    Observation.objects.bulk_create(created)
    Observation.objects.bulk_update(updated, [*fields, "updated_at"])
    removed = Observation.objects.filter(pk__in=stale).delete()[0] if stale else 0
    counts = {"values_created": len(created), "values_updated": len(updated),
              "values_unchanged": len(valid) - len(created) - len(updated), "values_removed": removed}
    return counts, rejections


def _upsert_outcomes(source: str, use_case: str, results: list[tuple[str, ConditionRecord | Rejection | None]],
                     now: datetime) -> tuple[dict[str, int], list[Rejection]]:
    records = [r for _, r in results if isinstance(r, ConditionRecord)]
    rejections = [r for _, r in results if isinstance(r, Rejection)]
    patients = _patient_ids(source, {r.patient_external_id for r in records})
    refs = [ref for ref, _ in results]
    existing = {o.source_id: o for o in Outcome.objects.filter(source=source, source_id__in=refs)}
    created: list[Outcome] = []
    updated: list[Outcome] = []
    fields = ("patient_id", "use_case", "present", "onset_at", "code_system", "code", "source_version")
    valid_ids = set()
    for r in records:
        if r.patient_external_id not in patients:
            rejections.append(Rejection("unknown_patient", r.source_id,
                                        "subject is a Patient that was not synced from this source"))
            continue
        valid_ids.add(r.source_id)
        new = {"patient_id": patients[r.patient_external_id], "use_case": use_case, "present": r.present,
               "onset_at": r.onset_at, "code_system": r.code_system, "code": r.code, "source_version": r.version}
        outcome = existing.get(r.source_id)
        if outcome is None:
            created.append(Outcome(source=source, source_id=r.source_id, **new))
        elif any(getattr(outcome, k) != new[k] for k in fields):
            for k in fields:
                setattr(outcome, k, new[k])
            outcome.updated_at = now
            updated.append(outcome)
    stale = [o.pk for source_id, o in existing.items() if source_id not in valid_ids]
    Outcome.objects.bulk_create(created)
    Outcome.objects.bulk_update(updated, [*fields, "updated_at"])
    removed = Outcome.objects.filter(pk__in=stale).delete()[0] if stale else 0
    not_outcome = sum(1 for _, r in results if r is None)
    counts = {"created": len(created), "updated": len(updated),
              "unchanged": len(valid_ids) - len(created) - len(updated), "removed": removed,
              "not_outcome_code": not_outcome}
    return counts, rejections


def _merge(target: dict[str, Any], add: dict[str, int]) -> None:
    for key, value in add.items():
        target[key] = target.get(key, 0) + value


@transaction.atomic
def _sync_page(*, run: IngestionRun, page: SearchPage, ispec: IngestionSpec, actor: Actor) -> dict[str, int]:
    now = timezone.now()
    source = run.source
    rejections: list[Rejection] = []
    if page.resource_type == "Patient":
        records = []
        for resource in page.resources:
            result = map_patient(resource)
            if isinstance(result, Rejection):
                rejections.append(result)
            else:
                records.append(result)
        page_counts = _upsert_patients(source, records, now)
    elif page.resource_type == "Observation":
        page_counts, rejections = _upsert_observations(
            source, [map_observation(resource, ispec) for resource in page.resources], now)
    else:
        results = [(f"Condition/{r.get('id')}", map_condition(r, ispec)) for r in page.resources]
        page_counts, rejections = _upsert_outcomes(source, ispec.use_case, results, now)
    page_counts = {"fetched": len(page.resources), **page_counts, "unmapped": len(rejections)}
    type_counts = run.counts.setdefault(page.resource_type, {})
    if page.number == 1:
        type_counts["server_total"] = page.total
    _merge(type_counts, page_counts)
    type_counts["pages"] = type_counts.get("pages", 0) + 1
    _add_rejections(run.unmapped, rejections)
    run.save(update_fields=["counts", "unmapped"])
    audit_event_record(actor=actor, action="patients.fhir_sync.page", object_type="ingestion_run",
                       object_id=str(run.pk), inputs={"resource_type": page.resource_type, "page": page.number},
                       output=page_counts)
    return page_counts


def _searches(ispec: IngestionSpec, since: datetime | None, page_size: int) -> list[tuple[str, dict[str, str]]]:
    base: dict[str, str] = {"_count": str(page_size)}
    if since is not None:
        base["_lastUpdated"] = f"ge{_fhir_instant(since)}"
    observation = {**base, "code": ",".join(f"http://loinc.org|{c}" for c in ispec.observed_loinc_codes())}
    condition = dict(base)
    if ispec.outcome_codes and all(oc.code for oc in ispec.outcome_codes):
        condition["code"] = ",".join(f"{oc.system}|{oc.code}" for oc in ispec.outcome_codes)
    # Code prefixes (ICD-10-CM E11.x) cannot be searched portably (`:below` is optional): every Condition is read
    # and the ones that are not outcome codes are counted as such.
    return [("Patient", dict(base)), ("Observation", observation), ("Condition", condition)]


def fhir_sync_run(
    *,
    spec: IngestionSpec | str | Path = DEFAULT_SYNC_USE_CASE,
    actor: Actor = SYSTEM,
    full: bool = False,
    fhir: FhirSettings | None = None,
    progress: ProgressCallback | None = None,
) -> IngestionRun:
    """Sync Patients, the spec's Observations and outcome Conditions from the FHIR server into the database.

    Incremental (`_lastUpdated` since the last successful run's watermark) unless `full`. Returns the run; its
    status says whether it completed. A server that is down, refuses the credentials or fails mid-sync gives a
    failed run (the pages stored so far stay: they are valid and the next run upserts over them)."""
    ispec = resolve_spec(spec)
    fhir = fhir or FhirSettings.from_django()
    if not fhir.base_url:
        raise ApplicationError("FHIR_BASE_URL is not set: there is no FHIR server to sync from",
                               code="fhir_not_configured", fields={"FHIR_BASE_URL": ["set it to the server's base"]})
    source = fhir.base_url
    kind = IngestionRun.Kind.FHIR_SYNC
    fhir.signing_key()  # a key that cannot sign is a configuration error: no run is started
    with _sync_lock(source, ispec.use_case):
        last = None if full else ingestion_last_success(kind=kind, source=source, use_case=ispec.use_case)
        since = last.watermark if last else None
        run = _run_start(kind=kind, source=source, use_case=ispec.use_case, actor=actor, since=since)
        watermark: datetime | None = None
        try:
            with fhir.client() as client:
                for resource_type, params in _searches(ispec, since, fhir.page_size):
                    for page in client.search(resource_type, params):
                        if watermark is None:
                            watermark = page.server_time
                        _sync_page(run=run, page=page, ispec=ispec, actor=actor)
                        if progress is not None:
                            progress(page, run)
        except FhirError as exc:
            logger.warning("FHIR sync failed", extra={"run_id": run.pk, "source": source, "error": exc.message})
            return _run_finish(run=run, actor=actor, status=IngestionRun.Status.FAILED, error=exc.message)
        except BaseException as exc:
            _run_finish(run=run, actor=actor, status=IngestionRun.Status.FAILED,
                        error=f"unexpected error: {type(exc).__name__}: {exc}")
            raise
        incomplete = [
            f"{rtype}: the server reported {c['server_total']}, {c['fetched']} were read"
            for rtype, c in run.counts.items()
            if c.get("server_total") is not None and c["server_total"] != c.get("fetched", 0)
        ]
        if incomplete:
            return _run_finish(run=run, actor=actor, status=IngestionRun.Status.FAILED,
                               error="incomplete: " + "; ".join(incomplete) + " (resources changed during the "
                               "sync?); the next sync asks again")
        if watermark is None:
            watermark = run.started_at
        return _run_finish(run=run, actor=actor, status=IngestionRun.Status.SUCCEEDED, watermark=watermark)


def sync_report(run: IngestionRun) -> str:
    """A plain-text report of a run for commands and task logs (counts and reasons only)."""
    lines = [f"{run.get_kind_display()} #{run.pk} of {run.use_case} from {run.source}: {run.status.upper()}"]
    if run.since:
        lines.append(f"  incremental: resources with _lastUpdated >= {_fhir_instant(run.since)}")
    elif run.kind == IngestionRun.Kind.FHIR_SYNC:
        lines.append("  full: every resource")
    for rtype, counts in run.counts.items():
        parts = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "pages")
        lines.append(f"  {rtype:<12} {parts}")
    for reason, entry in sorted(run.unmapped.items()):
        lines.append(f"  not stored ({reason}): {entry['count']}")
        for example in entry["examples"][:3]:
            lines.append(f"      e.g. {example}")
    if run.error:
        lines.append(f"  error: {run.error}")
    if run.watermark:
        lines.append(f"  watermark for the next sync: {_fhir_instant(run.watermark)}")
    if run.status == IngestionRun.Status.FAILED:
        lines.append("  not complete: the next sync starts again from the last successful watermark")
    return "\n".join(lines)


# ====================================================================================================================
# CSV import
# ====================================================================================================================

# validate_dataset judges a file as training data; for an import these only mean "no usable labels": imported
# anyway (patients and values), and outcomes are stored where given.
IMPORT_TOLERATED_ERRORS = frozenset({"too_few_events", "label_single_class", "label_no_positive", "missing_outcome"})
_BLANK = frozenset({"", "na", "nan", "null", "none", "n/a"})
# (row number, patient id, sex from a gender-derived column, [(feature, value as given, canonical, unit)], outcome)
_ParsedRow = tuple[int, str, str | None, list[tuple[FeatureSpec, float, float, str | None]], bool | None]


@dataclass
class CsvImportResult:
    run: IngestionRun
    report: DatasetReport
    counts: dict[str, int] = field(default_factory=dict)
    not_stored: dict[str, list[int]] = field(default_factory=dict)  # reason -> row numbers

    @property
    def ok(self) -> bool:
        return self.run.complete

    def text(self) -> str:
        lines = [self.report.text()]
        if not self.ok:
            lines.append(f"NOT IMPORTED (nothing stored): {self.run.error}")
            return "\n".join(lines)
        c = self.counts
        lines.append(
            f"IMPORTED run #{self.run.pk}: {c['rows']} rows; patients {c['patients_created']} new, "
            f"{c['patients_existing']} already known; observation values {c['values_created']} new, "
            f"{c['values_unchanged']} already present; outcomes {c['outcomes_created']} new, "
            f"{c['outcomes_unchanged']} already present"
        )
        for reason, rows in sorted(self.not_stored.items()):
            listed = ", ".join(str(r) for r in rows[:20]) + (f" and {len(rows) - 20} more" if len(rows) > 20 else "")
            lines.append(f"  values not stored ({reason}): {len(rows)} (rows {listed})")
        return "\n".join(lines)


def _parse_cell(feature: FeatureSpec, text: str) -> float | None:
    """A CSV cell as a number (None = missing), as `ml.validation.validate_dataset` reads it."""
    value = text.strip()
    if value.lower() in _BLANK:
        return None
    if feature.type == "categorical":
        if value in feature.categories:
            return float(feature.categories.index(value))
    if feature.type == "binary":
        code = feature.binary_code(value)  # declared labels (e.g. No/Yes), 0/1, true/false, yes/no
        if code is not None:
            return code
    try:
        number = float(value)
    except ValueError as exc:
        raise Unmappable("not_a_number", f"{feature.name}: not a number") from exc
    return None if number in feature.missing_values else number


def _cell_unit(feature: FeatureSpec, row: dict[str, str], number: float) -> str | None:
    unit_text = (row.get(f"{feature.column}_unit") or "").strip()
    if unit_text and unit_text.lower() not in _BLANK:
        return unit_text
    for rule in feature.unit_rules:
        if number < rule.below:
            return rule.unit
    return None


def _csv_value(feature: FeatureSpec, row: dict[str, str]) -> tuple[float, float, str | None] | None:
    """(value as given, canonical value, unit as given) or None when missing; Unmappable when not valid."""
    number = _parse_cell(feature, row.get(feature.column) or "")
    if number is None:
        return None
    unit = _cell_unit(feature, row, number)
    canonical = to_canonical(feature, number, unit, unit_required=False)
    if feature.type == "binary" and canonical not in (0.0, 1.0):
        raise Unmappable("out_of_range", f"{feature.name}: must be 0 or 1")
    return number, canonical, unit


def patients_import_csv(
    *,
    spec: IngestionSpec | str | Path,
    csv_path: Path,
    actor: Actor = SYSTEM,
    source_name: str = "csv",
    effective_at: datetime | None = None,
    file_name: str = "",
) -> CsvImportResult:
    """Import a CSV extract (one row per patient and time, the spec's columns) all-or-nothing.

    The file is first validated with `ml.validation.validate_dataset`; any error (other than "the labels are not
    usable for training") stores nothing and records a failed run with the report. Otherwise patients, observation
    values (canonical units) and outcomes are stored in one transaction. Ids are derived from the file's sha256 and
    row numbers, so importing the same file again adds nothing."""
    ispec = resolve_spec(spec)
    spec_ = ispec.spec
    csv_path = Path(csv_path)
    source = f"csv:{source_name}"
    effective_at = effective_at or timezone.now()
    report, _ = validate_dataset(spec_, csv_path, min_events=0)
    sha = report.dataset_sha256 or ""
    name = file_name or csv_path.name
    blocking = [e for e in report.errors if e.code not in IMPORT_TOLERATED_ERRORS]
    kind = IngestionRun.Kind.CSV_IMPORT
    if blocking:
        run = _run_start(kind=kind, source=source, use_case=spec_.use_case, actor=actor, file_name=name,
                         file_sha256=sha)
        run.report = report.to_dict()
        first = blocking[0].text()
        more = f" (+{len(blocking) - 1} more error(s))" if len(blocking) > 1 else ""
        _run_finish(run=run, actor=actor, status=IngestionRun.Status.FAILED, error=f"{first}{more}")
        return CsvImportResult(run=run, report=report)

    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]

    sex_feature = next((ispec.derived[f.name] for f in spec_.features
                        if f.name in ispec.derived and ispec.derived[f.name].source == "gender"), None)
    sex_by_value = {value: sex for sex, value in (sex_feature.mapping if sex_feature else {}).items()}
    not_stored: dict[str, list[int]] = defaultdict(list)
    parsed: list[_ParsedRow] = []
    for number, row in enumerate(rows, start=1):
        pid = (row.get(spec_.patient_id) or "").strip()
        values = []
        sex: str | None = None
        for feature in spec_.features:
            try:
                got = _csv_value(feature, row)
            except Unmappable as exc:
                not_stored[exc.reason].append(number)
                continue
            if got is None:
                continue
            if sex_feature is not None and feature.name == sex_feature.name:
                sex = sex_by_value.get(got[1])
                continue
            values.append((feature, *got))
        outcome_text = (row.get(spec_.outcome.column) or "").strip()
        outcome: bool | None = None
        if outcome_text and outcome_text.lower() not in _BLANK:
            outcome = _is_positive(outcome_text, spec_.outcome.positive)
        parsed.append((number, pid, sex, values, outcome))

    try:
        run, counts = _csv_store(ispec=ispec, parsed=parsed, source=source, sha=sha, name=name, actor=actor,
                                 effective_at=effective_at, report=report, not_stored=not_stored)
    except Exception as exc:
        # Nothing was stored (one transaction); the attempt itself is recorded.
        run = _run_start(kind=kind, source=source, use_case=spec_.use_case, actor=actor, file_name=name,
                         file_sha256=sha)
        run.report = report.to_dict()
        _run_finish(run=run, actor=actor, status=IngestionRun.Status.FAILED,
                    error=f"nothing stored: {type(exc).__name__}: {exc}")
        raise
    return CsvImportResult(run=run, report=report, counts=counts, not_stored=dict(not_stored))


@transaction.atomic
def _csv_store(*, ispec: IngestionSpec, parsed: list[_ParsedRow], source: str, sha: str, name: str, actor: Actor,
               effective_at: datetime, report: DatasetReport, not_stored: dict[str, list[int]]
               ) -> tuple[IngestionRun, dict[str, int]]:
    spec_ = ispec.spec
    prefix = sha[:16]
    counts = {"rows": len(parsed), "patients_created": 0, "patients_existing": 0, "values_created": 0,
              "values_unchanged": 0, "outcomes_created": 0, "outcomes_unchanged": 0}
    run = _run_start(kind=IngestionRun.Kind.CSV_IMPORT, source=source, use_case=spec_.use_case, actor=actor,
                     file_name=name, file_sha256=sha)
    identifiers = {pid for _, pid, _, _, _ in parsed}
    patients = {p.identifier: p for p in Patient.objects.filter(identifier__in=identifiers)}
    new_patients = []
    for _, pid, sex, _, _ in parsed:
        if pid not in patients:
            patient = Patient(identifier=pid, sex=sex or Patient.Sex.UNKNOWN, source=source, external_id=pid)
            patients[pid] = patient
            new_patients.append(patient)
        elif sex and patients[pid].sex == Patient.Sex.UNKNOWN:
            patients[pid].sex = sex
            patients[pid].save(update_fields=["sex", "updated_at"])
    Patient.objects.bulk_create(new_patients)
    counts["patients_created"] = len(new_patients)
    counts["patients_existing"] = len(identifiers) - len(new_patients)
    # bulk_create sets primary keys on PostgreSQL and SQLite; re-read to be independent of the backend.
    ids = dict(Patient.objects.filter(identifier__in=identifiers).values_list("identifier", "pk"))

    observations = []
    outcomes = []
    for number, pid, _, values, outcome in parsed:
        for feature, given, canonical, unit in values:
            system, code = ispec.feature_code(feature)
            source_id = f"{prefix}/row{number}/{feature.name}"
            observations.append(Observation(
                patient_id=ids[pid], code_system=system, code=code, value=given, unit=unit or feature.unit or "",
                value_canonical=canonical, unit_canonical=feature.unit or "", effective_at=effective_at,
                source=source, source_id=source_id, source_resource=f"{prefix}/row{number}", source_version=sha,
            ))
        if outcome is not None:
            outcomes.append(Outcome(patient_id=ids[pid], use_case=spec_.use_case, present=outcome,
                                    onset_at=None, source=source, source_id=f"{prefix}/row{number}/outcome",
                                    source_version=sha))
    known_obs = set(Observation.objects.filter(source=source, source_id__startswith=f"{prefix}/")
                    .values_list("source_id", flat=True))
    known_out = set(Outcome.objects.filter(source=source, source_id__startswith=f"{prefix}/")
                    .values_list("source_id", flat=True))
    new_obs = [o for o in observations if o.source_id not in known_obs]
    new_out = [o for o in outcomes if o.source_id not in known_out]
    Observation.objects.bulk_create(new_obs, batch_size=2000)
    Outcome.objects.bulk_create(new_out, batch_size=2000)
    counts.update(values_created=len(new_obs), values_unchanged=len(observations) - len(new_obs),
                  outcomes_created=len(new_out), outcomes_unchanged=len(outcomes) - len(new_out))
    run.counts = {"rows": counts}
    run.unmapped = {reason: {"count": len(r), "examples": [f"row {n}" for n in r[:MAX_EXAMPLES]]}
                    for reason, r in not_stored.items()}
    run.report = report.to_dict()
    _run_finish(run=run, actor=actor, status=IngestionRun.Status.SUCCEEDED)
    return run, counts


def _is_positive(text: str, positive: Any) -> bool:
    if isinstance(positive, bool):
        return text.lower() in ("true", "1", "yes") if positive else text.lower() in ("false", "0", "no")
    if isinstance(positive, int | float):
        try:
            return float(text) == float(positive)
        except ValueError:
            return False
    return text == str(positive).strip()


# ====================================================================================================================
# Training dataset from the database
# ====================================================================================================================


@dataclass(frozen=True)
class TrainingExport:
    path: Path
    rows: int
    events: int
    patients_without_values: int
    missing: dict[str, int]

    def text(self) -> str:
        missing = ", ".join(f"{k} {v}" for k, v in self.missing.items() if v)
        return (f"wrote {self.rows} rows ({self.events} with the outcome) to {self.path}; "
                f"{self.patients_without_values} patient(s) without any observed feature left out; "
                f"missing values: {missing or 'none'}")


def training_dataset_export(
    *,
    spec: IngestionSpec | str | Path,
    out_path: Path,
    at: datetime | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
    actor: Actor = SYSTEM,
) -> TrainingExport:
    """Write the use case's training CSV from the database: one row per patient with the features assembled at
    `at` (default now; canonical units, blank = missing) and the outcome column (1 when the condition is recorded
    as present with onset at or before `at`, else 0). `python -m ml train --spec <spec> --data <out>` reads it."""
    ispec = resolve_spec(spec)
    spec_ = ispec.spec
    positive = spec_.outcome.positive
    if positive not in (1, True, "1"):
        raise ApplicationError(f"spec {spec_.use_case}: only a 1/0 outcome can be exported (positive is "
                               f"{positive!r})", code="unsupported_outcome")
    at = at or timezone.now()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    present = outcome_present_patient_ids(use_case=spec_.use_case, at=at)
    observed = [f.name for f in spec_.features if f.name not in ispec.derived]
    rows = events = skipped = 0
    missing = {f.name: 0 for f in spec_.features}
    fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".csv", dir=out_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            # Safe to open in a spreadsheet (apps/core/csv_safe.py): an identifier starting like a formula gets a
            # leading quote; the values are plain numbers and stay as they are.
            writer.writerow(csv_safe_row([spec_.patient_id, *[f.column for f in spec_.features],
                                          spec_.outcome.column]))
            for assembled in patients_features_assemble(spec=ispec, at=at, lookback=lookback):
                if all(assembled.values[name].missing for name in observed):
                    skipped += 1
                    continue
                label = 1 if assembled.patient_id in present else 0
                cells = []
                for f in spec_.features:
                    value = assembled.values[f.name].value
                    missing[f.name] += value is None
                    cells.append("" if value is None else f"{value:.6g}")
                writer.writerow(csv_safe_row([assembled.patient_identifier, *cells, label]))
                rows += 1
                events += label
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    result = TrainingExport(out_path, rows, events, skipped, missing)
    with transaction.atomic():
        audit_event_record(actor=actor, action="patients.training_export", object_type="dataset",
                           object_id=spec_.use_case,
                           inputs={"use_case": spec_.use_case, "at": at.isoformat(),
                                   "lookback_days": lookback.total_seconds() / 86400},
                           output={"rows": rows, "events": events, "sha256": file_sha256(out_path)})
    return result


# --- Outcomes recorded by people and systems (web, API) ----------------------------------------------------

@transaction.atomic
def outcome_record(
    *,
    patient_id: int,
    use_case: str,
    present: bool,
    actor: Actor,
    onset_at: datetime | None = None,
    source: str,
    source_id: str = "",
    prediction_id: str = "",
) -> tuple[Outcome, bool]:
    """Record whether the use case's condition turned out present for a patient (for realised performance).
    `source` names the channel (e.g. "clinpredict:web", "api:<client id>"); a repeated (source, source_id) updates
    the same record instead of adding another, so a retry is safe. Returns (outcome, created). Audited."""
    if onset_at is not None and timezone.is_naive(onset_at):
        raise ApplicationError("onset_at must include a timezone.", code="invalid",
                               fields={"onset_at": ["give a timezone, e.g. 2026-06-01T00:00:00+00:00"]})
    if onset_at is not None and onset_at > timezone.now() + timedelta(minutes=5):
        raise ApplicationError("onset_at is in the future.", code="invalid",
                               fields={"onset_at": ["must not be in the future"]})
    patient = Patient.objects.filter(pk=patient_id).first()
    if patient is None:
        raise ApplicationError(f"No patient with id {patient_id}.", code="not_found", status_code=404,
                               fields={"patient_id": ["unknown patient"]})
    source_id = source_id or f"{use_case}:{prediction_id or timezone.now().isoformat()}"
    outcome, created = Outcome.objects.update_or_create(
        source=source, source_id=source_id,
        defaults={"patient": patient, "use_case": use_case, "present": present, "onset_at": onset_at},
    )
    audit_event_record(
        actor=actor, action="outcome.record", object_type="outcome", object_id=str(outcome.pk),
        patient_ref=patient.identifier,
        inputs={"use_case": use_case, "source": source, "source_id": source_id, "prediction_id": prediction_id},
        output={"present": present, "onset_at": onset_at.isoformat() if onset_at else None, "created": created},
    )
    return outcome, created


# --- Care teams (who sees a patient's predictions without break-the-glass) --------------------------------------


def _care_team_audit(actor: Actor, action: str, member: CareTeamMember) -> None:
    audit_event_record(
        actor=actor, action=action, object_type="care_team_member", object_id=str(member.pk),
        patient_ref=member.patient.identifier,
        output={"user": member.user.get_username(), "role": member.role, "since": member.since.isoformat()},
    )


@transaction.atomic
def care_team_member_add(*, patient_id: int, user_id: int, role: str = CareTeamMember.Role.ATTENDING,
                         since: date | None = None, actor: Actor) -> tuple[CareTeamMember, bool]:
    """Put a user on a patient's care team (since `since`, default today), or update their role and start date.
    Idempotent: the same call again changes nothing and records nothing. Returns (member, changed). Audited
    ("care_team.member_add" / "care_team.member_update")."""
    if role not in CareTeamMember.Role.values:
        raise ApplicationError(f"Unknown care team role '{role}'.", code="invalid",
                               fields={"role": [f"one of {', '.join(CareTeamMember.Role.values)}"]})
    member = (CareTeamMember.objects.select_for_update().select_related("patient", "user")
              .filter(patient_id=patient_id, user_id=user_id).first())
    if member is None:
        member = CareTeamMember.objects.create(patient_id=patient_id, user_id=user_id, role=role,
                                               since=since or timezone.localdate(), added_by=actor.label)
        _care_team_audit(actor, "care_team.member_add", member)
        return member, True
    since = since or member.since
    if (member.role, member.since) == (role, since):
        return member, False
    member.role, member.since = role, since
    member.save(update_fields=["role", "since"])
    _care_team_audit(actor, "care_team.member_update", member)
    return member, True


@transaction.atomic
def care_team_member_remove(*, member_id: int, actor: Actor) -> bool:
    """Take a user off a patient's care team (audited, "care_team.member_remove"); False when there was no such
    member."""
    member = CareTeamMember.objects.select_for_update().select_related("patient", "user").filter(pk=member_id).first()
    if member is None:
        return False
    _care_team_audit(actor, "care_team.member_remove", member)
    member.delete()
    return True
