"""The floor under `POST /api/v1/predictions`, measured in one run, layer by layer, each HTTP layer under the same
client as api_latency (one connection: p50/p99 over sequential POSTs with TCP_NODELAY; 16 connections: wrk):

1. the disk: one 8 kB write + fdatasync (`pg_test_fsync`, PostgreSQL's own tool; fdatasync is this server's
   wal_sync_method), the least a durable COMMIT costs;
2. a bare Django view (benchmarks/floor_app: no middleware, no DRF, no token, no validation) that runs the champion's
   ONNX session on the same body, under the same gunicorn configuration as `make serve`;
3. the same view plus one durable INSERT of the body (one autocommit statement: one fsync'd COMMIT) into a scratch
   database;
4. ClinPredict's endpoint under `make serve` (token, rate limit, validation and units, ONNX, explanation, the audited
   append committed before the 201, metrics, request id).

Each row says how far it sits above the one before and above the bare view."""

import argparse
import re
import subprocess
import time
from glob import glob
from typing import Any

from .api_latency import WRK_SECONDS, _audit_count, _log_lines, _logged_2xx, wrk
from .common import write_result
from .servers import (
    BENCH_DB,
    FLOOR_COMMAND,
    PG,
    PREDICTION_BODY,
    SERVE_COMMAND,
    WORK,
    _trained_run,
    clinpredict_env,
    clinpredict_prepare,
    clinpredict_served,
    clinpredict_token,
    floor_served,
    load_average,
    one_connection,
    psql,
)

FLOOR_DB = f"{BENCH_DB}_floor"


def fsync_cost(seconds: int) -> dict[str, Any]:
    """pg_test_fsync on the disk PostgreSQL writes to (its test file next to the benchmark's files, on the same
    filesystem as the data directory here): microseconds per 8 kB write + sync, per sync method."""
    tools = sorted(glob("/usr/lib/postgresql/*/bin/pg_test_fsync"))
    if not tools:
        raise SystemExit("pg_test_fsync not found under /usr/lib/postgresql/*/bin/ (Debian's postgresql package)")
    target = WORK / "pg_test_fsync.out"
    target.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([tools[-1], "-s", str(seconds), "-f", str(target)], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    target.unlink(missing_ok=True)
    one_write = out.split("Compare file sync methods using one 8kB write:", 1)[1].split("\n\n", 2)
    per_method = {m: int(us) for m, us in re.findall(r"^\s+(\S+)\s+[\d.]+ ops/sec\s+(\d+) usecs/op", "\n".join(
        one_write[:2]), re.MULTILINE)}
    wal_sync_method = psql("SHOW wal_sync_method", database="postgres")
    return {"tool": tools[-1], "seconds_per_test": seconds, "wal_sync_method": wal_sync_method,
            "usecs_per_8kb_write_and_sync": per_method, "output": out.strip().splitlines()}


def floor_database() -> str:
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{FLOOR_DB}'", database="postgres"):  # noqa: S608
        psql(f"CREATE DATABASE {FLOOR_DB}", database="postgres")
    psql("CREATE TABLE IF NOT EXISTS floor_write (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL "
         "DEFAULT now(), body jsonb NOT NULL, probability double precision NOT NULL)", database=FLOOR_DB)
    return f"{PG}/{FLOOR_DB}"


def _measure(server: Any, path: str, headers: dict[str, str], requests: int, seconds: int,
             database: str | None = None) -> dict[str, Any]:
    single = one_connection(server, path, PREDICTION_BODY, headers, requests=requests)
    loaded = wrk(server, path, PREDICTION_BODY, headers, seconds=seconds, database=database is not None,
                 database_name=database or BENCH_DB)
    return {"one_connection": single, "sixteen_connections": loaded}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=WRK_SECONDS)
    parser.add_argument("--fsync-seconds", type=int, default=2)
    args = parser.parse_args(argv)
    load_before = load_average()
    env = clinpredict_prepare()
    floor_url = floor_database()
    disk = fsync_cost(args.fsync_seconds)
    json_headers = {"Content-Type": "application/json"}
    floor_env = {k: v for k, v in clinpredict_env().items() if not k.startswith("DJANGO_")}
    floor_env.update({"FLOOR_RUN_DIR": str(_trained_run()), "FLOOR_DATABASE_URL": floor_url})
    with floor_served(floor_env) as server:
        bare = _measure(server, "/score", json_headers, args.requests, args.seconds)
        before = int(psql("SELECT count(*) FROM floor_write", database=FLOOR_DB))
        durable = _measure(server, "/score-durable", json_headers, args.requests, args.seconds, database=FLOOR_DB)
        durable["rows_written"] = int(psql("SELECT count(*) FROM floor_write", database=FLOOR_DB)) - before
    with clinpredict_served(env) as server:
        headers = {**json_headers, "Authorization": f"Bearer {clinpredict_token(server)}"}
        single = one_connection(server, "/api/v1/predictions", PREDICTION_BODY, headers, requests=args.requests)
        events, log_lines = _audit_count(), _log_lines(server.log)
        loaded = wrk(server, "/api/v1/predictions", PREDICTION_BODY, headers, seconds=args.seconds, database=True)
        time.sleep(1.0)  # in-flight requests finish and gunicorn writes their access-log lines
        loaded["audit_events"] = _audit_count() - events
        loaded["served_2xx"] = _logged_2xx(server.log, log_lines)
        full = {"one_connection": single, "sixteen_connections": loaded}
    psql("TRUNCATE floor_write", database=FLOOR_DB)

    fsync_ms = disk["usecs_per_8kb_write_and_sync"].get(disk["wal_sync_method"], 0) / 1000
    rows: list[dict[str, Any]] = [{"layer": f"disk: one 8 kB write + {disk['wal_sync_method']} (pg_test_fsync)",
                                   "p50_ms": fsync_ms}]
    bare_p50 = bare["one_connection"]["p50_ms"]
    previous = None
    for name, result in (("bare Django view + ONNX (benchmarks/floor_app)", bare),
                         ("bare view + ONNX + one durable INSERT (autocommit)", durable),
                         ("ClinPredict POST /api/v1/predictions (make serve)", full)):
        one, many = result["one_connection"], result["sixteen_connections"]
        rows.append({
            "layer": name, "p50_ms": one["p50_ms"], "p99_ms": one["p99_ms"],
            "p50_above_layer_below_ms": None if previous is None else round(one["p50_ms"] - previous, 3),
            "p50_above_bare_view_ms": round(one["p50_ms"] - bare_p50, 3),
            "rps_16_conn": many["requests_per_s"],
            "errors_16_conn": many["non_2xx"] + sum(many["socket_errors"].values()),
            "server_cpu_ms_per_req": many.get("server_cpu_ms_per_request"),
            "postgres_cpu_ms_per_req": many.get("postgres_cpu_ms_per_request"),
        })
        previous = one["p50_ms"]
    write_result("floor", {
        "title": "Floor: the disk, a bare Django + ONNX view, one durable write, and ClinPredict, in one run",
        "command": "python -m benchmarks floor",
        "tool": f"pg_test_fsync -s {args.fsync_seconds}; one connection: Python http.client with TCP_NODELAY, "
                f"{args.requests} sequential POSTs after 100 warm-up; 16 connections: wrk -t2 -c16 -d{args.seconds}s "
                "(the api_latency client)",
        "servers": {"floor": FLOOR_COMMAND + " (DJANGO_SETTINGS_MODULE=benchmarks.floor_app.settings)",
                    "clinpredict": SERVE_COMMAND},
        "notes": "Same machine, client and gunicorn configuration (gunicorn.conf.py, 2 workers) for every HTTP layer; "
                 "the servers ran one after the other. The disk row is one 8 kB write + sync alone, the least any "
                 "durable COMMIT costs (PostgreSQL adds its own WAL work). The durable layer writes the body and the "
                 "probability to a scratch database (" + FLOOR_DB + ") in one autocommit INSERT; ClinPredict "
                 "writes the prediction and its hash-chained audit event in one autocommit statement under the "
                 "chain lock. Load average before/after is in the JSON.",
        "rows": rows,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "durable_rows_written": durable.get("rows_written"),
        "clinpredict_audit_events": loaded["audit_events"],
        "clinpredict_served_2xx": loaded["served_2xx"],
        "disk": {k: v for k, v in disk.items() if k != "output"},
        "pg_test_fsync_output": disk["output"],
        "bare": bare,
        "durable": durable,
        "clinpredict": full,
    })


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
