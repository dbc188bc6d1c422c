"""The floor app's views: `/score` runs the ONNX session on the prediction body and answers the probability;
`/score-durable` also inserts the body in one autocommit statement (one durable COMMIT) before answering."""

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

MMOL_TO_MG_DL = 18.016  # glucose, the one unit the benchmark body converts (as benchmarks/servers.py mlflow_body)


@cache
def _model() -> tuple[Any, str, str, tuple[str, ...]]:
    import onnxruntime as ort

    run = Path(settings.FLOOR_RUN_DIR)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as ClinPredict serves it (ONNX_INTRA_OP_THREADS)
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(run / "model.onnx"), options, providers=["CPUExecutionProvider"])
    manifest = json.loads((run / "manifest.json").read_text())
    return session, manifest["input_name"], manifest["output_name"], tuple(manifest["feature_order"])


def _value(raw: Any) -> float:
    if raw is None:
        return math.nan
    if isinstance(raw, dict):
        return float(raw["value"]) * (MMOL_TO_MG_DL if raw.get("unit") == "mmol/L" else 1.0)
    return float(raw)


def _probability(body: bytes) -> float:
    session, input_name, output_name, order = _model()
    features = json.loads(body)["features"]
    x = np.asarray([[_value(features.get(name)) for name in order]], dtype=np.float32)
    (probabilities,) = session.run([output_name], {input_name: x})
    return float(np.asarray(probabilities)[0, 1])


@csrf_exempt
def score(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"probability": _probability(request.body)}, status=201)


@csrf_exempt
def score_durable(request: HttpRequest) -> HttpResponse:
    probability = _probability(request.body)
    with connection.cursor() as cursor:  # autocommit: the INSERT is its own transaction, flushed before it returns
        cursor.execute("INSERT INTO floor_write (body, probability) VALUES (%s::jsonb, %s)",
                       [request.body.decode(), probability])
    return JsonResponse({"probability": probability}, status=201)


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("score", score), path("score-durable", score_durable), path("healthz", healthz)]
