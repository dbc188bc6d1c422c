"""Fault-injection fixtures: a private PostgreSQL cluster (initdb on a free loopback port, run as the postgres OS
user) that a test may stop and start at will, and a production-like gunicorn (2 workers) serving against it."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@dataclass
class PrivatePostgres:
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/clinpredict"

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), *args), check=True,
                       capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-l", str(self.root / "postgres.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")

    def psql(self, sql: str) -> str:
        out = subprocess.run(["psql", self.url, "-tAc", sql], capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's tmp_path: that is private to root (0700), and the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="clinpredict-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    pg = PrivatePostgres(root, free_port())
    subprocess.run(_as_postgres(str(PG_BIN / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
                                "--no-sync", "-E", "UTF8"), check=True, capture_output=True, timeout=120)
    pg.start()
    subprocess.run(["psql", f"postgres://postgres@127.0.0.1:{pg.port}/postgres", "-qc", "CREATE DATABASE clinpredict"],
                   check=True, capture_output=True, timeout=30)
    try:
        yield pg
    finally:
        subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Served:
    base: str
    env: dict[str, str]
    client_id: str = "faults-client"
    client_secret: str = "faults-secret-123456"

    def token(self, scope: str = "predictions:write predictions:read") -> str:
        import base64
        import json

        request = urllib.request.Request(
            f"{self.base}/o/token/", data=f"grant_type=client_credentials&scope={scope}".encode(),
            headers={"Authorization": "Basic " + base64.b64encode(
                f"{self.client_id}:{self.client_secret}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return str(json.loads(response.read())["access_token"])


@pytest.fixture
def served_on_private_postgres(private_postgres: PrivatePostgres, tmp_path: Path, trained_dir: Path,
                               pima_csv: Path) -> Iterator[Served]:
    var = tmp_path / "var"
    shutil.copytree(trained_dir, var / "runs" / "diabetes-seed42")
    (var / "data").mkdir(parents=True)
    shutil.copy(pima_csv, var / "data" / "diabetes.csv")
    env = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "clinpredict.settings.production", "SECRET_KEY": "f" * 64,
        "ALLOWED_HOSTS": "127.0.0.1,localhost", "SECURE_SSL_REDIRECT": "false", "DATABASE_URL": private_postgres.url,
        "CLINPREDICT_VAR_DIR": str(var), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CLINPREDICT_DEMO_PASSWORD": "faults-password-123", "CLINPREDICT_DEMO_CLIENT_ID": "faults-client",
        "CLINPREDICT_DEMO_CLIENT_SECRET": "faults-secret-123456", "CLINPREDICT_API_THROTTLE_RATE": "100000/min",
        "CACHE_URL": "redis://127.0.0.1:6379/14", "CACHE_KEY_PREFIX": f"faults-{private_postgres.port}",
    })
    # As a deployment does it (docs/security.md "Database roles"): the superuser creates the roles, the owner
    # migrates and grants, and everything else, the server included, runs as the application role.
    as_owner = private_postgres.url.replace("postgres@", "clinpredict_owner@")
    env["DATABASE_URL"] = private_postgres.url.replace("postgres@", "clinpredict_app@")
    manage = [sys.executable, str(REPO / "manage.py")]
    roles = ["--owner", "clinpredict_owner", "--app", "clinpredict_app"]
    for step, database_url in (
            (["setup_database_roles", *roles], private_postgres.url),
            (["migrate", "--noinput"], as_owner), (["grant_app_role", "--app", "clinpredict_app"], as_owner),
            (["bootstrap_demo"], env["DATABASE_URL"])):
        result = subprocess.run(manage + step, env={**env, "DATABASE_URL": database_url}, cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "clinpredict.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--timeout", "30"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310
                break
            except OSError:
                time.sleep(0.2)
        yield Served(base, env)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def post_prediction(base: str, token: str, body: bytes) -> tuple[int, float]:
    request = urllib.request.Request(f"{base}/api/v1/predictions", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started


@pytest.fixture
def prediction_body() -> bytes:
    import json

    return json.dumps({"use_case": "diabetes", "patient_id": "fault-1", "features": {
        "pregnancies": 2, "glucose": 140, "blood_pressure": 72, "skin_thickness": None, "insulin": None,
        "bmi": 33.6, "pedigree": 0.5, "age": 50}}).encode()


