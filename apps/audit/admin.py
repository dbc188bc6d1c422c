from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import AuditBackup, AuditChainVerification, AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the ledger is append-only, and only the audit service writes it."""

    list_display = ("seq", "created_at", "action", "actor_type", "actor_id", "object_type", "model_version")
    list_filter = ("action", "actor_type")
    search_fields = ("actor_id", "object_id", "patient_ref", "model_version", "request_id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditChainVerification)
class AuditChainVerificationAdmin(_ReadOnlyAdmin):
    list_display = ("created_at", "ok", "event_count", "head_seq", "broken_seq", "trigger", "duration_seconds")
    list_filter = ("ok", "trigger")


@admin.register(AuditBackup)
class AuditBackupAdmin(_ReadOnlyAdmin):
    list_display = ("created_at", "first_seq", "last_seq", "event_count", "file_name", "key_id")
