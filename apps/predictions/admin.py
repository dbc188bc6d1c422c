
from django.contrib import admin

from apps.core.admin import ReadOnlyModelAdmin

from .models import CdsClient, Prediction


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "created_at", "use_case", "model_label", "risk_band", "probability", "actor", "channel")
    list_filter = ("use_case", "risk_band", "channel")
    readonly_fields = [f.name for f in Prediction._meta.fields]



@admin.register(CdsClient)
class CdsClientAdmin(admin.ModelAdmin):
    """EHRs allowed to call the CDS Hooks services, with the public keys their JWTs are signed with."""

    list_display = ("name", "issuer", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "issuer")
