"""The servers the HTTP benchmarks measure, started and stopped here.

- ClinPredict exactly as `make serve` starts it (gunicorn, WEB_CONCURRENCY=2, production settings) on a dedicated
  PostgreSQL database (`clinpredict_bench` on the shared server), migrated and bootstrapped with a trained champion
  and the demo OAuth2 client-credentials app.
- `mlflow models serve` (2 workers, as shipped) with the very same fitted pipeline (the champion's model.joblib),
  from a separate venv (.venv/bench-mlflow, created from the hashed lock requirements/bench-mlflow.txt on first use):
  full mlflow is never installed into .venv.

Both are process groups this module starts; they are stopped by their own group id.
"""

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .common import REPO

PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
BENCH_DB = os.environ.get("BENCH_DATABASE", "clinpredict_bench")
WORK = REPO / "var" / "bench"
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-client-secret-0123456789"  # noqa: S105 - a benchmark credential in a throwaway database
MLFLOW_VENV = REPO / ".venv" / "bench-mlflow"
# The body both servers score: ClinPredict gets the API request (one unit to convert); MLflow gets the same
# patient as the canonical float row it needs (it validates nothing and converts nothing).
FEATURES = {"pregnancies": 2, "glucose": {"value": 7.9, "unit": "mmol/L"}, "blood_pressure": 72, "skin_thickness": 29,
            "insulin": 94, "bmi": 33.6, "pedigree": 0.627, "age": 50}
PREDICTION_BODY = json.dumps({"use_case": "diabetes", "features": FEATURES}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def psql(sql: str, database: str = BENCH_DB) -> str:
    out = subprocess.run(["psql", f"{PG}/{database}", "-tAc", sql], capture_output=True, text=True, check=True,
                         timeout=120)
    return out.stdout.strip()


def _trained_run() -> Path:
    """One trained diabetes run (fast settings, seed 42) and its CSV, made once under var/bench/."""
    run = WORK / "var" / "runs" / "diabetes-seed42"
    csv = WORK / "var" / "data" / "diabetes.csv"
    if not (run / "manifest.json").exists():
        from ml.datasets import write_pima_csv
        from ml.pipeline import train_run
        from ml.schema import UseCaseSpec
        from ml.training import TrainConfig

        csv.parent.mkdir(parents=True, exist_ok=True)
        write_pima_csv(csv)
        shutil.rmtree(run, ignore_errors=True)
        train_run(spec=UseCaseSpec.load(REPO / "ml" / "specs" / "diabetes.yaml"), data_path=csv, out_dir=run,
                  seed=42, config=TrainConfig.fast(), tracking=False)
    return run


def clinpredict_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.pop("CELERY_BROKER_URL", None)
    env.update({
        "DJANGO_SETTINGS_MODULE": "clinpredict.settings.production",
        "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789-abcdefghijklmnop",
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"{PG}/{BENCH_DB}",
        "CLINPREDICT_VAR_DIR": str(WORK / "var"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "CLINPREDICT_DEMO_PASSWORD": "bench-password-0123456789",
        "CLINPREDICT_DEMO_CLIENT_ID": CLIENT_ID,
        "CLINPREDICT_DEMO_CLIENT_SECRET": CLIENT_SECRET,
        # The throttle guards a real deployment; the benchmark measures the server, not the rate limit.
        "CLINPREDICT_API_THROTTLE_RATE": "10000000/min",
        # Production shares the throttle counters, token lockouts and CDS Hooks jti marks in Redis.
        "CACHE_URL": os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/2"), "CACHE_KEY_PREFIX": "bench",
    })
    return env


def clinpredict_prepare() -> dict[str, str]:
    """Create (if missing), migrate and bootstrap the benchmark database; safe to rerun."""
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{BENCH_DB}'",  # noqa: S608 - our constant
                  database="postgres")
    if not exists:
        psql(f"CREATE DATABASE {BENCH_DB}", database="postgres")
    _trained_run()
    env = clinpredict_env()
    # As a deployment runs (docs/security.md "Database roles"): the superuser creates the roles, the owner migrates
    # and grants, and the servers (and the demo bootstrap) connect as the application role.
    owner, app = f"{BENCH_DB}_owner", f"{BENCH_DB}_app"
    as_owner = f"{PG.replace('postgres@', f'{owner}@')}/{BENCH_DB}"
    env["DATABASE_URL"] = f"{PG.replace('postgres@', f'{app}@')}/{BENCH_DB}"
    for step, database_url in ((["setup_database_roles", "--owner", owner, "--app", app], f"{PG}/{BENCH_DB}"),
                               (["migrate", "--noinput"], as_owner), (["grant_app_role", "--app", app], as_owner),
                               (["bootstrap_demo"], env["DATABASE_URL"])):
        result = subprocess.run([sys.executable, "manage.py", *step], env={**env, "DATABASE_URL": database_url},
                                cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            sys.exit(f"manage.py {' '.join(step)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return env


def _wait(url: str, process: subprocess.Popen[bytes], seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) before {url} answered; see its log")
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - 127.0.0.1 only
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)  # the group this module started: master and its workers
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    log: Path
    pgid: int = 0  # the server's process group (master and workers)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"


SERVE_COMMAND = "make -o .venv/.ml-installed serve PORT=<port> WEB_CONCURRENCY=2"


@contextmanager
def clinpredict_served(env: dict[str, str], log_name: str = "clinpredict-serve.log",
                       workers: int = 2) -> Iterator[Server]:
    """`make serve` (gunicorn, 2 workers, production settings); `-o` keeps make from reinstalling requirements."""
    port = free_port()
    log = WORK / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(["make", "-o", ".venv/.ml-installed", "serve", f"PORT={port}",
                                    f"WEB_CONCURRENCY={workers}"],
                                   env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait(f"http://127.0.0.1:{port}/healthz", process)
            yield Server("127.0.0.1", port, log, process.pid)
        finally:
            _stop(process)


FLOOR_COMMAND = ("gunicorn benchmarks.floor_app.wsgi:application -c gunicorn.conf.py --bind 127.0.0.1:<port> "
                 "--workers 2 --worker-tmp-dir /dev/shm")


@contextmanager
def floor_served(env: dict[str, str], log_name: str = "floor-serve.log", workers: int = 2) -> Iterator[Server]:
    """The bare Django app of benchmarks/floor_app under the same gunicorn configuration as `make serve`
    (gunicorn.conf.py: gthread workers, threads, keep-alive, switch interval, access log)."""
    port = free_port()
    log = WORK / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "benchmarks.floor_app.wsgi:application", "-c",
             "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--worker-tmp-dir",
             "/dev/shm"],  # noqa: S108 - as the Makefile's serve target
            env={**env, "DJANGO_SETTINGS_MODULE": "benchmarks.floor_app.settings"}, cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait(f"http://127.0.0.1:{port}/healthz", process)
            yield Server("127.0.0.1", port, log, process.pid)
        finally:
            _stop(process)


def clinpredict_token(server: Server, scope: str = "predictions:write predictions:read") -> str:
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1 only
        f"{server.base}/o/token/", data=f"grant_type=client_credentials&scope={scope}".encode(),
        headers={"Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return str(json.loads(response.read())["access_token"])


def mlflow_python() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    stamp = MLFLOW_VENV / ".installed"
    locks = [REPO / "requirements" / "pip.txt", REPO / "requirements" / "bench-mlflow.txt"]  # `make lock`
    if not stamp.exists() or stamp.stat().st_mtime < max(lock.stat().st_mtime for lock in locks):
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        for lock in locks:  # pip first, then the rest with it; each file hash-checked
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--require-hashes", "-r", str(lock)],
                           check=True)
        stamp.touch()
    return python


_SAVE_MODEL = """
import sys, joblib, mlflow.sklearn
fitted = joblib.load(sys.argv[1])
mlflow.sklearn.save_model(fitted, sys.argv[2], serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba",
                          pip_requirements=["scikit-learn", "xgboost-cpu"])
"""


def mlflow_model() -> Path:
    """The champion's fitted pipeline (model.joblib of the same run) as an MLflow model folder."""
    target = WORK / "mlflow-model"
    source = _trained_run() / "model.joblib"
    if not (target / "MLmodel").exists():
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([str(mlflow_python()), "-c", _SAVE_MODEL, str(source), str(target)], check=True,
                       env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    return target


MLFLOW_COMMAND = "mlflow models serve -m var/bench/mlflow-model -h 127.0.0.1 -p <port> -w 2 --env-manager local"


@contextmanager
def mlflow_served(loop: str = "asyncio", log_name: str = "mlflow-serve.log") -> Iterator[Server]:
    """`loop`: "asyncio" is what a plain `pip install mlflow` runs (uvloop is not among its dependencies);
    "uvloop" is its best case (uvicorn reads UVICORN_LOOP)."""
    model = mlflow_model()
    port = free_port()
    log = WORK / log_name
    # As after `source .venv/bench-mlflow/bin/activate`: mlflow starts `uvicorn` from PATH.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "UVICORN_LOOP": loop,
           "PATH": f"{MLFLOW_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(model), "-h", "127.0.0.1",
             "-p", str(port), "-w", "2", "--env-manager", "local"],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait(f"http://127.0.0.1:{port}/ping", process)
            yield Server("127.0.0.1", port, log, process.pid)
        finally:
            _stop(process)


def mlflow_body() -> bytes:
    """The same patient as a canonical row in the model's feature order (glucose converted to mg/dL here, since
    `mlflow models serve` converts nothing)."""
    manifest = json.loads((_trained_run() / "manifest.json").read_text())
    canonical = {**FEATURES, "glucose": 7.9 * 18.016}
    return json.dumps({"inputs": [[float(canonical[name]) for name in manifest["feature_order"]]]}).encode()


class NoDelayConnection(http.client.HTTPConnection):
    """http.client with TCP_NODELAY on every socket it opens (it reopens one when the server closes)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pids: set[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process (from /proc)."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def group_pids(pgid: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.add(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return pids


def database_backend_pids(database: str = BENCH_DB) -> set[int]:
    out = psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()")  # noqa: S608
    return {int(pid) for pid in out.split()}


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def one_connection(server: Server, path: str, body: bytes, headers: dict[str, str], *, requests: int = 2000,
                   warmup: int = 100, bodies: list[bytes] | None = None,
                   header_list: list[dict[str, str]] | None = None) -> dict[str, float | int]:
    """Sequential requests from one client: p50/p90/p99/max in ms over `requests` after `warmup`."""
    conn = NoDelayConnection(server.host, server.port, timeout=60)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    for i in range(warmup + requests):
        request_body = bodies[i] if bodies else body
        request_headers = header_list[i] if header_list else headers
        started = time.perf_counter()
        conn.request("POST", path, request_body, request_headers)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        if i >= warmup:
            latencies.append(elapsed * 1000)
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
    conn.close()
    latencies.sort()
    return {"requests": requests, "p50_ms": round(percentile(latencies, 50), 3),
            "p90_ms": round(percentile(latencies, 90), 3), "p99_ms": round(percentile(latencies, 99), 3),
            "max_ms": round(latencies[-1], 3), "statuses": statuses}  # type: ignore[dict-item]
