"""Concurrent writers through the real prediction service, each thread on its own database connection."""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connection

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.predictions.models import Prediction
from apps.predictions.services import PredictionRequest, prediction_create

WRITERS = 50


def test_fifty_concurrent_predictions_keep_one_contiguous_chain(transactional_db: None, champion: Any,
                                                                 valid_features: dict[str, Any]) -> None:
    events_before = AuditEvent.objects.count()
    start = threading.Barrier(WRITERS)

    def predict(i: int) -> int:
        try:
            start.wait(timeout=60)
            prediction = prediction_create(
                request=PredictionRequest("diabetes", valid_features, f"patient-{i}"),
                actor=Actor(type="user", id=f"clinician-{i}"), channel=Prediction.Channel.API)
            return prediction.audit_seq
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        seqs = list(pool.map(predict, range(WRITERS)))

    all_seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert all_seqs == list(range(1, events_before + WRITERS + 1))  # contiguous, no gap, no duplicate
    assert sorted(seqs) == list(range(events_before + 1, events_before + WRITERS + 1))
    result = audit_chain_verify()
    assert result.ok and result.count == events_before + WRITERS
    prediction_events = AuditEvent.objects.filter(action="prediction.create")
    assert Prediction.objects.count() == prediction_events.count() == WRITERS
    assert sorted(Prediction.objects.values_list("audit_seq", flat=True)) == sorted(
        prediction_events.values_list("seq", flat=True))
    assert sorted(prediction_events.values_list("patient_ref", flat=True)) == sorted(
        f"patient-{i}" for i in range(WRITERS))
