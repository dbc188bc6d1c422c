"""A real production gunicorn for end-to-end tests: production settings, the repository's gunicorn.conf.py (so the
access log is the one every deployment writes: worker pid and X-Request-ID per line), PostgreSQL and Redis.

Which worker answered a request comes from that access log, by the request id the test sends. Nothing is added to
the application for the tests."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECRET_KEY = "production-server-test-secret-key-long-enough-0123456789"  # noqa: S105 - throwaway test database
ACCESS_LINE = re.compile(r"pid=<?(\d+)>? request_id=(\S+)")


@dataclass(frozen=True)
class Server:
    base: str
    access_log: Path
    server_log: Path
    process: "subprocess.Popen[bytes] | None" = field(default=None, compare=False, repr=False)  # the master

    def kill(self) -> None:
        """SIGKILL the master and its workers (the process group it leads): a replica lost mid-request, nothing
        gets to clean up or finish an answer."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30  # and until its workers, now orphans, are dead too (sockets closed)
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def workers_by_request(self, *, settle: float = 0.5) -> dict[str, str]:
        """request id -> pid of the worker that answered it, from the access log."""
        time.sleep(settle)  # let gunicorn write the last lines
        if not self.access_log.exists():
            return {}
        found = (ACCESS_LINE.search(line) for line in self.access_log.read_text().splitlines())
        return {match.group(2): match.group(1) for match in found if match}

    def log_tail(self, chars: int = 2000) -> str:
        return self.server_log.read_text()[-chars:]


def _group_alive(pgid: int) -> bool:
    """Whether a thread of a process of group `pgid` is still running, from /proc (Linux). Per thread: a killed
    gthread worker's main thread can be a zombie while its other threads, and its sockets, are still there."""
    for stat in Path("/proc").glob("[0-9]*/task/[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[2] == str(pgid) and fields[0] not in {"Z", "X"}:
            return True
    return False


def clean_environ() -> dict[str, str]:
    """This process's environment as a deployment would have it: without pytest's variables, and without
    DJANGO_ALLOW_ASYNC_UNSAFE, which the browser tests set in this process (tests/e2e/conftest.py) and which a
    production process rightly refuses to start with (Django's check async.E001)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}


def _healthz(base: str) -> None:
    request = urllib.request.Request(f"{base}/healthz", headers={"X-Request-ID": f"healthz-{uuid.uuid4().hex}"})
    try:
        urllib.request.urlopen(request, timeout=2).close()  # noqa: S310 - loopback
    except OSError:
        pass  # not listening yet


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url(settings_dict: Mapping[str, object], user: str | None = None) -> str:
    host, port = settings_dict["HOST"] or "127.0.0.1", settings_dict["PORT"] or 5432
    return f"postgres://{user or settings_dict['USER']}@{host}:{port}/{settings_dict['NAME']}"


def collect_static(static_root: Path) -> Path:
    """`collectstatic` into `static_root` with production settings (the manifest that pages need there); pass
    STATIC_ROOT=static_root to the server."""
    env = {**clean_environ(), "DJANGO_SETTINGS_MODULE": "clinpredict.settings.production", "SECRET_KEY": SECRET_KEY,
           "ALLOWED_HOSTS": "127.0.0.1", "STATIC_ROOT": str(static_root)}
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], env=env, cwd=REPO,
                   check=True, capture_output=True, timeout=300)
    return static_root


@contextmanager
def production_gunicorn(tmp_path: Path, *, env: Mapping[str, str], workers: int = 2,
                        start_timeout: float = 60.0) -> Iterator[Server]:
    """gunicorn with `workers` workers on a free loopback port; `env` adds to (and overrides) the production
    environment below (DATABASE_URL and CACHE_URL at least)."""
    full_env = clean_environ()
    full_env.update({
        "DJANGO_SETTINGS_MODULE": "clinpredict.settings.production",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "CLINPREDICT_VAR_DIR": str(tmp_path / "var"),
    })
    full_env.update(env)
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    access_log, server_log = tmp_path / "access.log", tmp_path / "gunicorn.log"
    with server_log.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "clinpredict.wsgi:application", "-c", "gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "60",
             "--worker-tmp-dir", "/dev/shm", "--access-logfile", str(access_log)],
            env=full_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", access_log, server_log, process)
    try:
        deadline = time.monotonic() + start_timeout
        # Ready when every worker has answered /healthz: workers load the app one by one, and a test that starts
        # while one is still loading would see only the other.
        while len(set(server.workers_by_request(settle=0).values())) < workers:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}: {server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start {workers} workers: {server.log_tail()}")
            with ThreadPoolExecutor(2 * workers) as pool:
                list(pool.map(lambda _: _healthz(server.base), range(2 * workers)))
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the master and its workers: the group this helper started
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
