"""Daily inference summaries in MLflow, next to the model's training runs.

Each model version gets one run, `inference <label>` (tags `clinpredict.kind=inference`, `clinpredict.inference_of=
<label>` and the training run id), in the experiment `ml train` logs to (`clinpredict-<use_case>`). Each day's figures
are logged at step = the day's ordinal (`date.toordinal()`) with the day's midnight (UTC) as timestamp, so MLflow
charts them as time series per version. Logging a day again adds the same step once more; MLflow shows the latest.

mlflow is imported lazily: only the worker that runs the daily summary needs it. Tracking URI:
settings.MLFLOW_TRACKING_URI unless one is passed in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from django.conf import settings

from ml.tracking import registered_model_name

INFERENCE_KIND = "inference"


def _client(tracking_uri: str) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        # The same place ml.tracking uses for a sqlite store: beside the database, not ./mlruns.
        artifact_location = (Path(tracking_uri.removeprefix("sqlite:///")).parent.resolve() / "mlartifacts"
                             / name).as_uri()
    return str(client.create_experiment(name, artifact_location=artifact_location))


def inference_run_id(client: Any, experiment_id: str, *, model_label: str, training_run_id: str) -> str:
    """The version's inference run, created on first use."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`clinpredict.inference_of` = '{model_label}'",
                               max_results=1)
    if found:
        return str(found[0].info.run_id)
    tags = {"clinpredict.kind": INFERENCE_KIND, "clinpredict.inference_of": model_label,
            "clinpredict.training_run_id": training_run_id or "", "mlflow.note.content":
                f"Daily inference summary of {model_label}: volume, mean risk, positive rate, drift against the "
                f"training reference profile, realised performance from recorded outcomes (step = day ordinal)."}
    return str(client.create_run(experiment_id, run_name=f"{INFERENCE_KIND} {model_label}", tags=tags).info.run_id)


def daily_metrics_log(*, use_case: str, model_label: str, training_run_id: str, day: date,
                      metrics: Mapping[str, float | None], tracking_uri: str | None = None) -> str:
    """Log one day's figures (None and non-finite values are left out) and return the run id. Raises on any MLflow
    error; the caller records it."""
    from mlflow.entities import Metric

    uri = tracking_uri or settings.MLFLOW_TRACKING_URI
    client = _client(uri)
    experiment_id = _experiment_id(client, registered_model_name(use_case), uri)
    run_id = inference_run_id(client, experiment_id, model_label=model_label, training_run_id=training_run_id)
    timestamp = int(datetime.combine(day, time.min, tzinfo=UTC).timestamp() * 1000)
    batch = [Metric(key, float(value), timestamp, day.toordinal()) for key, value in sorted(metrics.items())
             if value is not None and math.isfinite(float(value))]
    for start in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[start:start + 500])
    client.set_terminated(run_id)
    return run_id
