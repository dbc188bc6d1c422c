"""Profile `POST /api/v1/predictions` in-process with pyinstrument: production settings, the benchmark's PostgreSQL
database, a real OAuth2 token, the whole Django stack (middleware, DRF, validation, ONNX, explanation, audit write).
Writes the top frames (own time, and the call tree) to results/profile_request.json."""

import argparse
import base64
import os
import sys
import time
from typing import Any

from .common import write_result
from .servers import CLIENT_ID, CLIENT_SECRET, PREDICTION_BODY, clinpredict_prepare, load_average

TOP = 25
# What the profile showed and what was changed (issue 11), with the figures measured before each change on this
# machine (2026-11-26, load average 2-3.5 from other work). Later runs of this script measure the code as it is.
FINDINGS = [
    "Session 1 (2026-11-26, load average 2-3.5 from other work): 22.3 ms per request in-process; gunicorn "
    "one-connection p50 23.4 ms, 16 connections 53 requests/s (a 3 s wrk run).",
    "The explanation (XGBoost TreeSHAP) took ~5 ms of it, nearly all in building the xgboost.DMatrix with one OpenMP "
    "thread per core (12.7 ms mean per 1-row call measured alone, 0.09 ms with nthread=1). Fixed in "
    "apps/registry/loader.py: explain() runs under xgboost.config_context(nthread=1) (identical contributions), "
    "and the session and explainer are warmed when a version is loaded. After: ~7-12 ms per request.",
    "Session 2, Python work (cProfile call counts per request, which do not depend on the machine's load): 11,900 "
    "function calls -> 4,050. django-oauth-toolkit built an oauthlib server and request per call and compiled the "
    "token query through the ORM (~3,300 calls): now one plain statement for valid tokens "
    "(apps/core/authentication.py; every other case goes to the toolkit's own class). The ModelSerializer rebuilt "
    "and deep-copied ~30 fields per response (~1,000 calls): prediction_represent writes the same JSON (a test "
    "compares them). bulk_create compiled each INSERT (~1,000 calls): on PostgreSQL the rows now go in through the "
    "audit append function (next point). The CSP header is "
    "built once. The rate limit was DRF's sliding log, which pickles the list of every request time in the window "
    "on each request (thousands of floats at benchmark rates): now one atomic counter increment.",
    "Session 2, database: py-spy on a gunicorn worker under 16 connections showed ~50% of wall time waiting in "
    "PostgreSQL and 12% in Django's per-request `SELECT 1` health check. The chain lock is held from the head read "
    "to COMMIT, so every round trip inside it serialises all writers: lock, head, audit insert, prediction insert "
    "and COMMIT were five. Now the append is one PL/pgSQL call that takes the lock, reads the head, hashes "
    "(SHA-256 of the verifier's canonical JSON, built in Python around created_at and seq) and inserts the events "
    "and the predictions (apps/audit/migrations/0004): one statement and the COMMIT. With the champion cached a "
    "prediction is three round trips: token, append, COMMIT (the query-count test pins 6 inside a test "
    "transaction, with the champion and challenger lookups).",
    "Session 3 (issue 21, 2026-12-05): 4,605 Python function calls per request before (base 20175db, measured "
    "with this script; cProfile counts do not depend on the load), python_function_calls_per_request after. The "
    "rate limit on Redis was two round trips (Django's incr is EXISTS then INCR) and built a new redis client with "
    "~170 response callbacks on each call (~350 calls): now one Lua INCR+EXPIRE script on one kept client. "
    "Bearer-token API requests pass the session, sign-in, session-timeout and messages middleware straight through "
    "(apps.core.middleware.PagesOnly; the timeout middleware read the session on every API call). The everyday "
    "request body is validated without building the DRF serializer (~450 calls of field deep-copies). Responses "
    "are rendered by orjson. The append is one statement in autocommit (no BEGIN and COMMIT round trips; the chain "
    "lock is released by the commit inside it), and the predictions are inserted by a static statement whose plan "
    "PostgreSQL keeps (predictions_prediction_append): measured alone in one session, the append call took 0.85 ms "
    "with the generic function's dynamic INSERT and 0.55 ms with a static one.",
    "Session 2, server: gunicorn gthread workers (4 threads, keep-alive) instead of sync workers, which closed "
    "every connection and idled during the commit's WAL flush; and a 0.5 ms GIL switch interval, because a thread "
    "that holds the chain lock must get the GIL back to send COMMIT (py-spy showed threads queued on the lock "
    "while its holder waited up to the default 5 ms for the GIL). gunicorn sets TCP_NODELAY on its listening "
    "socket and Linux accepted sockets inherit it, so there is no Nagle / delayed-ACK stall.",
]


def _own_time(frame: Any, totals: dict[str, float]) -> None:
    key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
    totals[key] = totals.get(key, 0.0) + frame.total_self_time
    for child in frame.children:
        _own_time(child, totals)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_request", description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args(argv)
    env = clinpredict_prepare()
    os.environ.update(env)
    import django

    django.setup()
    from django.test import Client
    from pyinstrument import Profiler

    client = Client()
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    token = client.post("/o/token/", data={"grant_type": "client_credentials", "scope": "predictions:write"},
                        HTTP_AUTHORIZATION=f"Basic {basic}").json()["access_token"]

    def post() -> None:
        response = client.post("/api/v1/predictions", data=PREDICTION_BODY, content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 201, response.content  # noqa: S101 - a benchmark's sanity check

    for _ in range(50):
        post()  # warm: model loaded, connections open
    from django.db import connection

    sql: list[str] = []

    def record(execute: Any, statement: str, params: Any, many: bool, context: Any) -> Any:
        sql.append(statement[:160])
        return execute(statement, params, many, context)

    with connection.execute_wrapper(record):
        post()
    started = time.perf_counter()
    for _ in range(args.requests):
        post()
    unprofiled_ms = (time.perf_counter() - started) / args.requests * 1000
    # Function calls per request (cProfile): unlike times, this count does not depend on the machine's load.
    import cProfile
    import pstats

    counter = cProfile.Profile()
    counter.enable()
    for _ in range(100):
        post()
    counter.disable()
    calls_per_request = round(pstats.Stats(counter).total_calls / 100)  # type: ignore[attr-defined]
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(args.requests):
        post()
    profiler.stop()
    session = profiler.last_session
    totals: dict[str, float] = {}
    root = session.root_frame() if session else None
    if root is not None:
        _own_time(root, totals)
    top = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:TOP]
    duration = session.duration if session else 0.0
    tree = profiler.output_text(unicode=False, color=False, show_all=False, short_mode=True)
    write_result("profile_request", {
        "title": "Profile of one prediction request (pyinstrument)",
        "command": f"python -m benchmarks profile_request  (--requests {args.requests})",
        "tool": "pyinstrument 5 (statistical, 0.5 ms interval), in-process django.test.Client, production settings, "
                "PostgreSQL (clinpredict_bench), OAuth2 bearer token",
        "notes": "In-process: no HTTP server or socket, so this is the application's own cost per request. "
                 "'own ms/request' is time spent in the frame itself (not its callees), per request.",
        "findings": FINDINGS,
        "mean_ms_per_request_unprofiled": round(unprofiled_ms, 3),
        "python_function_calls_per_request": calls_per_request,
        "rows": [{"frame": name, "own_ms_per_request": round(seconds / args.requests * 1000, 3),
                  "share": f"{seconds / duration:.1%}" if duration else ""} for name, seconds in top],
        "queries_per_request": len(sql),
        "queries": sql,
        "load_average": load_average(),
        "call_tree": tree.splitlines()[:120],
    })
    print(f"{unprofiled_ms:.2f} ms/request unprofiled; {calls_per_request} function calls per request; "
          f"{len(sql)} queries:")
    print("\n".join(sql))
    print("\n".join(tree.splitlines()[:80]))


if __name__ == "__main__":
    main(sys.argv[1:])
