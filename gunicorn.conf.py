"""gunicorn hooks for Prometheus' multiprocess mode (read from the working directory, or with `-c gunicorn.conf.py`).

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metric samples to files in that directory and /metrics
(apps/monitoring/views.py) sums them, so one scrape covers all workers. The directory must start empty: files of an
earlier server would be added to this one's counts. When a worker exits, its live gauges are dropped (its counters
stay in the sums, as they should). Without PROMETHEUS_MULTIPROC_DIR these hooks do nothing.
"""

import os
import sys
from pathlib import Path
from typing import Any


def on_starting(server: Any) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# Threaded workers with HTTP keep-alive. A sync worker closes the connection after every response, so every request
# of an EHR or batch client pays a new TCP connection, and the worker sits idle while PostgreSQL flushes the audit
# commit. gthread keeps connections open (keepalive seconds) and lets a worker's other threads use the CPU meanwhile.
# Each thread has its own database connection (CONN_MAX_AGE), so the pool is workers x threads connections.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

# A thread that gets its answer from PostgreSQL while holding the audit-chain lock must get the GIL back quickly to
# send COMMIT; with CPython's default 5 ms switch interval it can wait behind another thread's Python work for up to
# 5 ms while every other writer queues on the lock. 0.5 ms keeps that hand-over short (forked workers inherit it).
sys.setswitchinterval(float(os.environ.get("GUNICORN_SWITCH_INTERVAL", "0.0005")))

# Access log on every worker, in every deployment (Makefile `serve`, the image's CMD, compose, Kubernetes): one line per
# request with the worker's pid and the X-Request-ID that the app's logs and the response carry (apps/core/
# middleware.py), so a request is followed from the proxy through the worker to its audit event. The path without
# its query string (%(U)s): a query could carry patient values, which never go to logs.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
access_log_format = os.environ.get(
    "GUNICORN_ACCESS_LOG_FORMAT",
    '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms pid=%(p)s request_id=%({x-request-id}o)s',
)

# gunicorn's control socket (`gunicornc`, in the home directory) is off: nothing in a deployment uses it, and one
# fewer way to steer the server is one fewer thing to secure. GUNICORN_CONTROL_SOCKET=true turns it back on.
control_socket_disable = os.environ.get("GUNICORN_CONTROL_SOCKET", "false").lower() != "true"
