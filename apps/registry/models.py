"""Registered model versions: the artifacts that were validated, with their evidence, and which one is live."""

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        CHALLENGER = "challenger", "Challenger"
        CHAMPION = "champion", "Champion"
        ARCHIVED = "archived", "Archived"

    use_case = models.CharField(max_length=64, db_index=True)
    version = models.PositiveIntegerField()
    model_type = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    manifest = models.JSONField()
    storage_path = models.CharField(max_length=512, help_text="Folder under MODEL_STORAGE_DIR holding the artifacts")
    onnx_sha256 = models.CharField(max_length=64, db_index=True)
    joblib_sha256 = models.CharField(max_length=64)
    threshold = models.FloatField()
    test_auroc = models.FloatField(null=True)
    onnx_parity_max_abs_diff = models.FloatField()
    dataset_sha256 = models.CharField(max_length=64, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_model_version = models.CharField(max_length=32, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    status_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["use_case", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["use_case", "version"], name="registry_unique_version"),
            models.UniqueConstraint(
                fields=["use_case"], condition=Q(status="champion"), name="registry_one_champion_per_use_case"
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
