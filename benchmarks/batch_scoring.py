"""Batch scoring through the API: N patients posted to `POST /api/v1/predictions` in batches of 1,000 (the API's
batch limit) under `make serve` (2 workers, PostgreSQL), from 2 client threads so both workers score. Every
prediction is validated, explained, stored and audited (one transaction per batch). Reports audited
predictions/s, and checks the audit events written during the run against the predictions returned."""

import argparse
import json
import sys
import threading
import time

from .common import write_result
from .servers import (
    FEATURES,
    SERVE_COMMAND,
    NoDelayConnection,
    clinpredict_prepare,
    clinpredict_served,
    clinpredict_token,
    load_average,
    psql,
)

BATCH = 1000
THREADS = 2


def _body(start: int, size: int) -> bytes:
    items = [{"use_case": "diabetes", "patient_id": f"bench-{start + i}",
              "features": {**FEATURES, "age": 20 + (start + i) % 60, "bmi": 20 + (start + i) % 25}}
             for i in range(size)]
    return json.dumps(items).encode()


def _audit_count() -> int:
    return int(psql("SELECT count(*) FROM audit_auditevent WHERE action = 'prediction.create'"))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_scoring", description=__doc__)
    parser.add_argument("--patients", type=int, default=100_000)
    args = parser.parse_args(argv)
    env = clinpredict_prepare()
    batches = [(start, min(BATCH, args.patients - start)) for start in range(0, args.patients, BATCH)]
    bodies = [_body(start, size) for start, size in batches]
    returned: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    load_before = load_average()
    with clinpredict_served(env, "batch-serve.log") as server:
        headers = {"Authorization": f"Bearer {clinpredict_token(server, 'predictions:write')}",
                   "Content-Type": "application/json"}
        warm = NoDelayConnection(server.host, server.port, timeout=120)
        for _ in range(THREADS * 2):
            warm.request("POST", "/api/v1/predictions", _body(0, 10), headers)
            warm.getresponse().read()
        before = _audit_count()
        queue = list(range(len(bodies)))

        def worker() -> None:
            conn = NoDelayConnection(server.host, server.port, timeout=300)
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop()
                conn.request("POST", "/api/v1/predictions", bodies[index], headers)
                response = conn.getresponse()
                payload = response.read()
                with lock:
                    if response.status == 201:
                        returned.append(len(json.loads(payload)))
                    else:
                        failures.append(f"{response.status}: {payload[:200]!r}")

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        audited = _audit_count() - before
    predictions = sum(returned)
    rate = predictions / seconds
    write_result("batch_scoring", {
        "title": "Batch scoring: audited predictions per second through the API",
        "command": f"python -m benchmarks batch_scoring  (--patients {args.patients})",
        "tool": f"Python http.client (TCP_NODELAY), {THREADS} threads posting batches of {BATCH} to {SERVE_COMMAND}",
        "notes": "Target: >= 2,000 audited predictions/s. Client and server share the machine's 2 cores.",
        "rows": [{"patients": args.patients, "batches": len(batches), "seconds": round(seconds, 2),
                  "predictions_returned": predictions, "audit_events_written": audited,
                  "audited_predictions_per_s": round(rate, 1), "failed_batches": len(failures),
                  "target_met": rate >= 2000 and audited == predictions and not failures}],
        "failures": failures[:5],
        "load_average_before": load_before,
        "load_average_after": load_average(),
    })
    print(f"{predictions} predictions ({audited} audit events) in {seconds:.1f} s: {rate:.0f}/s; "
          f"{len(failures)} failed batches")


if __name__ == "__main__":
    main(sys.argv[1:])
