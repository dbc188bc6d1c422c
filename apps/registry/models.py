"""Registered model versions: the artifacts that were validated, with their evidence, which one is live, which one
runs in the shadow, and the full history of who changed what status when."""

import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        CHALLENGER = "challenger", "Challenger"
        CHAMPION = "champion", "Champion"
        ARCHIVED = "archived", "Archived"

    class MlflowSync(models.TextChoices):
        NEVER = "", "Not attempted"
        OK = "ok", "Alias set"
        SKIPPED = "skipped", "Skipped (no MLflow version)"
        FAILED = "failed", "Failed"

    use_case = models.CharField(max_length=64, db_index=True)
    version = models.PositiveIntegerField()
    model_type = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    manifest = models.JSONField()
    storage_path = models.CharField(max_length=512, help_text="Folder under MODEL_STORAGE_DIR holding the artifacts")
    artifacts = models.JSONField(
        default=dict, help_text="Every registered file (ONNX, joblib, model card, plots, ...) -> {sha256, bytes}"
    )
    onnx_sha256 = models.CharField(max_length=64, db_index=True)
    joblib_sha256 = models.CharField(max_length=64)
    threshold = models.FloatField()
    test_auroc = models.FloatField(null=True)
    test_auroc_ci_low = models.FloatField(null=True, blank=True)
    test_auroc_ci_high = models.FloatField(null=True, blank=True)
    calibration_slope = models.FloatField(null=True, blank=True)
    onnx_parity_max_abs_diff = models.FloatField()
    dataset_sha256 = models.CharField(max_length=64, blank=True)
    split_sha256 = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=1000, blank=True, help_text="Folder or MLflow run it was registered from")
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_model_name = models.CharField(max_length=200, blank=True)
    mlflow_model_version = models.CharField(max_length=32, blank=True)
    mlflow_sync_status = models.CharField(max_length=16, choices=MlflowSync.choices, blank=True, default="")
    mlflow_sync_detail = models.CharField(max_length=500, blank=True)
    mlflow_synced_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    registered_by_actor = models.CharField(max_length=200, blank=True, help_text="user:<name> or system:<name>")
    status_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["use_case", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["use_case", "version"], name="registry_unique_version"),
            models.UniqueConstraint(
                fields=["use_case"], condition=Q(status="champion"), name="registry_one_champion_per_use_case"
            ),
            models.UniqueConstraint(
                fields=["use_case"], condition=Q(status="challenger"), name="registry_one_challenger_per_use_case"
            ),
        ]
        permissions = [("promote_modelversion", "Can promote a model version to champion")]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return f"{self.use_case}@{self.version}"

    @property
    def spec_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.manifest["spec"]
        return spec

    @property
    def test_metrics(self) -> dict[str, Any]:
        test: dict[str, Any] = self.manifest.get("metrics", {}).get("test", {}) or {}
        return test


class StatusChangeQuerySet(models.QuerySet["ModelVersionStatusChange"]):
    def update(self, **kwargs: Any) -> int:
        raise PermissionError("model status history is append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("model status history is append-only")


class ModelVersionStatusChange(models.Model):
    """One row per status transition of a version. Append-only: "which version was champion at time T" is answered
    from these rows (apps.registry.selectors.model_version_champion_at), never from the current status."""

    class Kind(models.TextChoices):
        REGISTER = "register", "Registered"
        PROMOTE = "promote", "Promoted to champion"
        ROLLBACK = "rollback", "Rolled back to"
        REPLACED = "replaced", "Replaced as champion"
        CHALLENGER = "challenger", "Set as challenger"
        STATUS = "status", "Status changed"
        BACKFILL = "backfill", "Recorded before history existed"

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="status_changes")
    use_case = models.CharField(max_length=64, db_index=True)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, choices=ModelVersion.Status.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    reason = models.TextField(blank=True)
    actor = models.CharField(max_length=200, help_text="user:<name>, client:<id> or system:<name>")
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    changed_at = models.DateTimeField(db_index=True)
    audit_seq = models.BigIntegerField(null=True, blank=True, help_text="The audit event that records this change")

    # Append-only in the database too: the application role gets SELECT and INSERT only (apps/core/db_roles.py).
    append_only: ClassVar[bool] = True

    objects = StatusChangeQuerySet.as_manager()

    class Meta:
        ordering = ["changed_at", "id"]
        indexes = [models.Index(fields=["use_case", "changed_at"])]

    def __str__(self) -> str:
        return f"{self.version} {self.from_status or '-'} -> {self.to_status} at {self.changed_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("model status history is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("model status history is append-only")


class ShadowPrediction(models.Model):
    """What the challenger would have answered for a served prediction. Stored and audited, never shown to
    clinicians or API clients; only the admin's agreement figures read it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(db_index=True)
    # A string reference: predictions depends on registry, and registry must not import predictions.
    prediction = models.ForeignKey("predictions.Prediction", on_delete=models.PROTECT,
                                   related_name="shadow_predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="shadow_predictions")
    model_label = models.CharField(max_length=80)
    model_sha256 = models.CharField(max_length=64)
    probability = models.FloatField()
    threshold = models.FloatField()
    risk_band = models.CharField(max_length=16)
    positive = models.BooleanField()
    audit_seq = models.BigIntegerField(unique=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["prediction", "model_version"], name="registry_one_shadow_per_version"),
        ]

    def __str__(self) -> str:
        return f"shadow {self.model_label} p={self.probability:.3f} for {self.prediction_id}"
