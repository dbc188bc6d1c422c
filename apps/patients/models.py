"""Patients, their observations and observed outcomes, and the record of each ingestion run (CSV import, FHIR sync).

Every row that came from outside names where it came from (`source`) and its id there (`source_id`); the pair is
unique, so importing or syncing the same data again updates rows in place instead of adding copies. Written only
by `apps.patients.services`.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Patient(models.Model):
    class Sex(models.TextChoices):
        FEMALE = "female", "Female"
        MALE = "male", "Male"
        OTHER = "other", "Other"
        UNKNOWN = "unknown", "Unknown"

    # Pseudonymous: never a name or a hospital number. FHIR patients get a hash of (source, FHIR id).
    identifier = models.CharField(max_length=64, unique=True)
    sex = models.CharField(max_length=8, choices=Sex.choices, default=Sex.UNKNOWN)
    birth_date = models.DateField(null=True, blank=True)
    source = models.CharField(max_length=200, help_text="FHIR base URL, or csv:<name> for CSV imports")
    external_id = models.CharField(max_length=128, blank=True, help_text="The patient's id at the source")
    source_version = models.CharField(max_length=64, blank=True, help_text="FHIR meta.lastUpdated/versionId")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["identifier"]
        constraints = [
            models.UniqueConstraint(fields=["source", "external_id"], condition=~Q(external_id=""),
                                    name="patient_unique_source_external_id"),
        ]
        permissions = [("import_patients", "Can import patient data (CSV upload)")]

    def __str__(self) -> str:
        return self.identifier


class Observation(models.Model):
    """One measured value. `value`/`unit` are exactly as the source gave them; `value_canonical` is in the
    use-case spec's canonical unit (`unit_canonical`). Values that cannot be converted or are implausible are
    never stored: the ingestion run counts them per reason."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="observations")
    code_system = models.CharField(max_length=100, default="http://loinc.org")
    code = models.CharField(max_length=64, help_text="LOINC code (or a feature name for features without one)")
    value = models.FloatField(help_text="As given by the source")
    unit = models.CharField(max_length=32, blank=True, help_text="As given by the source (UCUM code)")
    value_canonical = models.FloatField()
    unit_canonical = models.CharField(max_length=32, blank=True)
    effective_at = models.DateTimeField()
    source = models.CharField(max_length=200)
    source_id = models.CharField(max_length=200, help_text="e.g. Observation/<id> or Observation/<id>#<component>")
    source_resource = models.CharField(max_length=200, db_index=True,
                                       help_text="The source record the value came from, e.g. Observation/<id>")
    source_version = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-effective_at"]
        constraints = [
            models.UniqueConstraint(fields=["source", "source_id"], name="observation_unique_source_id"),
        ]
        indexes = [models.Index(fields=["patient", "code", "-effective_at"], name="observation_latest_idx")]

    def __str__(self) -> str:
        return f"{self.code} at {self.effective_at:%Y-%m-%d}"


class Outcome(models.Model):
    """Whether the use case's condition is present for a patient, since when, and where that was recorded."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="outcomes")
    use_case = models.CharField(max_length=64)
    present = models.BooleanField()
    onset_at = models.DateTimeField(null=True, blank=True, help_text="Onset, else the recorded date, if known")
    code_system = models.CharField(max_length=100, blank=True)
    code = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=200)
    source_id = models.CharField(max_length=200)
    source_version = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["patient", "use_case"]
        constraints = [models.UniqueConstraint(fields=["source", "source_id"], name="outcome_unique_source_id")]
        indexes = [models.Index(fields=["use_case", "patient"], name="outcome_use_case_idx")]

    def __str__(self) -> str:
        return f"{self.use_case}: {'present' if self.present else 'absent'}"


# Recording an observed outcome (web form on a prediction, POST /api/v1/outcomes with a person's token) is its own
# right, held by the Clinicians role (migration 0005), not a side effect of being allowed to request predictions.
RECORD_OUTCOME_PERMISSION = "patients.add_outcome"


class IngestionRun(models.Model):
    """One CSV import or FHIR sync: when, what it did per resource type, and what it could not map and why.

    A FHIR sync's `watermark` (the server time at its start) is set only when the run succeeded; the next sync
    asks for resources with `_lastUpdated` at or after the last successful run's watermark."""

    class Kind(models.TextChoices):
        FHIR_SYNC = "fhir_sync", "FHIR sync"
        CSV_IMPORT = "csv_import", "CSV import"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    source = models.CharField(max_length=200)
    use_case = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    since = models.DateTimeField(null=True, blank=True, help_text="_lastUpdated lower bound used (FHIR)")
    watermark = models.DateTimeField(null=True, blank=True, help_text="Set only on success (FHIR)")
    counts = models.JSONField(default=dict, blank=True, help_text="Per resource type: fetched/created/updated/...")
    unmapped = models.JSONField(default=dict, blank=True, help_text="Per reason: count and examples")
    error = models.TextField(blank=True)
    file_name = models.CharField(max_length=255, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    report = models.JSONField(null=True, blank=True, help_text="CSV validation report")
    actor = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["kind", "source", "use_case", "status", "-started_at"],
                                name="ingestion_last_success_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.use_case} {self.started_at:%Y-%m-%d %H:%M} ({self.status})"

    @property
    def complete(self) -> bool:
        return self.status == self.Status.SUCCEEDED


class CareTeamMember(models.Model):
    """A person on a patient's care team. Clinicians see the predictions they requested and those of the patients
    whose care team holds them; any other prediction opens only through break-the-glass (a stated reason, audited).
    Managed in admin; every change goes through `apps.patients.services` and is audited."""

    class Role(models.TextChoices):
        ATTENDING = "attending", "Attending physician"
        PRIMARY_CARE = "primary_care", "Primary care physician"
        CONSULTANT = "consultant", "Consultant"
        NURSE = "nurse", "Nurse"
        OTHER = "other", "Other"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="care_team")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="care_team_memberships")
    role = models.CharField(max_length=32, choices=Role.choices, default=Role.ATTENDING)
    since = models.DateField(help_text="Since when this person cares for the patient")
    added_by = models.CharField(max_length=200, help_text="Who added the member (user:<name> or system:<name>)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["patient", "user"]
        constraints = [models.UniqueConstraint(fields=["patient", "user"], name="care_team_unique_member")]
        permissions = [
            ("view_all_predictions", "Can open every prediction without break-the-glass (auditors, model admins)"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()}) for {self.patient}"
