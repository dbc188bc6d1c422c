from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("label", "use_case", "version", "model_type", "status", "test_auroc", "threshold", "registered_at")
    list_filter = ("use_case", "status", "model_type")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions are registered from `ml train` output, never typed in

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
