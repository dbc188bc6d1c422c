"""FHIR R4 sync throughput: `manage.py sync_fhir` against a real sekmet-fhir server loaded with carebundle patients.

    python -m benchmarks.fhir_sync [--patients 1000] [--page-size 200]

Starts sekmet-fhir (tests/fhir/sekmet.py; `.venv/fhir-server`, see requirements/fhir-server.txt) on a free loopback
port with client-credentials auth and loads `generate_cohort(count=N, seed=42)`. Then, each in its own process under
GNU time: the first sync (everything new), an incremental sync (nothing changed) and a full resync (everything read
again, nothing changed). Uses its own PostgreSQL database (FHIR_BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/clinpredict_bench_fhir), dropped and migrated at the start of each run.
"""

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .common import REPO, timed, write_result

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/clinpredict_bench_fhir"


def _sekmet_helpers() -> ModuleType:
    # By path: an unrelated top-level `tests` package is installed in site-packages.
    path = REPO / "tests" / "fhir" / "sekmet.py"
    spec = importlib.util.spec_from_file_location("clinpredict_tests_fhir_sekmet", path)
    if spec is None or spec.loader is None:
        raise RuntimeError("tests/fhir/sekmet.py is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _fresh_database(database_url: str) -> None:
    import psycopg2

    base, name = database_url.rsplit("/", 1)
    conn = psycopg2.connect(f"{base}/postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def _runs(database_url: str) -> list[dict[str, Any]]:
    import psycopg2

    conn = psycopg2.connect(database_url)
    with conn.cursor() as cursor:
        cursor.execute("SELECT id, status, since IS NOT NULL, EXTRACT(EPOCH FROM finished_at - started_at), counts, "
                       "unmapped FROM patients_ingestionrun ORDER BY id")
        rows = cursor.fetchall()
    conn.close()
    return [{"id": r[0], "status": r[1], "incremental": r[2], "seconds": float(r[3]), "counts": r[4],
             "unmapped": r[5]} for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=200)
    args = parser.parse_args(argv)
    database_url = os.environ.get("FHIR_BENCH_DATABASE_URL", DEFAULT_DB)
    sekmet = _sekmet_helpers()
    _fresh_database(database_url)
    with tempfile.TemporaryDirectory(prefix="clinpredict-bench-fhir-") as tmp:
        server = sekmet.SekmetServer(Path(tmp) / "sekmet").start()
        try:
            env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
            env.update({"DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "clinpredict.settings.test",
                        "PYTHONPATH": str(REPO), "FHIR_BASE_URL": server.base_url,
                        "FHIR_CLIENT_ID": server.client_id, "FHIR_CLIENT_SECRET": server.client_secret,
                        "FHIR_PAGE_SIZE": str(args.page_size)})
            migrate = timed([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env)
            if migrate["exit_code"] != 0:
                sys.exit("migrate failed")
            started = time.perf_counter()
            bundles = sekmet.cohort_bundles(args.patients, seed=42)
            generated = time.perf_counter() - started
            started = time.perf_counter()
            loaded = sekmet.load_bundles(server, bundles)
            load_seconds = time.perf_counter() - started
            print(f"generated {args.patients} patients in {generated:.1f} s, loaded {sum(loaded.values()):,} "
                  f"resources into sekmet in {load_seconds:.1f} s")
            steps = [("first sync (all new)", []), ("incremental sync (nothing changed)", []),
                     ("full resync (nothing changed)", ["--full"])]
            measured = []
            for label, extra in steps:
                result = timed([sys.executable, "manage.py", "sync_fhir", *extra], env=env)
                measured.append((label, result))
                print(f"{label}: {result['wall_seconds']} s, peak RSS {result['peak_rss_mib']} MiB "
                      f"(exit {result['exit_code']})")
        finally:
            server.stop()
    rows = []
    for (label, result), run in zip(measured, _runs(database_url), strict=True):
        counts = run["counts"]
        fetched = sum(c.get("fetched", 0) for c in counts.values())
        values = counts.get("Observation", {})
        rows.append({
            "step": label, "status": run["status"],
            "patients": counts.get("Patient", {}).get("fetched", 0),
            "observations": values.get("fetched", 0), "conditions": counts.get("Condition", {}).get("fetched", 0),
            "resources": fetched,
            "values_created": values.get("values_created", 0),
            "run_seconds": round(run["seconds"], 2),
            "resources_per_s": round(fetched / run["seconds"]) if fetched and run["seconds"] else 0,
            "wall_seconds": result["wall_seconds"], "peak_rss_mib": result["peak_rss_mib"],
            "exit_code": result["exit_code"],
        })
    for row in rows:
        print(f"{row['step']}: {row['resources']:,} resources in {row['run_seconds']} s = "
              f"{row['resources_per_s']:,} resources/s")
    write_result("fhir_sync", {
        "title": f"FHIR R4 sync: {args.patients:,} carebundle patients from sekmet-fhir",
        "command": f"python -m benchmarks.fhir_sync --patients {args.patients} --page-size {args.page_size}",
        "tool": "GNU time -v per sync (wall clock incl. ~1-2 s Django start-up; maximum resident set size); "
                "run_seconds = the sync run's own started/finished times; resources/s = resources read / run_seconds",
        "notes": f"sekmet-fhir 0.1.1 (FastAPI + SQLite, one process) on 127.0.0.1 with SMART client-credentials "
                 f"auth, carebundle 0.5.0 generate_cohort(count={args.patients}, seed=42) "
                 f"({sum(loaded.values()):,} resources loaded in {load_seconds:.0f} s); PostgreSQL 15 on 127.0.0.1; "
                 f"page size {args.page_size}; Observations asked for by the t2d_fhir spec's LOINC codes, every "
                 "Condition read (ICD-10-CM E11.x cannot be searched by prefix portably). Server and client share "
                 "the machine's 2 cores.",
        "rows": rows,
    })


if __name__ == "__main__":
    main()
