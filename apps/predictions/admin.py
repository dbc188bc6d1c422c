
from typing import Any

from django import forms
from django.contrib import admin

from apps.core.admin import ReadOnlyModelAdmin

from .models import CdsClient, Prediction


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "created_at", "use_case", "model_label", "risk_band", "probability", "actor", "channel")
    list_filter = ("use_case", "risk_band", "channel")
    readonly_fields = [f.name for f in Prediction._meta.fields]



class UrlLinesField(forms.CharField):
    """A list of URLs edited as one per line; validation and normalisation are the model's (`CdsClient.clean`)."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 80, "spellcheck": "false"})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]


class CdsClientForm(forms.ModelForm):
    fhir_base_urls = UrlLinesField(required=False, label="FHIR base URLs",
                                   help_text=CdsClient._meta.get_field("fhir_base_urls").help_text)

    class Meta:
        model = CdsClient
        fields = ("name", "issuer", "jwks", "fhir_base_urls", "active")


@admin.register(CdsClient)
class CdsClientAdmin(admin.ModelAdmin):
    """EHRs allowed to call the CDS Hooks services, with the public keys their JWTs are signed with and the FHIR
    servers a call may ask us to read from."""

    form = CdsClientForm
    list_display = ("name", "issuer", "fhir_servers", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "issuer")

    @admin.display(description="FHIR base URLs")
    def fhir_servers(self, obj: CdsClient) -> str:
        return ", ".join(obj.fhir_base_urls) or "none (prefetch only)"
