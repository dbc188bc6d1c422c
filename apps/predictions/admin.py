from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import CdsClient, Prediction


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "use_case", "model_label", "risk_band", "probability", "actor", "channel")
    list_filter = ("use_case", "risk_band", "channel")
    readonly_fields = [f.name for f in Prediction._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CdsClient)
class CdsClientAdmin(admin.ModelAdmin):
    """EHRs allowed to call the CDS Hooks services, with the public keys their JWTs are signed with."""

    list_display = ("name", "issuer", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "issuer")
