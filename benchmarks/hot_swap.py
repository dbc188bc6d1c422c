"""Hot swap: from the end of `manage.py promote_model` to the moment every gunicorn worker of `make serve` answers
with the new version (no restart). 4 client threads post predictions back to back (both sync workers stay busy);
the swap time is when the last request answered by the old version had started, counted from the promotion's end
(every request that starts after that is answered by the new version). Target: <= 5 s. Runs `--swaps` promotions,
alternating between two registered versions."""

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from .common import REPO, write_result
from .servers import (
    PREDICTION_BODY,
    SERVE_COMMAND,
    WORK,
    NoDelayConnection,
    Server,
    clinpredict_prepare,
    clinpredict_served,
    clinpredict_token,
    load_average,
    psql,
)

CHAMPION_SQL = "SELECT version FROM registry_modelversion WHERE use_case = 'diabetes' AND status = 'champion'"


@dataclass(frozen=True)
class Answer:
    started: float
    model_version: str


def _second_version(env: dict[str, str]) -> None:
    """A second registered diabetes version (seed 43), so there is something to swap to."""
    if int(psql("SELECT count(*) FROM registry_modelversion WHERE use_case = 'diabetes'")) >= 2:
        return
    from ml.pipeline import train_run
    from ml.schema import UseCaseSpec
    from ml.training import TrainConfig

    run = WORK / "var" / "runs" / "diabetes-seed43"
    if not (run / "manifest.json").exists():
        train_run(spec=UseCaseSpec.load(REPO / "ml" / "specs" / "diabetes.yaml"),
                  data_path=WORK / "var" / "data" / "diabetes.csv", out_dir=run, seed=43, config=TrainConfig.fast(),
                  tracking=False)
    subprocess.run([sys.executable, "manage.py", "register_model", "--from", str(run), "--actor", "benchmark"],
                   env=env, cwd=REPO, check=True, capture_output=True)


def _hammer(server: Server, headers: dict[str, str], answers: list[Answer], stop: threading.Event) -> None:
    conn = NoDelayConnection(server.host, server.port, timeout=60)
    while not stop.is_set():
        started = time.monotonic()
        conn.request("POST", "/api/v1/predictions", PREDICTION_BODY, headers)
        response = conn.getresponse()
        body = json.loads(response.read())
        answers.append(Answer(started, str(body.get("model_version", response.status))))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hot_swap", description=__doc__)
    parser.add_argument("--swaps", type=int, default=3)
    args = parser.parse_args(argv)
    env = clinpredict_prepare()
    _second_version(env)
    rows: list[dict[str, Any]] = []
    original = psql(CHAMPION_SQL)
    with clinpredict_served(env, "hot-swap-serve.log") as server:
        headers = {"Authorization": f"Bearer {clinpredict_token(server, 'predictions:write')}",
                   "Content-Type": "application/json"}
        for _ in range(args.swaps):
            target = psql("SELECT version FROM registry_modelversion WHERE use_case = 'diabetes' AND status <> "
                          "'champion' ORDER BY version DESC LIMIT 1")
            answers: list[Answer] = []
            stop = threading.Event()
            threads = [threading.Thread(target=_hammer, args=(server, headers, answers, stop)) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(3)
            command_started = time.monotonic()
            result = subprocess.run([sys.executable, "manage.py", "promote_model", "--use-case", "diabetes",
                                     "--version", target, "--reason", "hot-swap benchmark", "--actor", "benchmark"],
                                    env=env, cwd=REPO, capture_output=True, text=True, check=False)
            promoted = time.monotonic()
            time.sleep(8)
            stop.set()
            for thread in threads:
                thread.join()
            if result.returncode != 0:
                sys.exit(f"promote_model failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")
            new_label = f"diabetes@{target}"
            old_starts = [a.started for a in answers if a.model_version != new_label]
            last_old = max(old_starts) if old_starts else promoted
            swap = max(0.0, last_old - promoted)
            rows.append({"to": new_label, "swap_seconds": round(swap, 3),
                         "promote_command_seconds": round(promoted - command_started, 2),
                         "swap_seconds_from_command_start": round(max(0.0, last_old - command_started), 3),
                         "requests_after_promotion": sum(1 for a in answers if a.started >= promoted),
                         "old_version_answers_after_promotion": sum(1 for s in old_starts if s >= promoted),
                         "target_met": swap <= 5.0})
    if psql(CHAMPION_SQL) != original:
        # Leave the champion the other benchmarks (and mlflow models serve) use: the seed-42 run.
        subprocess.run([sys.executable, "manage.py", "promote_model", "--use-case", "diabetes", "--version", original,
                        "--reason", "hot-swap benchmark: restore", "--actor", "benchmark"], env=env, cwd=REPO,
                       check=True, capture_output=True)
    write_result("hot_swap", {
        "title": "Hot swap: promotion to every worker answering with the new version",
        "command": f"python -m benchmarks hot_swap  (--swaps {args.swaps})",
        "tool": f"manage.py promote_model while 4 Python http.client threads post to {SERVE_COMMAND}",
        "notes": "Target: <= 5 s. Workers look the champion up at most every CLINPREDICT_CHAMPION_CACHE_SECONDS "
                 "(default 2 s), so a swap takes at most that plus one request. The promotion's own process start-up "
                 "(~1-2 s of Django) is not counted in swap_seconds: that clock starts when promote_model has "
                 "committed and exited (the commit comes a little earlier, so a swap can read 0); "
                 "swap_seconds_from_command_start counts from launching the command, an upper bound.",
        "rows": rows,
        "load_average": load_average(),
    })
    print(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
