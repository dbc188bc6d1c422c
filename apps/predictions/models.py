"""One row per individual prediction: what was asked, which model file answered, what it said, and why."""

import uuid

from django.conf import settings
from django.db import models

from apps.registry.models import ModelVersion


class Prediction(models.Model):
    class RiskBand(models.TextChoices):
        LOW = "low", "Low"
        MODERATE = "moderate", "Moderate"
        HIGH = "high", "High"

    class Channel(models.TextChoices):
        WEB = "web", "Web form"
        API = "api", "API"
        SYSTEM = "system", "System"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(db_index=True)
    use_case = models.CharField(max_length=64, db_index=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    model_label = models.CharField(max_length=80)
    model_sha256 = models.CharField(max_length=64)
    patient_ref = models.CharField(max_length=128, blank=True, db_index=True)
    inputs = models.JSONField(help_text="The features exactly as the caller sent them")
    features = models.JSONField(help_text="Canonical-unit values the model saw (null = missing)")
    probability = models.FloatField()
    threshold = models.FloatField()
    risk_band = models.CharField(max_length=16, choices=RiskBand.choices)
    positive = models.BooleanField()
    explanation = models.JSONField()
    imputed = models.JSONField(default=list)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor = models.CharField(max_length=200, help_text="user:<name>, client:<client id> or system:<name>")
    request_id = models.CharField(max_length=64, blank=True)
    audit_seq = models.BigIntegerField(unique=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["use_case", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.model_label} p={self.probability:.3f} ({self.id})"
