"""The API's hand-written prediction JSON (`prediction_represent`, the hot path) is exactly what the DRF
serializer that defines the OpenAPI schema gives: same keys, order, types and values."""

import json
from typing import Any

from apps.predictions.models import Prediction
from apps.predictions.serializers import PredictionSerializer, prediction_represent


def _as_json(data: Any) -> str:
    return json.dumps(data)  # key order and JSON types matter, not Python types only


def test_represent_equals_the_serializer_for_stored_predictions(champion: Any, api_client: Any,
                                                                valid_features: dict) -> None:
    client = api_client("predictions:write")
    partial = {**valid_features, "insulin": None, "skin_thickness": None}  # imputed values and null explanation values
    body = json.dumps([{"use_case": "diabetes", "features": valid_features, "patient_id": "pt-represent"},
                       {"use_case": "diabetes", "features": partial}])
    response = client.post("/api/v1/predictions", data=body, content_type="application/json")
    assert response.status_code == 201, response.content

    stored = list(Prediction.objects.order_by("audit_seq"))
    assert len(stored) == 2 and stored[1].imputed
    for prediction in stored:
        assert _as_json(prediction_represent(prediction)) == _as_json(PredictionSerializer(prediction).data)
    # And the response itself is what the serializer gives for the stored rows.
    assert response.json() == [json.loads(_as_json(PredictionSerializer(p).data)) for p in stored]
