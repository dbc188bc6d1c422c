"""Throughput against gunicorn workers: ClinPredict under `make serve` (production settings, the shared Redis cache,
PostgreSQL) with WEB_CONCURRENCY 1, 2 and 4, each loaded by wrk with 16 connections; and how long requests wait
on the audit chain lock.

The chain lock is `pg_advisory_xact_lock` taken inside the append statement and held until its COMMIT. While wrk
runs, a sampler (benchmark-only, its own PostgreSQL connection; nothing is added to the server or its logs) reads
pg_locks every few milliseconds: how many backends hold the lock (0 or 1) and how many wait for it. By Little's law
the mean number waiting times the run's length is the total time spent waiting, so per request
`wait = mean waiting x seconds / requests`, and `held = mean holding x seconds / requests`; the share of time the
lock is held says whether it is the limit (it is when that share approaches 1)."""

import argparse
import threading
import time
from typing import Any

import psycopg2

from .api_latency import _audit_count, _log_lines, _logged_2xx, wrk
from .common import write_result
from .servers import (
    BENCH_DB,
    PG,
    PREDICTION_BODY,
    SERVE_COMMAND,
    clinpredict_prepare,
    clinpredict_served,
    clinpredict_token,
    load_average,
    one_connection,
)

# apps/audit/services.py _AUDIT_CHAIN_LOCK_KEY; pg_locks shows a bigint advisory key as classid (high 32 bits),
# objid (low 32 bits) and objsubid 1.
CHAIN_LOCK_KEY = 0x436C696E50726564
_LOCK_ROWS = ("SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) FROM pg_locks "
              "WHERE locktype = 'advisory' AND classid = %s AND objid = %s AND objsubid = 1")


class LockSampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = psycopg2.connect(f"{PG}/{BENCH_DB}")
        conn.autocommit = True
        args = (CHAIN_LOCK_KEY >> 32, CHAIN_LOCK_KEY & 0xFFFFFFFF)
        try:
            with conn.cursor() as cursor:
                while not self._stop_event.is_set():
                    cursor.execute(_LOCK_ROWS, args)
                    held, waiting = cursor.fetchone()
                    self.samples.append((int(held), int(waiting)))
                    time.sleep(self.interval)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def run(workers: int, seconds: int, interval: float, env: dict[str, str]) -> dict[str, Any]:
    with clinpredict_served(env, log_name=f"clinpredict-serve-{workers}w.log", workers=workers) as server:
        headers = {"Authorization": f"Bearer {clinpredict_token(server)}", "Content-Type": "application/json"}
        one_connection(server, "/api/v1/predictions", PREDICTION_BODY, headers, requests=200, warmup=0)  # warm all
        events, log_lines = _audit_count(), _log_lines(server.log)
        sampler = LockSampler(interval)
        sampler.start()
        started = time.monotonic()
        loaded = wrk(server, "/api/v1/predictions", PREDICTION_BODY, headers, seconds=seconds, database=True)
        elapsed = time.monotonic() - started
        sampler.stop()
        time.sleep(1.0)  # in-flight requests finish and gunicorn writes their access-log lines
        audit_events, served = _audit_count() - events, _logged_2xx(server.log, log_lines)
    samples = sampler.samples or [(0, 0)]
    mean_held = sum(h for h, _ in samples) / len(samples)
    mean_waiting = sum(w for _, w in samples) / len(samples)
    requests = max(1, loaded["requests"])
    return {
        "workers": workers, "threads_per_worker": 4, "rps_16_conn": loaded["requests_per_s"],
        "p50": loaded["latency"].get("p50"), "p99": loaded["latency"].get("p99"),
        "errors": loaded["non_2xx"] + sum(loaded["socket_errors"].values()),
        "audit_events": audit_events, "served_2xx": served,
        "server_cpu_ms_per_req": loaded.get("server_cpu_ms_per_request"),
        "postgres_cpu_ms_per_req": loaded.get("postgres_cpu_ms_per_request"),
        "lock_samples": len(samples),
        "lock_held_share": round(mean_held, 3),
        "lock_held_ms_per_req": round(mean_held * elapsed / requests * 1000, 3),
        "lock_wait_ms_per_req": round(mean_waiting * elapsed / requests * 1000, 3),
        "mean_waiting_on_lock": round(mean_waiting, 3),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--interval-ms", type=float, default=2.0)
    args = parser.parse_args(argv)
    load_before = load_average()
    env = clinpredict_prepare()
    rows = [run(workers, args.seconds, args.interval_ms / 1000, env) for workers in args.workers]
    write_result("scaling", {
        "title": "Throughput at 1, 2 and 4 gunicorn workers, and time waiting on the audit chain lock",
        "command": "python -m benchmarks scaling",
        "tool": f"wrk -t2 -c16 -d{args.seconds}s (as api_latency); pg_locks sampled every {args.interval_ms} ms "
                "from a separate connection during the wrk run (Little's law: wait per request = mean waiting x "
                "seconds / requests)",
        "servers": {"clinpredict": SERVE_COMMAND.replace("WEB_CONCURRENCY=2", "WEB_CONCURRENCY=<1|2|4>")},
        "notes": "Production settings with the shared Redis cache (CACHE_URL: rate-limit counters shared by every "
                 "worker), PostgreSQL, gthread workers with 4 threads each. The machine has 2 cores shared by wrk, "
                 "the workers, PostgreSQL, Redis and the sampler, so more workers than cores cannot add CPU: the "
                 "rows show whether throughput holds or falls as workers are added, and whether the chain lock "
                 "(held share, wait per request) is what limits it. Load average before/after is in the JSON.",
        "rows": rows,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    })


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
