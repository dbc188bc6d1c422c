"""What monitoring stores: drift checks (per feature), realised-performance snapshots, daily summaries per model
version (the rows logged to MLflow), retraining runs, and daily scoring runs with their chunks. Written only by
`apps.monitoring.services`."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.registry.models import ModelVersion


class Trigger(models.TextChoices):
    """Who or what started a check or a run."""

    COMMAND = "command", "Management command"
    SCHEDULE = "schedule", "Beat schedule"
    ADMIN = "admin", "Admin button"
    DRIFT = "drift", "Drift alert"
    PERFORMANCE = "performance", "Degraded realised performance"
    TEST = "test", "Test or shell"


class DriftCheck(models.Model):
    """The champion's inputs and predicted risks over a time window against the reference profile of its manifest."""

    class Status(models.TextChoices):
        OK = "ok", "No drift"
        DRIFT = "drift", "Drift"
        INSUFFICIENT = "insufficient_data", "Too little data"
        NO_REFERENCE = "no_reference", "No reference profile"

    use_case = models.CharField(max_length=64, db_index=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="drift_checks")
    model_label = models.CharField(max_length=80)
    created_at = models.DateTimeField(db_index=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(max_length=24, choices=Status.choices)
    message = models.TextField(blank=True)
    n_predictions = models.PositiveIntegerField()
    psi_alert = models.FloatField(help_text="PSI limit in force when the check ran")
    missing_alert = models.FloatField(help_text="Missing-rate change limit in force when the check ran")
    min_samples = models.PositiveIntegerField()
    alert_features = models.JSONField(default=list, help_text="Features whose PSI or missing rate alerted")
    prediction_psi = models.FloatField(null=True, blank=True)
    prediction_alert = models.BooleanField(default=False)
    prediction_edges = models.JSONField(default=list)
    prediction_reference = models.JSONField(default=list, help_text="Reference fraction per risk bin")
    prediction_current = models.JSONField(default=list, help_text="Fraction of the window's predictions per bin")
    prediction_mean = models.FloatField(null=True, blank=True)
    prediction_reference_mean = models.FloatField(null=True, blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    audit_seq = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["use_case", "-created_at"], name="monitoring_drift_latest_idx")]

    def __str__(self) -> str:
        return f"{self.model_label} drift check {self.created_at:%Y-%m-%d %H:%M} ({self.status})"

    @property
    def max_psi(self) -> float | None:
        values = [f.psi for f in self.features.all() if f.psi is not None]
        return max(values) if values else None


class FeatureDrift(models.Model):
    """One feature of a drift check: its PSI over present values (bins of the reference profile) and missing rate."""

    drift_check = models.ForeignKey(DriftCheck, on_delete=models.CASCADE, related_name="features")
    position = models.PositiveSmallIntegerField(help_text="Order of the feature in the spec")
    feature = models.CharField(max_length=64)
    psi = models.FloatField(null=True, blank=True, help_text="Empty when too few values were present")
    alert = models.BooleanField(default=False)
    n_present = models.PositiveIntegerField()
    missing_rate = models.FloatField(null=True, blank=True)
    reference_missing_rate = models.FloatField(null=True, blank=True)
    missing_alert = models.BooleanField(default=False)
    edges = models.JSONField(default=list)
    reference = models.JSONField(default=list, help_text="Reference fraction per bin (present values)")
    current = models.JSONField(default=list, help_text="The window's fraction per bin (present values)")
    mean = models.FloatField(null=True, blank=True)
    reference_mean = models.FloatField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["drift_check", "position"]
        constraints = [
            models.UniqueConstraint(fields=["drift_check", "feature"], name="monitoring_one_row_per_feature"),
        ]

    def __str__(self) -> str:
        return f"{self.feature}: PSI {self.psi}"


class PerformanceSnapshot(models.Model):
    """Realised performance of one model version: its predictions in a window paired with recorded outcomes."""

    class Status(models.TextChoices):
        OK = "ok", "Reported"
        DEGRADED = "degraded", "Below the limits"
        INSUFFICIENT = "insufficient_data", "Too few outcomes"

    use_case = models.CharField(max_length=64, db_index=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="performance_snapshots")
    model_label = models.CharField(max_length=80)
    created_at = models.DateTimeField(db_index=True)
    window_start = models.DateTimeField(help_text="Predictions made from (inclusive)")
    window_end = models.DateTimeField(help_text="Predictions made until (exclusive)")
    match_window_days = models.PositiveIntegerField()
    status = models.CharField(max_length=24, choices=Status.choices)
    message = models.TextField(blank=True)
    n = models.PositiveIntegerField(help_text="Predictions paired with an outcome")
    events = models.PositiveIntegerField(help_text="Of which the condition was present")
    auroc = models.FloatField(null=True, blank=True)
    calibration_slope = models.FloatField(null=True, blank=True)
    calibration_intercept = models.FloatField(null=True, blank=True)
    brier = models.FloatField(null=True, blank=True)
    mean_predicted = models.FloatField(null=True, blank=True)
    observed_rate = models.FloatField(null=True, blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    audit_seq = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model_version", "-created_at"], name="monitoring_perf_latest_idx")]

    def __str__(self) -> str:
        return f"{self.model_label} realised performance {self.created_at:%Y-%m-%d} (n={self.n})"


class DailySummary(models.Model):
    """One model version's day: volume, mean risk, positive rate, drift and realised performance as of that day;
    the figures logged to the model's MLflow experiment."""

    class MlflowStatus(models.TextChoices):
        PENDING = "", "Not logged yet"
        OK = "ok", "Logged"
        FAILED = "failed", "Failed (retried on the next run)"

    day = models.DateField()
    use_case = models.CharField(max_length=64, db_index=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="daily_summaries")
    model_label = models.CharField(max_length=80)
    volume = models.PositiveIntegerField()
    mean_risk = models.FloatField(null=True, blank=True)
    positive_rate = models.FloatField(null=True, blank=True)
    drift_check = models.ForeignKey(DriftCheck, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    metrics = models.JSONField(default=dict, help_text="Every figure logged to MLflow, by metric name")
    mlflow_status = models.CharField(max_length=8, choices=MlflowStatus.choices, blank=True, default="")
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_detail = models.CharField(max_length=500, blank=True)
    mlflow_logged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-day", "use_case", "model_label"]
        constraints = [models.UniqueConstraint(fields=["model_version", "day"], name="monitoring_one_summary_per_day")]

    def __str__(self) -> str:
        return f"{self.model_label} {self.day}: {self.volume} predictions"


class RetrainingRun(models.Model):
    """One request to retrain a use case and what became of it. It ends with a registered *candidate* (never a
    promotion) or a failure with its reason (and the data validation report when the data were unusable)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Candidate registered"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    use_case = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    reason = models.TextField(blank=True)
    request_key = models.CharField(max_length=200, blank=True,
                                   help_text="Names the request: the same key never trains twice")
    requested_by = models.CharField(max_length=200, help_text="user:<name> or system:<name>")
    requested_by_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                          related_name="+")
    drift_check = models.ForeignKey(DriftCheck, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    performance = models.ForeignKey(PerformanceSnapshot, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    created_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    seed = models.PositiveIntegerField()
    config = models.CharField(max_length=32, help_text="Training configuration (default or fast)")
    data_source = models.CharField(max_length=500, blank=True)
    dataset_sha256 = models.CharField(max_length=64, blank=True)
    validation_report = models.JSONField(null=True, blank=True)
    candidate = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    candidate_created = models.BooleanField(default=False, help_text="False: an identical version existed already")
    error = models.TextField(blank=True)
    audit_seq = models.BigIntegerField(null=True, blank=True, help_text="The request's audit event")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["use_case"], condition=Q(status__in=["queued", "running"]),
                                    name="monitoring_one_active_retraining_per_use_case"),
            models.UniqueConstraint(fields=["request_key"], condition=~Q(request_key=""),
                                    name="monitoring_unique_retraining_request_key"),
        ]
        permissions = [("request_retraining", "Can request the retraining of a use case")]

    def __str__(self) -> str:
        return f"retraining {self.use_case} {self.created_at:%Y-%m-%d %H:%M} ({self.status})"


class ScoringRun(models.Model):
    """Daily scoring of one use case: the patients with new observations, split into chunks for the workers."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    use_case = models.CharField(max_length=64)
    day = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.CharField(max_length=200)
    model_label = models.CharField(max_length=80, help_text="The champion when the run was planned")
    chunk_size = models.PositiveIntegerField()
    patients = models.PositiveIntegerField()
    chunks = models.PositiveIntegerField()
    predicted = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    skipped_reasons = models.JSONField(default=dict, help_text="Why patients could not be scored: reason -> count")
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    audit_seq = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["use_case", "day"], name="monitoring_one_scoring_run_per_day")]

    def __str__(self) -> str:
        return f"scoring {self.use_case} {self.day} ({self.status})"


class ScoringChunk(models.Model):
    """Up to chunk_size patients, scored by one task in one transaction: done once, whatever the redeliveries."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"

    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="chunk_rows")
    index = models.PositiveIntegerField()
    patient_ids = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    predicted = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    skipped_reasons = models.JSONField(default=dict)
    attempts = models.PositiveSmallIntegerField(default=0)
    processed_by = models.CharField(max_length=200, blank=True, help_text="host:pid of the process that scored it")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="monitoring_unique_chunk_index")]

    def __str__(self) -> str:
        return f"{self.run} chunk {self.index} ({self.status})"
