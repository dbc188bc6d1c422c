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


_FEATURES = {"glucose": {"value": 7.9, "unit": "mmol/L"}, "bmi": 33.6, "age": 50, "insulin": None}
PLAIN_BODIES = [
    {"use_case": "diabetes", "features": _FEATURES},
    {"use_case": "diabetes", "features": _FEATURES, "patient_id": "pt-0001"},
    {"features": {"x": [1, "a", True]}, "patient_id": "", "use_case": "u" * 64},
]
OTHER_BODIES = [
    {"use_case": " diabetes", "features": _FEATURES},  # trimmed by the serializer
    {"use_case": "diabète", "features": _FEATURES},  # not ASCII: the serializer checks the characters
    {"use_case": "dia\tbetes", "features": _FEATURES},
    {"use_case": "u" * 65, "features": _FEATURES},
    {"use_case": 7, "features": _FEATURES},
    {"use_case": "diabetes", "features": {}},
    {"use_case": "diabetes", "features": [1]},
    {"use_case": "diabetes", "patient_id": "pt-1"},  # features assembled from the patient
    {"use_case": "diabetes", "features": _FEATURES, "patient_id": "  "},
    {"use_case": "diabetes", "features": _FEATURES, "extra": 1},
    {"use_case": "diabetes", "features": _FEATURES, "patient_id": None},
    ["not", "a", "dict"],
    "diabetes",
]


def test_plain_input_is_exactly_what_the_serializer_validates() -> None:
    from apps.predictions.serializers import PredictionInputSerializer, prediction_input_plain

    for body in PLAIN_BODIES:
        serializer = PredictionInputSerializer(data=json.loads(json.dumps(body)))
        assert serializer.is_valid(), serializer.errors
        assert _as_json(prediction_input_plain(json.loads(json.dumps(body)))) == _as_json(serializer.validated_data)
    for body in OTHER_BODIES:  # left to the serializer, which trims, refuses or assembles them itself
        assert prediction_input_plain(json.loads(json.dumps(body))) is None
