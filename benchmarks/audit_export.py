"""Audit ledger at scale: export 1,000,000 events (CSV, JSONL, FHIR; command and HTTP API), verify the chain, and
back it up encrypted, each in its own process under GNU time (wall clock and peak RSS).

    python -m benchmarks.audit_export [--events 1000000] [--small 100000] [--fresh]

Uses its own PostgreSQL database (AUDIT_BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/clinpredict_bench_audit), migrated and seeded once with hash-chained events shaped
like real prediction events (inputs, output, patient, model); later runs reuse it. Each export is limited to
`--seq-to N`, so exactly N events are written even though every export adds its own audit event.
"""

import argparse
import json
import os
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .common import REPO, timed, write_result

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/clinpredict_bench_audit"
BENCH_KEY = "YXVkaXQtYmVuY2htYXJrLWtleS0zMi1ieXRlcy0wMDA="  # base64 of a fixed 32-byte benchmark-only key


def _child_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL",)}
    env.update({"DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "clinpredict.settings.test",
                "AUDIT_BACKUP_KEY": BENCH_KEY, "PYTHONPATH": str(REPO)})
    return env


def _ensure_database(database_url: str, *, fresh: bool) -> None:
    import psycopg2

    base, name = database_url.rsplit("/", 1)
    conn = psycopg2.connect(f"{base}/postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        if fresh:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()


# --- child: seed ---------------------------------------------------------------------------------------------


def _seed(events: int) -> None:
    """Migrate, then append hash-chained events up to #`events` with COPY (the writer's hashing, bulk speed)."""
    import csv
    import io

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from apps.audit.hashing import HASHED_FIELDS, canonical_json, event_hash
    from apps.audit.selectors import audit_head

    call_command("migrate", verbosity=0, interactive=False)
    head_seq, prev_hash = audit_head()
    if head_seq >= events:
        print(f"seed: database already holds #{head_seq} events")
        return
    rng = random.Random(8)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    columns = (*HASHED_FIELDS, "prev_hash", "hash")
    copy_sql = f"COPY audit_auditevent ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
    batch = io.StringIO()
    writer = csv.writer(batch)
    raw = connection.cursor().cursor
    for seq in range(head_seq + 1, events + 1):
        glucose = round(rng.uniform(4.0, 14.0), 1)
        features = {"pregnancies": rng.randint(0, 8), "glucose": {"value": glucose, "unit": "mmol/L"},
                    "blood_pressure": rng.randint(50, 100), "skin_thickness": rng.randint(10, 50), "insulin": None,
                    "bmi": round(rng.uniform(18, 45), 1), "pedigree": round(rng.uniform(0.1, 2.0), 3),
                    "age": rng.randint(21, 80)}
        probability = rng.random()
        fields: dict[str, Any] = {
            "seq": seq, "created_at": start + timedelta(seconds=seq * 3), "actor_type": "user",
            "actor_id": f"clinician{seq % 40}", "action": "prediction.create", "object_type": "prediction",
            "object_id": f"{seq:032x}", "patient_ref": f"patient-{seq % 50000}", "model_version": "diabetes@1",
            "model_sha256": "ab" * 32,
            "inputs": json.loads(canonical_json({"features": features, "canonical": {
                **{k: v for k, v in features.items() if k != "glucose"}, "glucose": round(glucose * 18.016, 3)}})),
            "output": {"probability": probability, "threshold": 0.35, "risk_band": "high" if probability > 0.35
                       else "low", "positive": probability > 0.35, "imputed": ["insulin"], "channel": "api"},
            "request_id": f"{seq:032x}", "source_ip": "10.0.0.1",
        }
        digest = event_hash(fields, prev_hash)
        writer.writerow([
            fields["created_at"].isoformat() if name == "created_at" else
            canonical_json(fields[name]) if name in ("inputs", "output") else fields[name]
            for name in HASHED_FIELDS] + [prev_hash, digest])
        prev_hash = digest
        if seq % 50_000 == 0 or seq == events:
            batch.seek(0)
            raw.copy_expert(copy_sql, batch)
            batch.seek(0)
            batch.truncate()
            print(f"seed: #{seq}", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audit_auditevent")


# --- child: API export ---------------------------------------------------------------------------------------


def _api_export(export_format: str, seq_to: int, out: str) -> None:
    import django

    django.setup()
    from datetime import timedelta as td

    from django.test import Client
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application, set_token_value

    app, _ = Application.objects.get_or_create(
        client_id="audit-bench", defaults={"name": "audit benchmark", "client_type": "confidential",
                                           "authorization_grant_type": "client-credentials"})
    raw = f"bench-{os.getpid()}-{random.random()}"
    token = AccessToken(application=app, scope="audit:read", expires=timezone.now() + td(hours=1))
    set_token_value(token, raw)  # stored hashed when the RFC 9700 token-storage setting is on
    token.save()
    response = Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get(
        "/api/v1/audit/events", {"format": export_format, "seq_to": seq_to})
    assert response.status_code == 200, response.status_code
    with open(out, "wb") as target:
        for block in response.streaming_content:
            target.write(block)


# --- parent --------------------------------------------------------------------------------------------------


def _count(path: Path, export_format: str) -> int:
    if export_format == "fhir":
        marker, carry, total = b'"resourceType":"AuditEvent"', b"", 0
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                data = carry + block
                total += data.count(marker)
                carry = data[-(len(marker) - 1):]
        return total
    with path.open("rb") as stream:
        lines = sum(1 for _ in stream)
    return lines - 1 if export_format == "csv" else lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000, help="a smaller export, to show memory is constant")
    parser.add_argument("--fresh", action="store_true", help="drop and re-seed the benchmark database")
    parser.add_argument("--database-url", default=os.environ.get("AUDIT_BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--child-seed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-api", nargs=3, metavar=("FORMAT", "SEQ_TO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_seed:
        _seed(args.events)
        return
    if args.child_api:
        _api_export(args.child_api[0], int(args.child_api[1]), args.child_api[2])
        return

    _ensure_database(args.database_url, fresh=args.fresh)
    env = _child_env(args.database_url)
    seeding = timed([sys.executable, "-m", "benchmarks.audit_export", "--child-seed", "--events", str(args.events)],
                    env=env)
    if seeding["exit_code"] != 0:
        sys.exit("seeding the benchmark database failed")
    print(f"seeded to {args.events:,} events: {seeding['wall_seconds']} s")
    manage = [sys.executable, str(REPO / "manage.py")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="clinpredict-audit-bench-") as tmp:
        runs = [("command", fmt, n) for n in (args.small, args.events) for fmt in ("csv", "jsonl", "fhir")]
        runs += [("api", "jsonl", args.events), ("api", "csv", args.events)]
        for path_kind, fmt, n in runs:
            out = Path(tmp) / f"{path_kind}-{n}.{fmt}"
            if path_kind == "command":
                cmd = [*manage, "export_audit", "--format", fmt, "--seq-to", str(n), "--output", str(out),
                       "--actor-name", "benchmark"]
            else:
                cmd = [sys.executable, "-m", "benchmarks.audit_export", "--child-api", fmt, str(n), str(out)]
            measured = timed(cmd, env=env)
            exported = _count(out, fmt) if measured["exit_code"] == 0 else 0
            size_mib = round(out.stat().st_size / 2**20, 1) if out.exists() else None
            wall = measured["wall_seconds"] or 0
            rows.append({"step": f"export {fmt} ({path_kind})", "events": exported, "output_mib": size_mib,
                         **measured, "events_per_s": round(exported / wall) if wall else None})
            print(f"{rows[-1]}", flush=True)
            out.unlink(missing_ok=True)
        verify = timed([*manage, "verify_audit_chain"], env=env)
        backup_dir = Path(tmp) / "backups"
        backup = timed([*manage, "backup_audit", "--full", "--dir", str(backup_dir)], env=env)
        (backup_path,) = sorted(backup_dir.glob("*.jsonl.aesgcm"))
        backed_up = json.loads(backup_path.with_name(backup_path.name + ".manifest.json").read_text())["count"]
        # The whole chain: the seeded events plus the export events this and earlier runs added (verify adds none).
        rows.append({"step": "verify_audit_chain (whole chain)", "events": backed_up, "output_mib": None, **verify,
                     "events_per_s": round(backed_up / verify["wall_seconds"]) if verify["wall_seconds"] else None})
        print(f"{rows[-1]}", flush=True)
        rows.append({"step": "backup_audit --full (AES-256-GCM)", "events": backed_up,
                     "output_mib": round(backup_path.stat().st_size / 2**20, 1), **backup,
                     "events_per_s": round(backed_up / backup["wall_seconds"]) if backup["wall_seconds"] else None})
        print(f"{rows[-1]}", flush=True)
        restore = timed([*manage, "restore_audit_backup", "--verify", str(backup_path)], env=env)
        rows.append({"step": "restore_audit_backup --verify", "events": backed_up, "output_mib": None, **restore,
                     "events_per_s": round(backed_up / restore["wall_seconds"]) if restore["wall_seconds"] else None})
        print(f"{rows[-1]}", flush=True)

    write_result("audit_export", {
        "title": f"Audit ledger: export, verify and back up {args.events:,} events",
        "command": f"python -m benchmarks.audit_export --events {args.events} --small {args.small}",
        "tool": "GNU time -v per step, each step its own process (wall clock incl. ~1-2 s Django start-up; "
                "maximum resident set size)",
        "notes": "PostgreSQL 15 on 127.0.0.1, events shaped like prediction events (about 1 KiB each as JSONL). "
                 "Exports (`apps.audit.exports.audit_export_stream`) read pages of 500 events by keyset on seq, one "
                 "page ahead in a reader thread; PostgreSQL writes each row's text around inputs/output and Python "
                 "adds their canonical JSON (orjson where byte-identical), one block per page. `command` is "
                 "`manage.py export_audit`, `api` is GET /api/v1/audit/events?format=... through the real DRF view "
                 "with Django's test client in one process. Wall clock includes Django start-up (which alone is "
                 "~270 MiB RSS, most of the peak). Peak RSS at "
                 f"{args.small:,} vs {args.events:,} events shows whether memory grows with the export. The machine "
                 "was shared with other jobs while measuring, so events/s are lower bounds.",
        "rows": rows,
    })


if __name__ == "__main__":
    main()
