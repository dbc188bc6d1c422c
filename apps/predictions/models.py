"""One row per individual prediction: what was asked, which model file answered, what it said, and why."""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
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
        CDS = "cds", "CDS Hooks"
        SYSTEM = "system", "System"

    # PostgreSQL: the audit append that inserts predictions with their events by a static statement (migration
    # 0005), used by apps/audit/services.py instead of the generic function's per-call dynamic INSERT.
    AUDITED_APPEND_FUNCTION = "predictions_prediction_append"

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
    basis = models.JSONField(default=list, blank=True, help_text="FHIR references of the inputs, when from FHIR")
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


class IdempotencyRecord(models.Model):
    """The first answer to a POST carrying an Idempotency-Key, so a retry gets the same predictions back."""

    actor = models.CharField(max_length=200)
    key = models.CharField(max_length=255)
    request_sha256 = models.CharField(max_length=64)
    many = models.BooleanField()
    prediction_ids = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["actor", "key"], name="predictions_unique_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.actor} {self.key}"


class CdsClient(models.Model):
    """An EHR (CDS Hooks client) allowed to call our CDS services, with the public keys its JWTs are signed with and
    the FHIR servers we may read from on its behalf. Registered by staff in admin; calls whose JWT does not verify
    against these keys get 401, and a `fhirServer` outside `fhir_base_urls` gets 412 without any connection."""

    name = models.CharField(max_length=200)
    issuer = models.CharField(max_length=512, unique=True, help_text="The `iss` claim of the client's JWTs")
    jwks = models.JSONField(help_text='Public JSON Web Key Set of the client: {"keys": [...]} (ES384 or RS384)')
    fhir_base_urls = models.JSONField(
        default=list, blank=True,
        help_text="FHIR base URLs this EHR may name as `fhirServer` in a call, one per line (e.g. "
                  "https://ehr.example.org/fhir/r4). A call's fhirServer must have the same scheme, host and port and "
                  "a path equal to or below one of these; anything else is refused (412) before any connection, and "
                  "the EHR's access token is only ever sent there. http/https only; no user:password@, query, "
                  "'..' segments or percent-encoding. Empty: calls must carry a prefetch.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.issuer})"

    def clean(self) -> None:
        from .fhir_base_urls import FhirBaseUrlError, fhir_base_urls_normalise

        try:
            self.fhir_base_urls = fhir_base_urls_normalise(self.fhir_base_urls)
        except FhirBaseUrlError as exc:
            raise ValidationError({"fhir_base_urls": [str(exc)]}) from exc
