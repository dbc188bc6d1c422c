from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Prediction


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
