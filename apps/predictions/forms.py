"""The clinician's prediction form, built from the live model's use-case spec (fields in canonical units, with a
unit selector where the use case accepts more than one unit)."""

from typing import Any

from django import forms

from apps.core.units import unit_display
from ml.schema import FeatureSpec, UseCaseSpec


def _help_text(feature: FeatureSpec) -> str:
    shown = unit_display(feature.unit)
    unit = f" {shown}" if shown else ""
    parts = []
    if feature.min is not None and feature.max is not None:
        parts.append(f"Plausible range {feature.min:g}–{feature.max:g}{unit}.")
    parts.append("Leave empty if unknown." if feature.allow_missing else "Required.")
    return " ".join(parts)


def unit_field_name(feature_name: str) -> str:
    return f"{feature_name}__unit"


class PredictionForm(forms.Form):
    patient_id = forms.CharField(
        label="Patient identifier (optional)", required=False, max_length=128,
        help_text="The pseudonymous identifier used in your records; leave empty for an anonymous calculation.",
    )

    def __init__(self, *args: Any, spec: UseCaseSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        for feature in spec.features:
            accepted_shown = ", ".join(unit_display(unit) for unit in feature.accepted_units)
            self.fields[feature.name] = forms.FloatField(
                label=feature.label,
                required=False,
                help_text=_help_text(feature),
                widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
            )
            self.fields[feature.name].unit = feature.unit  # type: ignore[attr-defined]
            if len(feature.accepted_units) > 1:
                self.fields[unit_field_name(feature.name)] = forms.ChoiceField(
                    label=f"Unit of {feature.label.lower()}",
                    choices=[(unit, unit_display(unit)) for unit in feature.accepted_units],
                    initial=feature.unit,
                    help_text=f"Accepted units: {accepted_shown}",
                )

    def feature_rows(self) -> list[tuple[forms.BoundField, forms.BoundField | None]]:
        """(value field, unit field or None) per feature, for the template."""
        rows = []
        for feature in self.spec.features:
            unit_name = unit_field_name(feature.name)
            rows.append((self[feature.name], self[unit_name] if unit_name in self.fields else None))
        return rows

    def features_payload(self) -> dict[str, Any]:
        """The cleaned form as the prediction service's `features` mapping (null = unknown)."""
        payload: dict[str, Any] = {}
        for feature in self.spec.features:
            value = self.cleaned_data.get(feature.name)
            unit = self.cleaned_data.get(unit_field_name(feature.name)) or feature.unit
            payload[feature.name] = None if value is None else {"value": value, "unit": unit}
        return payload

    def add_service_errors(self, errors: dict[str, list[str]]) -> None:
        for field, messages in errors.items():
            for message in messages:
                self.add_error(field if field in self.fields else None, message)
