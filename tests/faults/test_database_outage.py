"""PostgreSQL stopped and restarted under a load of predictions, against a real gunicorn with 2 workers:
fast 503s while it is down, automatic recovery when it returns, and every 2xx has exactly one audit event."""

import threading
import time
from typing import Any

from .conftest import post_prediction

# A ceiling that tells a hang from an answer on a busy machine; how fast a 503 comes is for benchmarks, not tests.
HANG_CEILING_SECONDS = 30.0


def test_database_outage_under_load(served_on_private_postgres: Any, private_postgres: Any,
                                    prediction_body: bytes) -> None:
    served = served_on_private_postgres
    token = served.token()
    results: list[tuple[float, int, float]] = []
    stop_at = time.monotonic() + 12
    t0 = time.monotonic()

    def load() -> None:
        while time.monotonic() < stop_at:
            status, seconds = post_prediction(served.base, token, prediction_body)
            results.append((time.monotonic() - t0, status, seconds))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(3)
    private_postgres.stop()
    down_from = time.monotonic() - t0
    time.sleep(3)
    start_called = time.monotonic() - t0  # the server may accept connections before `pg_ctl start -w` returns
    private_postgres.start()
    up_from = time.monotonic() - t0
    for worker in workers:
        worker.join()

    statuses = [status for _, status, _ in results]
    ok = statuses.count(201)
    during = [(status, seconds) for at, status, seconds in results if down_from + 0.5 < at < start_called]
    after = [status for at, status, _ in results if at > up_from + 3]
    audit_events = int(private_postgres.psql("SELECT count(*) FROM audit_auditevent WHERE action='prediction.create'"))
    predictions = int(private_postgres.psql("SELECT count(*) FROM predictions_prediction"))
    print(f"requests {len(results)}: 201={ok} 503={statuses.count(503)} other={set(statuses) - {201, 503}}; "
          f"audit events {audit_events}, predictions {predictions}")

    assert set(statuses) <= {201, 503}, "only success or a clean 503, never a 500 or a dropped connection"
    assert during and all(status == 503 for status, _ in during), (
        f"requests while the database is down get 503, got {sorted({s for s, _ in during})}")
    assert max(seconds for _, seconds in during) < HANG_CEILING_SECONDS, "and they fail instead of hanging"
    assert after and after.count(201) == len(after), "requests succeed again once the database is back"
    assert ok == audit_events == predictions, "every 2xx has exactly one audit event and one prediction"
