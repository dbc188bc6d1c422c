
from django.contrib import admin

from apps.core.admin import ReadOnlyModelAdmin

from .models import AuditBackup, AuditChainVerification, AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    """Read-only: the ledger is append-only, and only the audit service writes it."""

    list_display = ("seq", "created_at", "action", "actor_type", "actor_id", "object_type", "model_version")
    list_filter = ("action", "actor_type")
    search_fields = ("actor_id", "object_id", "patient_ref", "model_version", "request_id")
    date_hierarchy = "created_at"





@admin.register(AuditChainVerification)
class AuditChainVerificationAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "ok", "event_count", "head_seq", "broken_seq", "trigger", "duration_seconds")
    list_filter = ("ok", "trigger")


@admin.register(AuditBackup)
class AuditBackupAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "first_seq", "last_seq", "event_count", "file_name", "key_id")
