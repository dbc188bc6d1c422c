from typing import Any

from rest_framework import serializers

from apps.core.validators import validate_identifier

from .models import Observation, Outcome, Patient


class PatientSerializer(serializers.ModelSerializer):
    class Meta:
        model = Patient
        fields = ["identifier", "sex", "birth_date", "source", "external_id", "updated_at"]
        read_only_fields = fields


class ObservationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Observation
        fields = ["code_system", "code", "value", "unit", "value_canonical", "unit_canonical", "effective_at",
                  "source", "source_id"]
        read_only_fields = fields


class OutcomeSerializer(serializers.ModelSerializer):
    patient_id = serializers.CharField(source="patient.identifier")

    class Meta:
        model = Outcome
        fields = ["id", "patient_id", "use_case", "present", "onset_at", "source", "source_id", "created_at"]
        read_only_fields = fields


class OutcomeInputSerializer(serializers.Serializer):
    patient_id = serializers.CharField(max_length=64, help_text="The stored patient's identifier",
                                       validators=[validate_identifier])
    use_case = serializers.CharField(max_length=64, validators=[validate_identifier])
    present = serializers.BooleanField(help_text="Whether the condition turned out present")
    onset_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    source_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="",
                                      validators=[validate_identifier],
                                      help_text="Your own id for this record: resending it updates, never duplicates")
    prediction_id = serializers.UUIDField(required=False, allow_null=True, default=None)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({k: [f"Unknown field. Accepted: {', '.join(self.fields)}."]
                                                   for k in unknown})
        return super().to_internal_value(data)


class ObservationFilterSerializer(serializers.Serializer):
    code = serializers.CharField(required=False, max_length=64, validators=[validate_identifier])
    since = serializers.DateTimeField(required=False)


class PatientFilterSerializer(serializers.Serializer):
    identifier = serializers.CharField(required=False, max_length=64, help_text="Identifier prefix",
                                       validators=[validate_identifier])


class OutcomeFilterSerializer(serializers.Serializer):
    patient_id = serializers.CharField(required=False, max_length=64, validators=[validate_identifier])
    use_case = serializers.CharField(required=False, max_length=64, validators=[validate_identifier])
