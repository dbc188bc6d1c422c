"""The audit ledger: one append-only, hash-chained row per audited action.

Rows are written only by `apps.audit.services.audit_event_record`. Each row's hash covers a canonical
serialisation of its content and the previous row's hash, so altering, removing or reordering a row breaks the
chain from that point on (see `apps.audit.selectors.audit_chain_verify`).
"""

from typing import Any, ClassVar

from django.db import models


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise PermissionError("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit events are append-only")


class AuditEvent(models.Model):
    class ActorType(models.TextChoices):
        USER = "user", "User"
        CLIENT = "client", "OAuth2 client"
        SYSTEM = "system", "System"
        ANONYMOUS = "anonymous", "Anonymous"

    seq = models.BigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(editable=False, db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=150, blank=True, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    patient_ref = models.CharField(max_length=128, blank=True, db_index=True)
    model_version = models.CharField(max_length=64, blank=True, db_index=True)
    model_sha256 = models.CharField(max_length=64, blank=True)
    inputs = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)

    # Append-only in the database too: the application role gets SELECT and INSERT only (apps/core/db_roles.py).
    append_only: ClassVar[bool] = True

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]
        permissions = [("export_auditevent", "Can export the audit log")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_type}:{self.actor_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit events are append-only")


class AuditChainVerification(models.Model):
    """One run of the chain verifier. The latest row is what /metrics reports, whichever process ran it, and its
    head is the anchor the next run checks (so deleting the newest events is noticed too)."""

    class Trigger(models.TextChoices):
        COMMAND = "command", "Management command"
        TASK = "task", "Periodic task"

    created_at = models.DateTimeField(db_index=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    ok = models.BooleanField()
    event_count = models.BigIntegerField()
    head_seq = models.BigIntegerField(null=True, blank=True)
    head_hash = models.CharField(max_length=64)
    broken_seq = models.BigIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    duration_seconds = models.FloatField()

    # Rows are only ever added (the newest is the anchor): SELECT and INSERT for the application role.
    append_only: ClassVar[bool] = True

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'BROKEN'} {self.event_count} events at {self.created_at:%Y-%m-%d %H:%M}"


class AuditBackup(models.Model):
    """An encrypted backup file holding events first_seq..last_seq (inclusive)."""

    created_at = models.DateTimeField()
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField(db_index=True)
    event_count = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    head_hash = models.CharField(max_length=64)
    file_name = models.CharField(max_length=255)
    file_sha256 = models.CharField(max_length=64)
    key_id = models.CharField(max_length=32)

    append_only: ClassVar[bool] = True  # SELECT and INSERT for the application role (apps/core/db_roles.py)

    class Meta:
        ordering = ["-last_seq"]

    def __str__(self) -> str:
        return f"{self.file_name} (#{self.first_seq}..#{self.last_seq})"
