from typing import Any

from rest_framework import serializers

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
    use_case = serializers.CharField(max_length=64)
    patient_id = serializers.CharField(
        max_length=128, required=False, allow_blank=True, default="",
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


class PredictionFilterSerializer(serializers.Serializer):
    use_case = serializers.CharField(required=False)
    patient_id = serializers.CharField(required=False)
    model_version = serializers.CharField(required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
