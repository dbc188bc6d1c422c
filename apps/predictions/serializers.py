from collections.abc import Iterable
from typing import Any

from rest_framework import serializers

from apps.core.validators import validate_identifier

from .models import Prediction


class StrictSerializer(serializers.Serializer):
    """Rejects keys the API does not know, naming them, instead of silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"Unknown field. Accepted: {', '.join(self.fields)}."] for key in unknown}
                )
        return super().to_internal_value(data)


class PredictionInputSerializer(StrictSerializer):
    use_case = serializers.CharField(max_length=64, validators=[validate_identifier])
    patient_id = serializers.CharField(
        max_length=128, required=False, allow_blank=True, default="", validators=[validate_identifier],
        help_text="The patient's identifier. Without `features`, it must name a stored patient: the model's features "
                  "are then assembled from that patient's latest observations.",
    )
    features = serializers.DictField(
        child=serializers.JSONField(allow_null=True),
        allow_empty=False,
        required=False,
        help_text='Feature name -> number in the canonical unit, {"value": number, "unit": str}, or null if unknown.',
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "features" not in attrs and not attrs.get("patient_id", "").strip():
            raise serializers.ValidationError(
                {"features": ["Send the features, or the patient_id of a stored patient to assemble them from."]})
        return attrs


_INPUT_KEYS = frozenset(PredictionInputSerializer._declared_fields)


def _plain_identifier(value: Any, max_length: int) -> bool:
    """A string the serializer's CharField (trimmed, max_length, no NUL or surrogate) and validate_identifier accept
    unchanged: printable ASCII, no surrounding spaces. Anything else goes to the serializer."""
    return (type(value) is str and 0 < len(value) <= max_length and value.isascii() and value.isprintable()
            and value == value.strip())


def prediction_input_plain(data: Any) -> dict[str, Any] | None:
    """`PredictionInputSerializer(data=data).validated_data` for the everyday body (a use case, features, maybe a
    patient id: plain ASCII identifiers, a non-empty features object), without building and deep-copying the
    serializer's fields on every request (~450 Python calls of a prediction's ~3,700). None for any other body,
    which then goes through the serializer and gets its error messages. Feature values pass unchanged, as the
    serializer's JSONField child passes them (the strict parser already refused anything but JSON values);
    tests/apps/predictions/test_represent.py compares the two."""
    if type(data) is not dict or not data.keys() <= _INPUT_KEYS:
        return None
    use_case, features, patient_id = data.get("use_case"), data.get("features"), data.get("patient_id", "")
    if not _plain_identifier(use_case, 64) or type(features) is not dict or not features:
        return None
    if patient_id != "" and not _plain_identifier(patient_id, 128):
        return None
    return {"use_case": use_case, "patient_id": patient_id, "features": {str(k): v for k, v in features.items()}}


class ExplanationItemSerializer(serializers.Serializer):
    feature = serializers.CharField()
    label = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    unit = serializers.CharField()
    contribution = serializers.FloatField(help_text="Contribution to the log-odds of the outcome")


class PredictionSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_label")
    patient_id = serializers.CharField(source="patient_ref")
    explanation = ExplanationItemSerializer(many=True)
    imputed = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Prediction
        fields = [
            "id", "created_at", "use_case", "patient_id", "model_version", "model_sha256", "probability",
            "threshold", "risk_band", "positive", "explanation", "imputed", "audit_seq",
        ]
        read_only_fields = fields


_datetime = serializers.DateTimeField()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def prediction_represent(prediction: Prediction) -> dict[str, Any]:
    """`PredictionSerializer(prediction).data`, written out: the API returns it for every prediction, and DRF's
    ModelSerializer builds and deep-copies its fields on each instantiation and walks ~60 field objects per call,
    which cost more than the rest of the response. Same keys, order and values as the serializer (which still
    defines the OpenAPI schema): tests/apps/predictions/test_represent.py compares the two."""
    return {
        "id": str(prediction.id),
        "created_at": _datetime.to_representation(prediction.created_at),
        "use_case": _text(prediction.use_case),
        "patient_id": _text(prediction.patient_ref),
        "model_version": _text(prediction.model_label),
        "model_sha256": _text(prediction.model_sha256),
        "probability": _number(prediction.probability),
        "threshold": _number(prediction.threshold),
        "risk_band": _text(prediction.risk_band),
        "positive": None if prediction.positive is None else bool(prediction.positive),
        "explanation": [
            {
                "feature": _text(item["feature"]),
                "label": _text(item["label"]),
                "value": _number(item["value"]),
                "unit": _text(item["unit"]),
                "contribution": _number(item["contribution"]),
            }
            for item in prediction.explanation
        ],
        "imputed": [_text(name) for name in prediction.imputed],
        "audit_seq": None if prediction.audit_seq is None else int(prediction.audit_seq),
    }


def predictions_represent(predictions: Iterable[Prediction]) -> list[dict[str, Any]]:
    return [prediction_represent(prediction) for prediction in predictions]


class PredictionFilterSerializer(serializers.Serializer):
    use_case = serializers.CharField(required=False, validators=[validate_identifier])
    patient_id = serializers.CharField(required=False, validators=[validate_identifier])
    model_version = serializers.CharField(required=False, validators=[validate_identifier])
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
